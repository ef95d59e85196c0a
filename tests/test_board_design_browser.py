"""The board as a new user meets it, in a real browser: phases within a column, the move menu after moves and live
updates, column colours in both themes, a phone's width, the Blocked filter, and the layout at 1400 pixels.

Chromium talks to a Daphne process serving the test database (tests/browser.py). Bob is a member of Alice's
board; Alice is staff. Screenshots of the board land in artifacts/screenshots/ as board-design-*.png.
"""

from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from board.models import Task, Ticket
from board.services import agent_create, task_claim, task_create, ticket_create, ticket_transition, ticket_update
from discoveries.models import Discovery

from .browser import drag, same_document, tab_to

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process"),
]

LIVE_TIMEOUT = 3_000
WIDE = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"
COLUMNS = ["backlog", "analyzing", "building", "testing", "deploying", "done", "blocked"]


@pytest.fixture
def open_board(open_as, board):
    """Open the board as `user` at a viewport size and colour scheme; wait until it is live."""

    def open_at(user, *, viewport=WIDE, scheme="light", query=""):
        return open_as(user, f"/boards/{board.slug}/{query}", live=True, viewport=viewport, color_scheme=scheme)

    return open_at


def card(page, ticket, column=None):
    scope = page.locator(f"#column-{column}") if column else page
    return scope.locator(f"#ticket-{ticket.pk}")


def band(page, column, phase):
    return page.locator(f'#column-{column} ol.cards[data-phase="{phase}"]')


def menu_columns(page, ticket):
    """The columns a card's menu offers, enabled or not, in order."""
    return (
        card(page, ticket)
        .locator('.card-menu button[name="column"]')
        .evaluate_all("buttons => buttons.map(b => b.value)")
    )


def open_menu(page, ticket):
    tab_to(page, f"move-{ticket.pk}")
    page.keyboard.press("Enter")
    expect(card(page, ticket).locator(".card-menu")).to_have_attribute("open", "")


def choose(page, ticket, text):
    """From the card's open menu, Tab to the choice reading `text` and press Enter, as a keyboard user does."""
    for _ in range(30):
        page.keyboard.press("Tab")
        focused = page.locator(":focus")
        if focused.evaluate("e => e.closest('.menu-panel') !== null") and focused.inner_text().startswith(text):
            page.keyboard.press("Enter")
            return
    raise AssertionError(f"no choice {text!r} in the menu of #{ticket.pk}")


def page_width(page):
    return page.evaluate("document.documentElement.scrollWidth")


# Bug: tickets stuck in a column of several phases


def test_a_keyboard_user_moves_a_card_through_both_phases_of_its_column_and_out(open_board, board, bob):
    ticket = ticket_create(board=board, title="Spec the export", actor=bob, phase="PHASE_REQUIREMENTS")
    page = open_board(bob)
    expect(card(page, ticket).locator(".card-phase")).to_have_text("Requirements Analysis")
    expect(band(page, "analyzing", "PHASE_REQUIREMENTS").locator(f"#ticket-{ticket.pk}")).to_be_visible()

    open_menu(page, ticket)
    panel = card(page, ticket).locator(".menu-panel")
    expect(panel.locator(".menu-current")).to_have_text("Requirements Analysiscurrent")
    expect(panel.locator('button[name="column"][value="building"]')).to_be_disabled()
    expect(panel.locator('button[name="column"][value="analyzing"]')).to_have_count(0)
    choose(page, ticket, "Design")

    expect(page.locator("#announcer")).to_have_text("“Spec the export” moved to Analyzing (Design).")
    expect(band(page, "analyzing", "PHASE_DESIGN").locator(f"#ticket-{ticket.pk}")).to_be_visible()
    expect(card(page, ticket).locator(".card-phase")).to_have_text("Design")
    expect(page.locator(f"#move-{ticket.pk}")).to_be_focused()

    # Now the way out of the column is open, from the same menu, without a reload.
    page.keyboard.press("Enter")
    choose(page, ticket, "Building")
    expect(page.locator("#announcer")).to_have_text("“Spec the export” moved to Building.")
    expect(card(page, ticket, "building")).to_be_visible()
    assert same_document(page)
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_IMPLEMENTATION"


def test_a_card_dropped_on_the_design_band_moves_into_design(open_board, board, bob):
    ticket = ticket_create(board=board, title="Pick the storage", actor=bob, phase="PHASE_REQUIREMENTS")
    page = open_board(bob)

    drag(page, card(page, ticket).locator(".card-tags"), band(page, "analyzing", "PHASE_DESIGN"))

    expect(page.locator("#board-message")).to_have_text("“Pick the storage” moved to Analyzing (Design).")
    expect(band(page, "analyzing", "PHASE_DESIGN").locator(f"#ticket-{ticket.pk}")).to_be_visible()
    page.reload()
    expect(band(page, "analyzing", "PHASE_DESIGN").locator(f"#ticket-{ticket.pk}")).to_be_visible()
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_DESIGN"


