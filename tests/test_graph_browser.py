"""The workflow graph in a real browser: live branches and status changes, the user's view kept, filters, text.

Chromium talks to a Daphne process serving the test database. An agent's
branch goes through the real API over HTTP to that server, which broadcasts
it; changes made in the test process reach the page through the server's
poll of the event log, as another process's would.
"""

import json
import urllib.request

import pytest
from playwright.sync_api import expect

from board.models import Task
from board.services import task_claim, task_complete, task_create, ticket_create
from discoveries.services import discovery_branch, discovery_resolve

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process"),
]

# The server polls its log every second; a broadcast is faster.
LIVE_TIMEOUT = 3_000
MARKUP = '<img src=x onerror="window.injected=1"><b>bold</b><script>window.injected=2</script>'


@pytest.fixture
def open_graph(open_as):
    """Open a graph page as `user` (or as another tab of `context`); wait until it is drawn and live."""

    def open_at(user, path, *, context=None):
        options = {} if context else {"viewport": {"width": 1400, "height": 900}}
        page = open_as(user, path, live=True, context=context, **options)
        page.wait_for_function("window.OmoiGraph && OmoiGraph.metrics.firstRender !== null")
        return page

    return open_at


def graph_path(board, ticket=None):
    return f"/boards/{board.slug}/tickets/{ticket.pk}/graph/" if ticket else f"/boards/{board.slug}/graph/"


def node(page, task):
    """The drawn node of `task` as {status, label, shape, border, x, y}, or None when it is not drawn."""
    return page.evaluate(
        """id => {
            const node = OmoiGraph.cy.getElementById('task-' + id);
            if (node.empty()) return null;
            return {status: node.data('status'), label: node.data('label'), shape: node.style('shape'),
                    border: node.style('border-color'), x: node.position('x'), y: node.position('y')};
        }""",
        task.pk,
    )


def viewport(page):
    return page.evaluate("({zoom: OmoiGraph.cy.zoom(), pan: OmoiGraph.cy.pan()})")


def wait_for_node(page, task_id, status=None):
    page.wait_for_function(
        """([id, status]) => {
            const node = OmoiGraph.cy.getElementById('task-' + id);
            return node.nonempty() && (status === null || node.data('status') === status);
        }""",
        arg=[task_id, status],
        timeout=LIVE_TIMEOUT,
    )


def click_node(page, task):
    """Click the node's middle with the mouse, as a person would."""
    point = page.evaluate("id => OmoiGraph.cy.getElementById('task-' + id).renderedPosition()", task.pk)
    box = page.locator("#graph-canvas").bounding_box()
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])


def api_post(server, token, path, body):
    request = urllib.request.Request(
        server.url + "/api/v1" + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


@pytest.fixture
def story(board, alice):
    ticket = ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")
    spec = task_create(ticket=ticket, title="Write the spec", actor=alice, phase="PHASE_REQUIREMENTS")
    code = task_create(ticket=ticket, title="Write the code", actor=alice, dependencies=[spec])
    return {"ticket": ticket, "spec": spec, "code": code}


def test_an_agents_branch_through_the_api_appears_as_a_new_node_and_the_users_view_stays(
    open_graph, server, board, bob, builder, story
):
    page = open_graph(bob, graph_path(board, story["ticket"]))
    page.get_by_role("button", name="Zoom in").click()
    page.get_by_role("button", name="Zoom in").click()
    # Pan by dragging the drawing's empty corner.
    box = page.locator("#graph-canvas").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 90, box["y"] + 60, steps=5)
    page.mouse.up()
    before = viewport(page)
    page.evaluate("window.sameDocument = true")

    status, body = api_post(
        server,
        builder[1],
        "/discoveries/branch",
        {
            "source_task_id": story["code"].pk,
            "discovery_type": "bug",
            "description": "Empty passwords pass",
            "title": "Refuse empty passwords",
        },
    )
    assert status == 201
    fix_id, discovery_id = body["task"]["id"], body["discovery"]["id"]

    wait_for_node(page, fix_id)
    edge = page.evaluate(f"OmoiGraph.cy.getElementById('discovery-{discovery_id}-{fix_id}').data()")
    assert edge["label"] == "Bug" and edge["source"] == f"task-{story['code'].pk}"
    assert viewport(page) == before, "the update moved the user's view"
    assert page.evaluate("window.sameDocument === true")
    fix = Task.objects.get(pk=fix_id)
    drawn = node(page, fix)
    # Laid out with its ticket: below the task it branched from, not on top of another node.
    assert drawn["y"] > node(page, story["code"])["y"]
    assert (drawn["x"], drawn["y"]) != (node(page, story["spec"])["x"], node(page, story["spec"])["y"])
    expect(page.locator("#graph-announcer")).to_contain_text("Refuse empty passwords")


