"""The board's graph, discoveries, agents and analytics pages on a phone, and the graph in the dark theme.

At 390 pixels wide none of these pages scrolls sideways: tables keep inside
their box (or turn into cards), the drawing fits the width, charts scale. The
graph takes its colours from the stylesheet's custom properties, so when the
system switches to dark the drawing's colours change with the page's, in place.
"""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from board.services import agent_create, task_claim, task_create, task_start, ticket_create
from discoveries.services import discovery_branch, discovery_record, discovery_resolve

from .history_samples import history

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process"),
]

PHONE = {"width": 390, "height": 844}
LONG = "Unbreakable" + "x" * 60
PAGES = ["graph", "ticket-graph", "discoveries", "agents", "analytics"]


@pytest.fixture
def busy_board(board, alice):
    """A board with what makes pages wide: long words, branches, open and closed discoveries, agents, history."""
    now = timezone.now()
    for n in range(1, 5):
        history(
            board,
            f"Finished ticket {n}",
            ("PHASE_BACKLOG", now - timedelta(days=n + 6)),
            ("PHASE_IMPLEMENTATION", now - timedelta(days=n + 2)),
            ("PHASE_DONE", now - timedelta(days=n)),
        )
    ticket = ticket_create(board=board, title=f"Single sign-on {LONG}", actor=alice, phase="PHASE_IMPLEMENTATION")
    spec = task_create(ticket=ticket, title=f"Write the spec {LONG}", actor=alice, phase="PHASE_REQUIREMENTS")
    task_create(ticket=ticket, title="Write the code", actor=alice, dependencies=[spec])
    agent, _ = agent_create(
        name=f"builder-{LONG}",
        boards=[board],
        actor=alice,
        capabilities=["python", "django", "postgresql", LONG[:60]],
        agent_type="claude-code",
    )
    agent_create(name="reviewer", boards=[board], actor=alice)
    claimed = task_claim(agent=agent, board=board)
    task_start(task=claimed, agent=agent)
    discovery_branch(
        source_task=claimed,
        discovery_type="bug",
        description=f"Tokens are never rotated {LONG}; a leaked one works forever.",
        actor=agent,
        phase="PHASE_TESTING",
        priority_boost=True,
        title=f"Rotate tokens {LONG}",
    )
    closed = discovery_record(
        source_task=claimed, discovery_type="optimization", description="One query would do.", actor=agent
    )
    discovery_resolve(discovery=closed, status="resolved", reason=f"Done in the same change {LONG}.", actor=alice)
    return {"board": board, "ticket": ticket, "alice": alice}


def path_of(name, seed):
    slug = seed["board"].slug
    if name == "ticket-graph":
        return reverse("discoveries:ticket-graph", args=[slug, seed["ticket"].pk])
    url_name = {
        "graph": "discoveries:board-graph",
        "discoveries": "discoveries:list",
        "agents": "board:agents",
        "analytics": "discoveries:analytics",
    }[name]
    return reverse(url_name, args=[slug])


@pytest.fixture
def open_page(open_as):
    """Open a page as `user` at `viewport`, settled: its live status reads Live, a graph is drawn."""

    def open_at(user, path, *, viewport, color_scheme="light"):
        page = open_as(user, path, viewport=viewport, color_scheme=color_scheme)
        if page.locator("#live-status").count():
            expect(page.locator("#live-status")).to_have_text("Live")
        if page.locator("#graph-canvas").count():
            page.wait_for_function("window.OmoiGraph && OmoiGraph.metrics.firstRender !== null")
        return page

    return open_at


def sideways(page):
    return page.evaluate(
        """() => ({
            page: document.documentElement.scrollWidth,
            wide: Array.from(document.querySelectorAll('body *'))
                .filter((element) => element.getBoundingClientRect().right > window.innerWidth + 1)
                .filter((element) => !element.closest('.table-wrap, .board-tabs, .visually-hidden'))
                .slice(0, 5)
                .map((element) => element.tagName + '.' + element.className),
        })"""
    )


@pytest.mark.parametrize("name", PAGES)
def test_the_page_does_not_scroll_sideways_on_a_phone(open_page, busy_board, name):
    page = open_page(busy_board["alice"], path_of(name, busy_board), viewport=PHONE)

    found = sideways(page)
    assert found["page"] <= PHONE["width"], found
    if name.endswith("graph"):
        box = page.locator("#graph-canvas").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    if name == "analytics":
        for chart in page.locator("svg.chart").all():
            box = chart.bounding_box()
            assert box["width"] > 250 and box["x"] + box["width"] <= PHONE["width"]


def test_a_wide_table_scrolls_inside_its_box_not_the_page(open_page, busy_board):
    page = open_page(busy_board["alice"], path_of("analytics", busy_board), viewport=PHONE)
    page.locator("summary", has_text="Tickets in each column at the end of each day").click()
    wrap = page.locator("#cfd-table").locator("xpath=ancestor::div[contains(@class, 'table-wrap')][1]")
    sizes = wrap.evaluate("element => ({inner: element.scrollWidth, outer: element.clientWidth})")
    assert sizes["inner"] > sizes["outer"]  # seven columns do not fit a phone: the box scrolls
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def colours(page):
    """Each drawn task's fill, border and label colour, and the canvas's ground, as the browser draws them."""
    return page.evaluate(
        """() => ({
            nodes: OmoiGraph.cy.nodes('node.task').map((node) => [
                node.id(), node.style('background-color'), node.style('border-color'), node.style('color'),
            ]),
            ground: getComputedStyle(document.getElementById('graph-canvas')).backgroundColor,
        })"""
    )


def brightness(rgb):
    red, green, blue = (int(part) for part in rgb.removeprefix("rgb(").removesuffix(")").split(","))
    return (red * 299 + green * 587 + blue * 114) / 1000


def test_the_graph_follows_the_system_into_the_dark_theme_in_place(open_page, busy_board):
    page = open_page(busy_board["alice"], path_of("graph", busy_board), viewport={"width": 1400, "height": 900})
    light = colours(page)
    assert len(light["nodes"]) >= 3
    page.evaluate("window.sameDocument = true")

    page.emulate_media(color_scheme="dark")
    page.wait_for_function(
        "([id, fill]) => OmoiGraph.cy.getElementById(id).style('background-color') !== fill",
        arg=[light["nodes"][0][0], light["nodes"][0][1]],
    )
    dark = colours(page)

    assert page.evaluate("window.sameDocument")  # no reload: the drawing changed in place
    for (node, *before), (same, *after) in zip(light["nodes"], dark["nodes"], strict=True):
        assert node == same
        fill, border, text = before
        dark_fill, dark_border, dark_text = after
        assert dark_fill != fill and dark_border != border
        # Dark fills under light text, where the light theme had light fills under dark text.
        assert brightness(dark_fill) < brightness(fill)
        assert brightness(dark_text) > brightness(dark_fill) + 100
        assert brightness(text) < brightness(fill) - 100
    assert brightness(dark["ground"]) < brightness(light["ground"])
    # Status keeps its shape and words whatever the colours.
    labels = page.evaluate("OmoiGraph.cy.nodes('node.task').map((node) => node.data('label'))")
    assert any("▶ Running" in label for label in labels)

    page.emulate_media(color_scheme="light")
    page.wait_for_function(
        "([id, fill]) => OmoiGraph.cy.getElementById(id).style('background-color') === fill",
        arg=[light["nodes"][0][0], light["nodes"][0][1]],
    )
