"""The Kanban board in a real browser: drags, refusals, keyboard moves and live updates, end to end.

Chromium talks to a Daphne process serving the test database, so each test
sees what a person would: SortableJS, htmx, the websocket, the server's rules.
Bob (a member) works the board; Alice (another member) watches it.
"""

import pytest
from playwright.sync_api import expect

from board.models import Event, Ticket
from board.services import ticket_create, ticket_transition

from .browser import drag, mark_document, press_then_again_at_once, same_document, tab_to

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process"),
]

# A move on one page reaches the others "within a couple of seconds": the server polls its log every second.
LIVE_TIMEOUT = 3_000


@pytest.fixture
def open_board(open_as, board):
    """Open the board as `user`, logged in, once its live channel is up."""
    return lambda user: open_as(user, f"/boards/{board.slug}/", live=True)


def card(page, ticket, column=None):
    scope = page.locator(f"#column-{column}") if column else page
    return scope.locator(f"#ticket-{ticket.pk}")


def cards_list(page, column, phase=None):
    lists = page.locator(f"#column-{column} ol.cards")
    return lists.and_(page.locator(f'[data-phase="{phase}"]')) if phase else lists.first


def handle(page, ticket):
    """Where a person grabs a card to drag it: its row of tags, clear of the title link and the menu."""
    return card(page, ticket).locator(".card-tags")


def is_move_of(ticket):
    return lambda response: response.url.endswith(f"/tickets/{ticket.pk}/move/") and response.request.method == "POST"


def test_a_card_dragged_to_an_allowed_column_moves_there_and_stays_after_a_reload(open_board, board, bob):
    ticket = ticket_create(board=board, title="Write the import spec", actor=bob)
    page = open_board(bob)
    expect(card(page, ticket, "backlog")).to_be_visible()

    with page.expect_response(is_move_of(ticket)) as response:
        drag(page, handle(page, ticket), cards_list(page, "analyzing"))

    assert response.value.status == 200
    expect(page.locator("#board-message")).to_have_text(
        "“Write the import spec” moved to Analyzing (Requirements Analysis)."
    )
    expect(card(page, ticket, "analyzing")).to_be_visible()
    expect(page.locator("#column-analyzing .count")).to_have_text("1/5")
    page.reload()
    expect(card(page, ticket, "analyzing")).to_be_visible()
    expect(card(page, ticket, "backlog")).to_have_count(0)
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_REQUIREMENTS"


def test_a_card_dragged_into_a_full_blocking_column_is_refused_and_goes_back(open_board, board, alice, bob):
    for number in range(8):
        ticket_create(board=board, title=f"Verify release {number}", actor=alice, phase="PHASE_TESTING")
    ticket = ticket_create(board=board, title="Build the exporter", actor=alice, phase="PHASE_IMPLEMENTATION")
    events = Event.objects.count()
    page = open_board(bob)
    expect(page.locator("#column-testing .count")).to_have_text("8/8")

    with page.expect_response(is_move_of(ticket)) as response:
        drag(page, handle(page, ticket), cards_list(page, "testing"))

    assert response.value.status == 409
    expect(page.locator("#board-message")).to_have_text("Testing is full (8/8).")
    expect(page.locator("#announcer")).to_have_text("Testing is full (8/8).")
    expect(card(page, ticket, "building")).to_be_visible()
    expect(card(page, ticket, "testing")).to_have_count(0)
    expect(page.locator("#column-testing .count")).to_have_text("8/8")
    unchanged = Ticket.objects.get(pk=ticket.pk)
    assert (unchanged.phase.key, unchanged.version, unchanged.position) == (
        "PHASE_IMPLEMENTATION",
        ticket.version,
        ticket.position,
    )
    assert Event.objects.count() == events
    assert Ticket.objects.filter(board=board, phase__key="PHASE_TESTING").count() == 8


def test_a_keyboard_user_moves_a_card_to_another_column_and_hears_it_announced(open_board, board, bob):
    ticket_create(board=board, title="Sketch the API", actor=bob)
    ticket = ticket_create(board=board, title="Triage the crash report", actor=bob)
    page = open_board(bob)
    mark_document(page)

    tab_to(page, f"move-{ticket.pk}")
    page.keyboard.press("Enter")
    menu = card(page, ticket).locator(".card-menu")
    expect(menu).to_have_attribute("open", "")
    # The first choice of a card in Backlog: the next column.
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Analyzing")
    page.keyboard.press("Enter")

    expect(page.locator("#announcer")).to_have_text(
        "“Triage the crash report” moved to Analyzing (Requirements Analysis)."
    )
    expect(card(page, ticket, "analyzing")).to_be_visible()
    # The move is done: the menu closes and the focus is back on its button, in the card's new place.
    expect(page.locator(f"#move-{ticket.pk}")).to_be_focused()
    expect(card(page, ticket).locator(".card-menu")).not_to_have_attribute("open", "")
    assert same_document(page), "the move reloaded the page instead of going through htmx"
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_REQUIREMENTS"