def test_a_status_change_recolours_and_reshapes_its_node_in_place(open_graph, board, bob, builder, story):
    page = open_graph(bob, graph_path(board))
    before = node(page, story["spec"])
    assert (before["status"], before["shape"]) == ("pending", "round-rectangle")
    view = viewport(page)

    claimed = task_claim(agent=builder[0])  # the spec: the only ready task
    assert claimed.pk == story["spec"].pk

    wait_for_node(page, claimed.pk, "assigned")
    after = node(page, claimed)
    assert after["border"] != before["border"]
    assert after["shape"] == "rhomboid"
    assert "Assigned" in after["label"]
    assert (after["x"], after["y"]) == (before["x"], before["y"])
    assert viewport(page) == view

    task_complete(task=claimed, agent=builder[0], result={"summary": "Written."}, attempt=claimed.attempt)
    wait_for_node(page, claimed.pk, "completed")
    assert "Completed" in node(page, claimed)["label"]
    updates = page.evaluate("OmoiGraph.metrics.updates")
    assert [update["type"] for update in updates][-1] == "task.completed"


def test_agent_text_is_shown_as_text_in_the_side_panel(open_graph, board, alice, bob, builder):
    ticket = ticket_create(board=board, title=f"Ticket {MARKUP}", actor=alice)
    source = task_create(ticket=ticket, title=f"Source {MARKUP}", actor=alice, description=f"Why: {MARKUP}")
    _, spawned = discovery_branch(
        source_task=source, discovery_type="security_issue", description=f"Found {MARKUP}", actor=builder[0]
    )
    page = open_graph(bob, graph_path(board))

    click_node(page, source)
    panel = page.locator("#graph-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#graph-panel-title")).to_have_text(f"#{source.pk} Source {MARKUP}")
    expect(panel).to_contain_text(f"Security issue (open): Found {MARKUP} → #{spawned.pk}")
    expect(panel).to_contain_text(f"Why: {MARKUP}")
    expect(panel).to_contain_text(f"Ticket{'#'}{ticket.pk} Ticket {MARKUP}")
    assert panel.locator("img, b, script").count() == 0
    assert page.evaluate("window.injected") is None
    link = panel.get_by_role("link", name="Task on the ticket page")
    assert link.get_attribute("href") == f"/boards/{board.slug}/tickets/{ticket.pk}/#task-{source.pk}"

    # The list's "Show in graph" opens the same panel for another task.
    page.locator(f"#list-task-{spawned.pk} > .show-in-graph").click()
    expect(page.locator("#graph-panel-title")).to_have_text(f"#{spawned.pk} {spawned.title}")
    expect(panel).to_contain_text(f"Branched from #{source.pk} by a discovery (Security issue): Found {MARKUP}")
    expect(panel).to_be_focused()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    # The focus goes back where the keyboard user was.
    expect(page.locator(f"#list-task-{spawned.pk} > .show-in-graph")).to_be_focused()
    assert page.evaluate("window.injected") is None


def test_filters_redraw_the_graph_and_the_list_and_stay_in_the_url(open_graph, board, bob, builder, story):
    claimed = task_claim(agent=builder[0])
    task_complete(task=claimed, agent=builder[0], attempt=claimed.attempt)
    page = open_graph(bob, graph_path(board, story["ticket"]))
    assert node(page, story["code"]) is not None

    page.get_by_label("Completed").check()
    page.wait_for_url("**status=completed**")
    page.wait_for_function("OmoiGraph.cy.nodes('node.task').length === 1")
    assert node(page, story["spec"]) is not None and node(page, story["code"]) is None
    expect(page.locator(f"#list-task-{story['code'].pk}")).to_have_count(0)
    expect(page.locator(f"#list-task-{story['spec'].pk}")).to_be_visible()
    expect(page.locator("#graph-counts")).to_have_text("1 of 2 tasks shown")

    # The filtered URL, opened afresh, shows the same.
    page.reload()
    page.wait_for_function("window.OmoiGraph && OmoiGraph.metrics.firstRender !== null")
    assert page.evaluate("OmoiGraph.cy.nodes('node.task').length") == 1
    expect(page.get_by_label("Completed")).to_be_checked()


