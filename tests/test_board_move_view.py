"""Moving cards from the board page: drops, "Move to…", up and down, refusals, overrides and bad input."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.models import Event, PhaseHistory, Ticket
from board.services import ticket_create

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def make(board, alice):
    def make(title, phase="PHASE_BACKLOG", **kwargs):
        return ticket_create(board=board, title=title, actor=alice, phase=phase, **kwargs)

    return make


def move(client, ticket, query="", **data):
    url = reverse("board:ticket-move", args=[ticket.board.slug, ticket.pk])
    return client.post(f"{url}?{query}" if query else url, data, headers=HTMX)


def order(board, *phase_keys):
    tickets = Ticket.objects.filter(board=board, phase__key__in=phase_keys).order_by("position", "pk")
    return list(tickets.values_list("title", flat=True))


def state():
    return (
        list(Ticket.objects.order_by("pk").values_list("phase_id", "position", "version")),
        Event.objects.count(),
        PhaseHistory.objects.count(),
    )


def test_a_drop_into_an_allowed_column_moves_the_card_and_returns_both_columns(bob_client, make):
    design = make("Designed", "PHASE_DESIGN")
    ticket = make("Mover")
    response = move(bob_client, ticket, column="analyzing", next=design.pk)
    assert response.status_code == 200
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_REQUIREMENTS"
    assert order(ticket.board, "PHASE_REQUIREMENTS", "PHASE_DESIGN") == ["Mover", "Designed"]
    html = response.content.decode()
    assert html.count('hx-swap-oob="true"') == 2
    assert 'id="column-backlog"' in html and 'id="column-analyzing"' in html
    assert "“Mover” moved to Analyzing (Requirements Analysis)." in html
    assert 'hx-swap-oob="innerHTML:#announcer"' in html
    event = Event.objects.get(type="ticket.transitioned")
    assert event.actor == "bob"


def test_a_drop_within_a_column_reorders_it(bob_client, make, board):
    first, second, third = make("First"), make("Second"), make("Third")
    response = move(bob_client, third, column="backlog", previous=first.pk, next=second.pk)
    assert response.status_code == 200
    assert order(board, "PHASE_BACKLOG") == ["First", "Third", "Second"]
    assert "“Third” reordered in Backlog." in response.content.decode()
    assert Event.objects.filter(type="ticket.moved").count() == 1


def test_a_forbidden_drop_is_refused_with_the_reason_and_the_columns_as_they_are(bob_client, make):
    ticket = make("Too early")
    before = state()
    response = move(bob_client, ticket, column="testing")
    assert response.status_code == 409
    html = response.content.decode()
    assert "Backlog cannot move to Testing; from Backlog a ticket may move to: Requirements Analysis, Blocked." in html
    assert 'role="alert"' in html
    # Both columns come back from the database: the card is in Backlog, not in Testing.
    backlog = html[html.index('id="column-backlog"') : html.index('id="column-testing"')]
    assert f'id="ticket-{ticket.pk}"' in backlog
    assert state() == before


def test_a_drop_into_a_full_block_column_is_refused(bob_client, make):
    for n in range(8):
        make(f"Check {n}", "PHASE_TESTING")
    ticket = make("Built", "PHASE_IMPLEMENTATION")
    before = state()
    response = move(bob_client, ticket, column="testing")
    assert response.status_code == 409
    assert "Testing is full (8/8)." in response.content.decode()
    assert state() == before
    # Members get no override form; only staff may force.
    assert 'name="force"' not in response.content.decode()


def test_a_drop_into_a_full_warn_column_goes_through_and_marks_it(bob_client, make):
    for n in range(5):
        make(f"Think {n}", "PHASE_REQUIREMENTS")
    ticket = make("One more")
    response = move(bob_client, ticket, column="analyzing")
    assert response.status_code == 200
    html = response.content.decode()
    assert "6/5" in html and "Over limit" in html
    assert Event.objects.get(type="ticket.transitioned").payload["wip"]["exceeded"] is True


def test_staff_are_offered_an_override_and_it_is_recorded(alice_client, make):
    for n in range(8):
        make(f"Check {n}", "PHASE_TESTING")
    ticket = make("Hotfix", "PHASE_IMPLEMENTATION")
    refused = move(alice_client, ticket, column="testing")
    assert refused.status_code == 409
    html = refused.content.decode()
    assert 'name="force" value="on"' in html and 'name="column" value="testing"' in html

    response = move(alice_client, ticket, column="testing", force="on", reason="Production is down")
    assert response.status_code == 200
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_TESTING"
    history = PhaseHistory.objects.filter(ticket=ticket).latest("id")
    assert (history.kind, history.reason, history.actor) == ("override", "Production is down", "alice")
    assert Event.objects.filter(type="ticket.transitioned").latest("id").payload["wip"]["overridden"] is True


def test_an_override_without_a_reason_is_refused(alice_client, make):
    for n in range(8):
        make(f"Check {n}", "PHASE_TESTING")
    ticket = make("Hotfix", "PHASE_IMPLEMENTATION")
    response = move(alice_client, ticket, column="testing", force="on")
    assert response.status_code == 409
    assert "a forced move needs a written reason" in response.content.decode()


def test_a_member_cannot_force(bob_client, make):
    ticket = make("Early")
    before = state()
    response = move(bob_client, ticket, column="done", force="on", reason="Because")
    assert response.status_code == 409
    assert "only staff may force it" in response.content.decode()
    assert state() == before


# Phases within a column of several


def test_a_card_moves_to_the_next_phase_of_its_column_from_its_menu(bob_client, make, board):
    ticket = make("Specify")
    move(bob_client, ticket, column="analyzing")
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_REQUIREMENTS"

    response = move(bob_client, ticket, phase="PHASE_DESIGN")

    assert response.status_code == 200
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_DESIGN"
    html = response.content.decode()
    assert "“Specify” moved to Analyzing (Design)." in html
    # The column comes back once, with the card in the Design band.
    assert html.count('hx-swap-oob="true"') == 1
    design = html[html.index('<ol class="cards" data-column="analyzing" data-lane="" data-phase="PHASE_DESIGN"') :]
    assert f'id="ticket-{ticket.pk}"' in design[: design.index("</ol>")]
    event = Event.objects.filter(type="ticket.transitioned").latest("id")
    assert (event.payload["from"], event.payload["to"], event.payload["column"]) == (
        "PHASE_REQUIREMENTS",
        "PHASE_DESIGN",
        "analyzing",
    )
    history = PhaseHistory.objects.filter(ticket=ticket).latest("id")
    assert (history.from_key, history.to_key, history.kind) == ("PHASE_REQUIREMENTS", "PHASE_DESIGN", "normal")


def test_a_drop_on_a_phase_band_moves_the_card_into_that_phase_between_its_neighbours(bob_client, make, board):
    first, second = make("First design", "PHASE_DESIGN"), make("Second design", "PHASE_DESIGN")
    ticket = make("Specified", "PHASE_REQUIREMENTS")
    response = move(bob_client, ticket, column="analyzing", phase="PHASE_DESIGN", previous=first.pk, next=second.pk)
    assert response.status_code == 200
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_DESIGN"
    assert order(board, "PHASE_DESIGN") == ["First design", "Specified", "Second design"]


def test_a_drop_on_a_phase_band_the_workflow_does_not_allow_is_refused(bob_client, make):
    ticket = make("Too early")
    before = state()
    response = move(bob_client, ticket, column="analyzing", phase="PHASE_DESIGN")
    assert response.status_code == 409
    assert "Backlog cannot move to Design; from Backlog a ticket may move to: Requirements Analysis, Blocked." in (
        response.content.decode()
    )
    assert state() == before


def test_going_back_a_phase_is_refused_for_members_and_overridden_by_staff(bob_client, alice_client, make):
    ticket = make("Designed", "PHASE_DESIGN")
    before = state()
    refused = move(bob_client, ticket, phase="PHASE_REQUIREMENTS")
    assert refused.status_code == 409
    assert state() == before

    offered = move(alice_client, ticket, phase="PHASE_REQUIREMENTS")
    assert offered.status_code == 409
    html = offered.content.decode()
    assert 'name="phase" value="PHASE_REQUIREMENTS"' in html and 'name="column" value="analyzing"' in html
    assert state() == before

    response = move(alice_client, ticket, column="analyzing", phase="PHASE_REQUIREMENTS", force="on", reason="Redo")
    assert response.status_code == 200
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_REQUIREMENTS"
    history = PhaseHistory.objects.filter(ticket=ticket).latest("id")
    assert (history.kind, history.reason) == ("override", "Redo")


def test_a_phase_the_card_is_in_already_changes_nothing(bob_client, make):
    ticket = make("Designed", "PHASE_DESIGN")
    make("Other design", "PHASE_DESIGN")
    before = state()
    response = move(bob_client, ticket, phase="PHASE_DESIGN")
    assert response.status_code == 200
    assert state() == before


def test_move_up_steps_over_the_cards_of_its_own_phase_only(bob_client, make, board):
    make("Design first", "PHASE_DESIGN")
    requirements = make("Requirements", "PHASE_REQUIREMENTS")
    later = make("Design later", "PHASE_DESIGN")
    response = move(bob_client, later, direction="up")
    assert response.status_code == 200
    assert order(board, "PHASE_DESIGN") == ["Design later", "Design first"]
    assert order(board, "PHASE_REQUIREMENTS") == ["Requirements"]
    before = state()
    assert "is already at the top of Analyzing" in move(bob_client, requirements, direction="up").content.decode()
    assert state() == before


def test_move_up_and_down_step_one_place(bob_client, make, board):
    first, second, third = make("First"), make("Second"), make("Third")
    response = move(bob_client, third, direction="up")
    assert response.status_code == 200
    assert order(board, "PHASE_BACKLOG") == ["First", "Third", "Second"]
    assert "“Third” moved up in Backlog." in response.content.decode()
    move(bob_client, first, direction="down")
    assert order(board, "PHASE_BACKLOG") == ["Third", "First", "Second"]
    move(bob_client, second, direction="up")
    move(bob_client, second, direction="up")
    assert order(board, "PHASE_BACKLOG") == ["Second", "Third", "First"]


def test_move_up_at_the_top_changes_nothing_and_says_so(bob_client, make):
    first = make("First")
    make("Second")
    before = state()
    response = move(bob_client, first, direction="up")
    assert response.status_code == 200
    assert "“First” is already at the top of Backlog." in response.content.decode()
    assert state() == before


def test_move_up_under_a_filter_steps_over_the_visible_cards(bob_client, make, board):
    make("Alpha", priority="HIGH")
    make("Hidden", priority="LOW")
    beta = make("Beta", priority="HIGH")
    move(bob_client, beta, query="priority=HIGH", direction="up")
    assert order(board, "PHASE_BACKLOG") == ["Beta", "Alpha", "Hidden"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "Say which column or phase to move the ticket to, or move it up or down."),
        ({"phase": "PHASE_NOPE"}, "has no phase &#x27;PHASE_NOPE&#x27;"),
        ({"phase": "x" * 65}, "Ensure this value has at most 64 characters"),
        (
            {"column": "building", "phase": "PHASE_DESIGN"},
            "Design is shown in column Analyzing, not &#x27;building&#x27;.",
        ),
        ({"column": "nowhere"}, "has no column &#x27;nowhere&#x27;"),
        ({"column": "bad key!"}, "Enter a valid “slug”"),
        ({"column": "analyzing", "previous": "x"}, "Enter a whole number."),
        ({"column": "analyzing", "next": "-4"}, "Ensure this value is greater than or equal to 1."),
        ({"direction": "sideways"}, "Select a valid choice. sideways is not one of the available choices."),
        ({"column": "analyzing", "reason": "x" * 2001}, "Ensure this value has at most 2000 characters"),
    ],
)
def test_bad_move_input_is_refused_and_changes_nothing(bob_client, make, data, message):
    ticket = make("Mover")
    before = state()
    response = move(bob_client, ticket, **data)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert state() == before


def test_a_column_of_another_workflow_cannot_be_named(bob_client, make, review_board):
    ticket = make("Mover")
    before = state()
    response = move(bob_client, ticket, column="review")
    assert response.status_code == 422
    assert state() == before


def test_a_ticket_of_another_board_is_not_found(bob_client, make, review_board):
    other = Ticket.objects.filter(board=review_board).first()
    url = reverse("board:ticket-move", args=["alices-board", other.pk])
    assert bob_client.post(url, {"column": "analyzing"}, headers=HTMX).status_code == 404


def test_moves_answer_get_with_405(bob_client, make):
    ticket = make("Mover")
    assert bob_client.get(reverse("board:ticket-move", args=[ticket.board.slug, ticket.pk])).status_code == 405


def test_without_htmx_a_move_redirects_back_with_a_message_and_the_filters(bob_client, make, board):
    ticket = make("Mover")
    url = reverse("board:ticket-move", args=[board.slug, ticket.pk]) + "?priority=MEDIUM"
    response = bob_client.post(url, {"column": "analyzing"})
    assert response.status_code == 302
    assert response["Location"] == reverse("board:detail", args=[board.slug]) + "?priority=MEDIUM"
    page = bob_client.get(response["Location"])
    assert "“Mover” moved to Analyzing (Requirements Analysis)." in page.content.decode()

    refused = bob_client.post(url, {"column": "done"})
    page = bob_client.get(refused["Location"])
    assert "Requirements Analysis cannot move to Done" in page.content.decode()


def test_a_move_costs_the_same_queries_in_short_and_long_columns(bob_client, make, board):
    def measure(ticket, column, neighbour):
        with CaptureQueriesContext(connection) as queries:
            response = move(bob_client, ticket, column=column, previous=neighbour.pk)
        assert response.status_code == 200
        return len(queries)

    anchors = [make(f"Build {n}", "PHASE_IMPLEMENTATION") for n in range(2)]
    few = measure(make("A", "PHASE_DESIGN"), "building", anchors[0])
    for n in range(6):
        make(f"More {n}", "PHASE_IMPLEMENTATION")
    many = measure(make("B", "PHASE_DESIGN"), "building", anchors[1])
    assert few == many