def test_a_card_dropped_on_a_band_it_may_not_enter_is_refused_and_stays(open_board, board, bob):
    ticket = ticket_create(board=board, title="Jump ahead", actor=bob)
    page = open_board(bob)

    drag(page, card(page, ticket).locator(".card-tags"), band(page, "analyzing", "PHASE_DESIGN"))

    expect(page.locator("#board-message")).to_contain_text("Backlog cannot move to Design")
    expect(card(page, ticket, "backlog")).to_be_visible()
    expect(band(page, "analyzing", "PHASE_DESIGN").locator(".card")).to_have_count(0)
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_BACKLOG"


# Bug: the "Move to…" list lost most columns after a move or a live update


def test_two_keyboard_moves_in_a_row_need_no_reload_and_every_card_offers_every_column(open_board, board, bob):
    first = ticket_create(board=board, title="First to go", actor=bob)
    second = ticket_create(board=board, title="Second to go", actor=bob)
    waiting = ticket_create(board=board, title="Already specified", actor=bob, phase="PHASE_REQUIREMENTS")
    page = open_board(bob)

    open_menu(page, first)
    choose(page, first, "Analyzing")
    expect(card(page, first, "analyzing")).to_be_visible()

    # The second move, from a card of a column that was re-rendered, offers every other column still.
    assert menu_columns(page, second) == [key for key in COLUMNS if key != "backlog"]
    open_menu(page, second)
    choose(page, second, "Analyzing")
    expect(card(page, second, "analyzing")).to_be_visible()
    expect(page.locator("#announcer")).to_have_text("“Second to go” moved to Analyzing (Requirements Analysis).")
    assert same_document(page)
    for ticket in (first, second, waiting):
        assert menu_columns(page, ticket) == [key for key in COLUMNS if key != "analyzing"]


def test_after_a_live_update_the_re_rendered_cards_offer_every_column(open_board, board, bob, alice):
    staying = ticket_create(board=board, title="Staying in backlog", actor=alice)
    moving = ticket_create(board=board, title="Moved by the orchestrator", actor=alice)
    page = open_board(bob)

    ticket_transition(ticket=moving, to_phase="PHASE_REQUIREMENTS", actor="orchestrator")

    expect(card(page, moving, "analyzing")).to_be_visible(timeout=LIVE_TIMEOUT)
    assert menu_columns(page, staying) == [key for key in COLUMNS if key != "backlog"]
    assert menu_columns(page, moving) == [key for key in COLUMNS if key != "analyzing"]
    assert same_document(page)


def test_a_menu_left_open_stays_open_through_a_live_update(open_board, board, bob, alice):
    mine = ticket_create(board=board, title="Looking at this one", actor=alice)
    page = open_board(bob)
    card(page, mine).locator(".card-menu summary").click()

    ticket_create(board=board, title="Arrives meanwhile", actor=alice)

    expect(page.locator("#column-backlog .card")).to_have_count(2, timeout=LIVE_TIMEOUT)
    expect(card(page, mine).locator(".card-menu")).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(card(page, mine).locator(".card-menu")).not_to_have_attribute("open", "")
    expect(page.locator(f"#move-{mine.pk}")).to_be_focused()


def test_staff_override_a_full_column_from_the_message_over_the_board(open_board, board, alice):
    for number in range(3):
        ticket_create(board=board, title=f"Release {number}", actor=alice, phase="PHASE_DEPLOYMENT")
    hotfix = ticket_create(board=board, title="Hotfix the login", actor=alice, phase="PHASE_TESTING")
    page = open_board(alice)

    drag(page, card(page, hotfix).locator(".card-tags"), page.locator("#column-deploying ol.cards"))

    expect(page.locator("#board-message")).to_contain_text("Deploying is full (3/3).")
    expect(card(page, hotfix, "testing")).to_be_visible()
    page.get_by_label("Override as staff: reason").fill("Production is down")
    page.get_by_role("button", name="Move anyway").click()
    expect(page.locator("#announcer")).to_have_text("“Hotfix the login” moved to Deploying.")
    expect(card(page, hotfix, "deploying")).to_be_visible()
    expect(page.locator("#column-deploying .wip-flag")).to_have_text("Over limit")
    # A success goes away by itself; a dismissed message at once.
    page.get_by_role("button", name="Dismiss the message").click()
    expect(page.locator("#board-message")).to_be_empty()
    hotfix.refresh_from_db()
    assert hotfix.phase.key == "PHASE_DEPLOYMENT"