def test_the_users_zoom_and_pan_are_remembered_per_graph(open_graph, board, bob, story):
    page = open_graph(bob, graph_path(board, story["ticket"]))
    page.get_by_role("button", name="Zoom out").click()
    zoomed = viewport(page)
    page.wait_for_timeout(400)  # the view is saved a moment after it stops changing
    other = open_graph(bob, graph_path(board), context=page.context)
    assert viewport(other)["zoom"] != zoomed["zoom"] or viewport(other)["pan"] != zoomed["pan"]
    page.reload()
    page.wait_for_function("window.OmoiGraph && OmoiGraph.metrics.firstRender !== null")
    assert viewport(page) == zoomed
    page.get_by_role("button", name="Fit").click()
    assert viewport(page) != zoomed


@pytest.mark.slow
def test_a_large_graph_asks_to_filter_first_and_shows_anyway_with_viewport_optimisations(open_graph, board, bob, alice):
    ticket = ticket_create(board=board, title="Large", actor=alice)
    Task.objects.bulk_create(
        Task(ticket=ticket, phase=ticket.phase, title=f"Step {number}", created_by="test") for number in range(850)
    )
    page = open_graph(bob, graph_path(board))
    notice = page.locator("#graph-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("850 tasks match: more than 800")
    expect(notice).to_contain_text("Pending 850")
    assert page.evaluate("OmoiGraph.cy.nodes().length") == 0

    page.get_by_role("button", name="Show anyway").click()
    expect(notice).to_be_hidden()
    assert page.evaluate("OmoiGraph.cy.nodes('node.task').length") == 850
    assert page.evaluate("OmoiGraph.cy.renderer().hideEdgesOnViewport") is True
    assert page.evaluate("OmoiGraph.cy.renderer().textureOnViewport") is True


def test_a_new_tickets_task_gets_its_own_frame_on_the_board_and_stays_off_another_tickets_graph(
    open_graph, board, alice, bob, builder, story
):
    board_page = open_graph(bob, graph_path(board))
    ticket_page = open_graph(bob, graph_path(board, story["ticket"]), context=board_page.context)
    source = task_create(ticket=story["ticket"], title="Look around", actor=alice)
    discovery, spawned = discovery_branch(
        source_task=source, discovery_type="optimization", description="Cache it", actor=builder[0]
    )
    wait_for_node(ticket_page, spawned.pk)

    other = ticket_create(board=board, title="Audit log", actor=alice)
    elsewhere = task_create(ticket=other, title="Log logins", actor=alice)
    wait_for_node(board_page, elsewhere.pk)
    frame = board_page.evaluate(f"OmoiGraph.cy.getElementById('ticket-{other.pk}').data('label')")
    assert frame == f"#{other.pk} Audit log"
    # Below the other tickets' frames, not on top of them.
    boxes = board_page.evaluate(
        f"""[OmoiGraph.cy.getElementById('ticket-{story["ticket"].pk}').boundingBox(),
            OmoiGraph.cy.getElementById('ticket-{other.pk}').boundingBox()]"""
    )
    assert boxes[1]["y1"] > boxes[0]["y2"] or boxes[1]["x1"] > boxes[0]["x2"]

    discovery_resolve(discovery=discovery, status="resolved", reason="Cached", actor=alice)
    edge = f"discovery-{discovery.pk}-{spawned.pk}"
    ticket_page.wait_for_function(f"OmoiGraph.cy.getElementById('{edge}').hasClass('closed')", timeout=LIVE_TIMEOUT)
    board_page.wait_for_function(f"OmoiGraph.cy.getElementById('{edge}').hasClass('closed')", timeout=LIVE_TIMEOUT)
    assert ticket_page.evaluate(f"OmoiGraph.model.nodes.has({elsewhere.pk})") is False
    assert ticket_page.evaluate("OmoiGraph.cy.nodes('node.task').length") == 4


def test_tidy_lays_the_graph_out_again_and_fits_it(open_graph, board, bob, story):
    page = open_graph(bob, graph_path(board, story["ticket"]))
    page.evaluate(f"OmoiGraph.cy.getElementById('task-{story['code'].pk}').position({{x: 5000, y: 5000}})")
    page.get_by_role("button", name="Zoom in").click()
    page.get_by_role("button", name="Tidy").click()
    spec, code = node(page, story["spec"]), node(page, story["code"])
    assert abs(code["x"] - spec["x"]) < 1 and 0 < code["y"] - spec["y"] < 200  # the code waits on the spec
    visible = page.evaluate(
        f"OmoiGraph.cy.extent().x2 >= OmoiGraph.cy.getElementById('task-{story['code'].pk}').position('x')"
    )
    assert visible