def test_a_keyboard_user_reorders_cards_with_the_up_and_down_buttons(open_board, board, bob):
    first, second, third = (
        ticket_create(board=board, title=title, actor=bob) for title in ("First", "Second", "Third")
    )
    page = open_board(bob)
    titles = page.locator("#column-backlog .card-title")
    expect(titles).to_have_text(["First", "Second", "Third"])
    mark_document(page)

    tab_to(page, f"move-{third.pk}")
    page.keyboard.press("Enter")
    tab_to(page, f"move-up-{third.pk}")
    # Up twice: the second press comes the moment the first move's re-rendered button has the focus.
    # htmx must have wired its form by then, or the browser posts it natively and reloads the page.
    press_then_again_at_once(page, "Enter", " ")
    expect(titles).to_have_text(["Third", "First", "Second"])
    assert same_document(page), "the second move reloaded the page instead of going through htmx"
    expect(page.locator("#announcer")).to_have_text("“Third” moved up in Backlog.")
    expect(page.locator(f"#move-up-{third.pk}")).to_be_focused()

    page.keyboard.press("Tab")
    expect(page.locator(f"#move-down-{third.pk}")).to_be_focused()
    page.keyboard.press("Enter")
    expect(titles).to_have_text(["First", "Third", "Second"])
    expect(page.locator("#announcer")).to_have_text("“Third” moved down in Backlog.")
    expect(page.locator(f"#move-down-{third.pk}")).to_be_focused()
    assert same_document(page)

    page.reload()
    expect(titles).to_have_text(["First", "Third", "Second"])
    in_column = Ticket.objects.filter(board=board, phase__key="PHASE_BACKLOG").order_by("position", "pk")
    assert list(in_column.values_list("pk", flat=True)) == [first.pk, third.pk, second.pk]


def test_another_member_sees_a_move_live_without_reloading(open_board, board, alice, bob):
    ticket = ticket_create(board=board, title="Pick a queue library", actor=bob)
    bobs_page = open_board(bob)
    alices_page = open_board(alice)
    mark_document(alices_page)

    with bobs_page.expect_response(is_move_of(ticket)) as response:
        drag(bobs_page, handle(bobs_page, ticket), cards_list(bobs_page, "analyzing"))
    assert response.value.status == 200

    expect(card(alices_page, ticket, "analyzing")).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(card(alices_page, ticket, "backlog")).to_have_count(0)
    expect(alices_page.locator("#column-analyzing .count")).to_have_text("1/5")
    assert same_document(alices_page)


def test_a_transition_made_by_another_process_appears_live(open_board, board, bob):
    ticket = ticket_create(board=board, title="Ask legal about the licence", actor=bob)
    page = open_board(bob)
    mark_document(page)

    ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor="orchestrator")

    expect(card(page, ticket, "analyzing")).to_be_visible(timeout=LIVE_TIMEOUT)
    expect(card(page, ticket, "backlog")).to_have_count(0)
    assert same_document(page)


def test_a_member_taken_off_the_board_stops_getting_its_updates_at_once(open_board, board, bob):
    page = open_board(bob)
    board.members.remove(bob)
    expect(page.locator("#live-status")).to_have_text("This board is no longer available to you.", timeout=LIVE_TIMEOUT)
    ticket = ticket_create(board=board, title="Not for Bob any more", actor="orchestrator")
    page.wait_for_timeout(1500)
    expect(card(page, ticket)).to_have_count(0)


def test_the_board_stays_live_when_its_own_session_is_renewed_in_another_tab(open_board, board, alice):
    page = open_board(alice)
    page.wait_for_timeout(2100)  # a socket that has been live a while, not one refused at once
    other = page.context.new_page()
    other.goto("/admin/password_change/")
    new_password = "another horse battery staple 42"
    other.locator("#id_old_password").fill("correct horse battery staple")
    other.locator("#id_new_password1").fill(new_password)
    other.locator("#id_new_password2").fill(new_password)
    other.locator("input[type=submit]").click()
    expect(other.get_by_text("Your password was changed.")).to_be_visible()

    ticket = ticket_create(board=board, title="Seen after the new session", actor="orchestrator")
    expect(card(page, ticket, "backlog")).to_be_visible(timeout=3 * LIVE_TIMEOUT)
    expect(page.locator("#live-status")).to_have_text("Live")