def test_a_click_outside_an_open_menu_closes_it(open_board, board, bob):
    ticket = ticket_create(board=board, title="Menu to close", actor=bob)
    page = open_board(bob)
    menu = card(page, ticket).locator(".card-menu")
    menu.locator("summary").click()
    expect(menu).to_have_attribute("open", "")
    expect(menu.locator(".menu-panel")).to_be_in_viewport(ratio=1)
    page.locator("h1").click()
    expect(menu).not_to_have_attribute("open", "")


# Column colours


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_each_column_header_carries_its_palette_colour_in_both_themes(open_board, board, bob, scheme):
    page = open_board(bob, scheme=scheme)
    colours = page.evaluate(
        """() => [...document.querySelectorAll('.column')].map(column => {
            const probe = document.createElement('span');
            probe.style.color = getComputedStyle(column).getPropertyValue('--col-color');
            column.querySelector('.column-header').appendChild(probe);
            const expected = getComputedStyle(probe).color;
            probe.remove();
            return [column.dataset.column, getComputedStyle(column.querySelector('.column-header')).borderTopColor,
                    expected, getComputedStyle(column).getPropertyValue('--col-color').trim()];
        })"""
    )
    named = {key: variable for key, _, _, variable in colours}
    assert named["backlog"] == "var(--slate)" or named["backlog"].startswith("#")
    for key, border, expected, _ in colours:
        assert border == expected, key
        assert border not in ("rgba(0, 0, 0, 0)", "rgb(0, 0, 0)"), key
    # The same column differs between the themes: each palette name has a light and a dark value.
    root = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--slate').trim()")
    assert root == ("#4f6079" if scheme == "light" else "#98a6bb")


# A phone's width


@pytest.mark.parametrize("query", ["", "?lanes=priority"])
def test_at_a_phones_width_the_page_does_not_scroll_sideways_the_board_does(open_board, board, bob, query):
    for title in ("A ticket with a long title that wraps over several lines on a phone", "Second"):
        ticket = ticket_create(board=board, title=title, actor=bob, priority="HIGH")
    ticket_update(ticket=ticket, actor=bob, is_blocked=True, blocked_reason="Waiting for legal")
    # A task gives the card its graph link, whose label is visually hidden (positioned out of the flow).
    task_create(
        ticket=ticket_create(board=board, title="Done work", actor=bob, phase="PHASE_DONE"), title="T", actor=bob
    )
    page = open_board(bob, viewport=PHONE, query=query)

    assert page_width(page) <= PHONE["width"]
    board_box = page.evaluate(
        "(() => { const b = document.getElementById('board'); return [b.scrollWidth, b.clientWidth]; })()"
    )
    assert board_box[0] > board_box[1], "the columns scroll inside the board"
    # Scrolled to the last column, the page still does not scroll sideways.
    page.locator("#column-blocked .column-header").scroll_into_view_if_needed()
    expect(page.locator("#column-blocked .column-header")).to_be_in_viewport()
    assert page_width(page) <= PHONE["width"]
    assert page.evaluate("window.scrollX") == 0
    # An open menu stays inside its card.
    card(page, ticket).locator(".card-menu summary").click()
    assert page_width(page) <= PHONE["width"]


# Blocked filter


def test_blocked_shows_the_ticket_waiting_in_the_blocked_column(open_board, board, bob, alice):
    parked = ticket_create(board=board, title="Waiting for the vendor", actor=alice, phase="PHASE_BLOCKED")
    free = ticket_create(board=board, title="Nothing in the way", actor=alice)
    page = open_board(bob)

    page.get_by_role("checkbox", name="Blocked").check()

    expect(card(page, parked, "blocked")).to_be_visible()
    expect(card(page, free)).to_have_count(0)
    expect(page.locator(".filter-summary")).to_contain_text("Blocked: flagged as blocked, or waiting in Blocked.")
    assert "blocked=on" in page.url


# Layout at 1400 pixels


def test_at_1400_pixels_all_seven_columns_fit_and_each_scrolls_on_its_own(open_board, board, bob):
    for number in range(30):
        ticket_create(board=board, title=f"Backlog item {number}", actor=bob)
    page = open_board(bob)

    assert page_width(page) <= WIDE["width"]
    fits = page.evaluate(
        "(() => { const b = document.getElementById('board'); return b.scrollWidth <= b.clientWidth; })()"
    )
    assert fits, "the last column is cut off"
    last = page.locator("#column-blocked .column-header").bounding_box()
    assert last["x"] + last["width"] <= WIDE["width"]
    # The long column scrolls inside its own well; the page does not grow with it.
    cell = page.locator("#column-backlog .cell")
    assert cell.evaluate("c => c.scrollHeight > c.clientHeight")
    assert page.evaluate("document.documentElement.scrollHeight") <= WIDE["height"] + 1
    cell.evaluate("c => c.scrollTop = c.scrollHeight")
    expect(page.locator("#column-backlog .column-header")).to_be_in_viewport()
    # The filters are one row.
    tops = page.locator("#board-filters > *:visible").evaluate_all(
        "items => new Set(items.map(i => Math.round(i.getBoundingClientRect().top + i.offsetHeight / 2))).size"
    )
    assert tops == 1


def test_with_swimlanes_the_column_headers_stay_in_view_while_the_board_scrolls(open_board, board, bob):
    for number in range(24):
        ticket_create(board=board, title=f"Item {number}", actor=bob, priority=["LOW", "MEDIUM", "HIGH"][number % 3])
    page = open_board(bob, query="?lanes=priority")

    expect(page.locator(".lane-header")).to_have_count(4)
    expect(page.locator("#lane-HIGH")).to_contain_text("8 tickets")
    board_box = page.locator("#board").bounding_box()
    page.locator("#board").evaluate("b => b.scrollTop = b.scrollHeight")
    header = page.locator("#column-backlog .column-header").bounding_box()
    assert abs(header["y"] - board_box["y"]) <= 2, "the header stuck to the top of the board"


# Screenshots


@pytest.fixture
def demo_like(board, alice):
    """A board a few days into work: every column in use, agents on tasks, progress, discoveries, a blocker."""
    made = {}

    def make(title, phase, priority="MEDIUM", **extra):
        ticket = ticket_create(board=board, title=title, actor=alice, phase=phase, priority=priority)
        made[title] = ticket
        return ticket

    make("Nightly database backups with 30-day retention", "PHASE_BACKLOG", "HIGH")
    make("Dark mode for the settings page", "PHASE_BACKLOG", "LOW")
    make("Rate-limit the public API per token", "PHASE_BACKLOG")
    make("Single sign-on with the company directory", "PHASE_REQUIREMENTS", "HIGH")
    make("Export tickets as CSV", "PHASE_DESIGN")
    make("Search across ticket comments", "PHASE_DESIGN", "LOW")
    busy = make("Retry failed webhooks with back-off", "PHASE_IMPLEMENTATION", "CRITICAL")
    make("Audit log for admin actions", "PHASE_IMPLEMENTATION")
    make("Faster board page for 5,000 tickets", "PHASE_TESTING", "HIGH")
    make("Email digest of open discoveries", "PHASE_DEPLOYMENT")
    make("Onboarding checklist for new agents", "PHASE_DONE", "LOW")
    make("Invite people by email", "PHASE_DONE")
    stuck = make("Payments: switch to the new provider", "PHASE_BLOCKED", "CRITICAL")
    ticket_update(ticket=stuck, actor=alice, is_blocked=True, blocked_reason="Waiting for the provider's API keys.")
    agent, _ = agent_create(name="demo-agent-1", boards=[board], actor=alice)
    for title in ("Write the retry queue", "Back-off with jitter", "Dead-letter table", "Tests"):
        task_create(ticket=busy, title=title, actor=alice)
    done = list(busy.tasks.order_by("pk")[:2])
    Task.objects.filter(pk__in=[task.pk for task in done]).update(status="completed")
    Discovery.objects.create(
        source_task=done[0], discovery_type="bug", description="Webhooks time out after 5 s", discovered_by="agent"
    )
    task_claim(agent=agent, board=board)
    return made


@pytest.mark.parametrize(
    ("name", "viewport", "scheme", "query"),
    [
        ("1400-light", WIDE, "light", ""),
        ("1400-dark", WIDE, "dark", ""),
        ("1400-light-swimlanes", WIDE, "light", "?lanes=priority"),
        ("390-light", PHONE, "light", ""),
        ("390-light-swimlanes", PHONE, "light", "?lanes=priority"),
    ],
)
def test_screenshots_of_the_board(open_board, board, alice, demo_like, name, viewport, scheme, query):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = open_board(alice, viewport=viewport, scheme=scheme, query=query)
    assert page_width(page) <= viewport["width"]
    page.screenshot(path=SCREENSHOTS / f"board-design-{name}.png")
    if name in ("1400-light", "390-light"):
        ticket = demo_like[
            "Single sign-on with the company directory" if name == "1400-light" else "Dark mode for the settings page"
        ]
        card(page, ticket).locator(".card-menu summary").click()
        panel = card(page, ticket).locator(".menu-panel")
        expect(panel).to_be_in_viewport(ratio=1)
        assert page_width(page) <= viewport["width"]
        page.screenshot(path=SCREENSHOTS / f"board-design-{name}-menu.png")
        assert Ticket.objects.filter(board=board).count() == len(demo_like)
