"""The agent API for tickets: create, read with tasks, history and comments, transition, comment."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from board.models import Board, Event, PhaseHistory, Ticket, TicketComment
from board.services import agent_revoke, task_claim, task_create, ticket_comment, ticket_create

from .agent_api import AgentClient, messages_of, row_counts

pytestmark = pytest.mark.django_db

TICKET_FIELDS = {
    "id",
    "board",
    "title",
    "description",
    "priority",
    "phase",
    "is_blocked",
    "blocked_reason",
    "version",
    "created_at",
    "updated_at",
}
# Text an agent may send that a careless page would run, mangle or trim: it must come back as sent.
AWKWARD_TEXT = "<script>alert('x')</script> & <b>bold</b>\n\ttabbed “quotes” — 日本語 😀 \\u0000 literally"


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")


@pytest.fixture
def charlies_ticket(workflow, charlie):
    """A ticket on a board Alice's agents are not on, with the same workflow."""
    board = Board.objects.create(name="Charlie's board", slug="charlies-board", workflow=workflow)
    board.members.add(charlie)
    return ticket_create(board=board, title="Charlie's ticket", actor=charlie)


# Creating


def test_an_agent_creates_a_ticket_in_the_first_phase(api, board):
    response = api.post("/tickets", {"board": "alices-board", "title": "Export as CSV"})
    assert response.status_code == 201
    data = response.json()
    assert set(data) == TICKET_FIELDS
    ticket = Ticket.objects.get(pk=data["id"])
    assert (data["board"], data["phase"], data["priority"], data["version"]) == (
        "alices-board",
        "PHASE_BACKLOG",
        "MEDIUM",
        1,
    )
    assert (ticket.board, ticket.phase.key, ticket.created_by) == (board, "PHASE_BACKLOG", None)
    assert ticket.history.get().actor == "agent:builder"
    event = Event.objects.get(type="ticket.created")
    assert (event.entity_id, event.actor, event.payload["phase"]) == (str(ticket.pk), "agent:builder", "PHASE_BACKLOG")


def test_a_ticket_is_created_in_the_phase_and_priority_given(api):
    body = {"board": "alices-board", "title": "Hotfix", "phase": "PHASE_IMPLEMENTATION", "priority": "CRITICAL"}
    data = api.post("/tickets", body).json()
    assert (data["phase"], data["priority"]) == ("PHASE_IMPLEMENTATION", "CRITICAL")


def test_ticket_text_is_stored_and_returned_exactly_as_sent(api):
    response = api.post("/tickets", {"board": "alices-board", "title": "<i>T</i> 😀", "description": AWKWARD_TEXT})
    assert response.status_code == 201
    assert (response.json()["title"], response.json()["description"]) == ("<i>T</i> 😀", AWKWARD_TEXT)
    ticket = Ticket.objects.get(pk=response.json()["id"])
    assert ticket.description == AWKWARD_TEXT
    assert api.get(f"/tickets/{ticket.pk}").json()["description"] == AWKWARD_TEXT


def test_a_ticket_on_a_board_the_agent_is_not_on_is_not_found(api, charlies_ticket):
    before = row_counts()
    response = api.post("/tickets", {"board": "charlies-board", "title": "Sneaky"})
    assert response.status_code == 404
    assert response.json() == {"detail": "No board 'charlies-board' among this agent's boards."}
    assert row_counts() == before


def test_a_ticket_in_a_full_blocking_column_is_refused(api, board, alice):
    for n in range(3):  # Deploying blocks at 3
        ticket_create(board=board, title=f"Release {n}", actor=alice, phase="PHASE_DEPLOYMENT")
    before = row_counts()
    response = api.post("/tickets", {"board": "alices-board", "title": "One more", "phase": "PHASE_DEPLOYMENT"})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "phase"], "msg": "Deploying is full (3/3).", "type": "value_error"}
    ]
    assert row_counts() == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"board": None}, "Field required"),
        ({"title": None}, "Field required"),
        ({"title": ""}, "String should have at least 1 character"),
        ({"title": "  \n "}, "This field cannot be blank."),
        ({"title": "x" * 201}, "String should have at most 200 characters"),
        ({"title": 42}, "Input should be a valid string"),
        ({"board": ""}, "String should have at least 1 character"),
        ({"board": "b" * 101}, "String should have at most 100 characters"),
        ({"description": "x" * 20_001}, "String should have at most 20000 characters"),
        ({"description": {"text": "x"}}, "Input should be a valid string"),
        ({"priority": "URGENT"}, "Input should be 'LOW', 'MEDIUM', 'HIGH' or 'CRITICAL'"),
        ({"priority": None}, "Input should be 'LOW', 'MEDIUM', 'HIGH' or 'CRITICAL'"),
        ({"phase": "PHASE_NOPE"}, "Unknown phase 'PHASE_NOPE' in workflow Software Development."),
        ({"phase": "x" * 65}, "String should have at most 64 characters"),
    ],
)
def test_ticket_creation_refuses_bad_bodies(api, changes, message):
    body = {"board": "alices-board", "title": "Fine", **changes}
    if changes in ({"board": None}, {"title": None}):
        body = {name: value for name, value in body.items() if value is not None}
    before = row_counts()
    response = api.post("/tickets", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response)), response.json()
    assert row_counts() == before


# Reading


def test_a_ticket_is_read_with_its_tasks_history_and_comments(api, ticket, builder, alice):
    first = task_create(ticket=ticket, title="First", actor=alice)
    second = task_create(ticket=ticket, title="Second", actor=alice, phase="PHASE_TESTING", dependencies=[first])
    task_claim(agent=builder[0])
    ticket_comment(ticket=ticket, body="Started <b>now</b>", actor=builder[0])
    ticket_comment(ticket=ticket, body="Second thought", actor=alice)

    response = api.get(f"/tickets/{ticket.pk}")
    assert response.status_code == 200
    data = response.json()
    assert set(data) == TICKET_FIELDS | {"tasks", "history", "comments"}
    assert [(t["id"], t["phase"], t["status"], t["dependencies"]) for t in data["tasks"]] == [
        (first.pk, "PHASE_IMPLEMENTATION", "assigned", []),
        (second.pk, "PHASE_TESTING", "pending", [first.pk]),
    ]
    assert data["tasks"][0]["assigned_agent"] == "builder"
    assert [(h["from_phase"], h["to_phase"], h["kind"], h["actor"]) for h in data["history"]] == [
        ("", "PHASE_IMPLEMENTATION", "normal", "alice")
    ]
    assert [(c["body"], c["author"], c["ticket_id"]) for c in data["comments"]] == [
        ("Started <b>now</b>", "agent:builder", ticket.pk),
        ("Second thought", "alice", ticket.pk),
    ]


def test_reading_a_ticket_costs_the_same_queries_with_more_tasks_and_comments(api, ticket, alice):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert api.get(f"/tickets/{ticket.pk}").status_code == 200
        return len(captured)

    task_create(ticket=ticket, title="Only", actor=alice)
    few = queries()
    previous = None
    for n in range(10):
        previous = task_create(
            ticket=ticket, title=f"Task {n}", actor=alice, dependencies=[previous] if previous else ()
        )
        ticket_comment(ticket=ticket, body=f"Comment {n}", actor=alice)
    assert queries() == few


def test_another_boards_ticket_is_not_found(api, charlies_ticket):
    for ticket_id in (charlies_ticket.pk, 999_999, 10**30):
        response = api.get(f"/tickets/{ticket_id}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"No ticket {ticket_id} on this agent's boards."}


# Transitions


def test_an_allowed_transition_moves_the_ticket(api, ticket):
    response = api.post(f"/tickets/{ticket.pk}/transition", {"to_phase": "PHASE_TESTING", "reason": "Ready to test"})
    assert response.status_code == 200
    data = response.json()
    assert set(data) == TICKET_FIELDS
    assert (data["phase"], data["version"]) == ("PHASE_TESTING", ticket.version + 1)
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_TESTING"
    entry = ticket.history.order_by("id").last()
    assert (entry.from_key, entry.to_key, entry.kind, entry.reason, entry.actor) == (
        "PHASE_IMPLEMENTATION",
        "PHASE_TESTING",
        "normal",
        "Ready to test",
        "agent:builder",
    )
    event = Event.objects.get(type="ticket.transitioned")
    assert (event.payload["from"], event.payload["to"], event.actor) == (
        "PHASE_IMPLEMENTATION",
        "PHASE_TESTING",
        "agent:builder",
    )
    history = api.get(f"/tickets/{ticket.pk}").json()["history"]
    assert [h["to_phase"] for h in history] == ["PHASE_IMPLEMENTATION", "PHASE_TESTING"]


@pytest.mark.parametrize(
    ("to_phase", "detail"),
    [
        (
            "PHASE_DONE",
            "Implementation cannot move to Done; from Implementation a ticket may move to: Testing, Blocked.",
        ),
        ("PHASE_IMPLEMENTATION", "The ticket is already in Implementation."),
        ("PHASE_NOPE", "Unknown phase 'PHASE_NOPE' in workflow Software Development."),
    ],
)
def test_a_refused_transition_is_a_conflict_with_the_services_reason(api, ticket, to_phase, detail):
    before = row_counts()
    response = api.post(f"/tickets/{ticket.pk}/transition", {"to_phase": to_phase})
    assert response.status_code == 409
    assert response.json() == {"detail": detail}
    ticket.refresh_from_db()
    assert (ticket.phase.key, ticket.version) == ("PHASE_IMPLEMENTATION", 1)
    assert row_counts() == before


def test_a_transition_into_a_full_blocking_column_is_a_conflict(api, board, alice):
    for n in range(3):
        ticket_create(board=board, title=f"Release {n}", actor=alice, phase="PHASE_DEPLOYMENT")
    tested = ticket_create(board=board, title="Tested", actor=alice, phase="PHASE_TESTING")
    response = api.post(f"/tickets/{tested.pk}/transition", {"to_phase": "PHASE_DEPLOYMENT"})
    assert response.status_code == 409
    assert response.json() == {"detail": "Deploying is full (3/3)."}
    tested.refresh_from_db()
    assert tested.phase.key == "PHASE_TESTING"


def test_transitioning_another_boards_ticket_is_not_found(api, charlies_ticket):
    response = api.post(f"/tickets/{charlies_ticket.pk}/transition", {"to_phase": "PHASE_REQUIREMENTS"})
    assert response.status_code == 404
    assert response.json() == {"detail": f"No ticket {charlies_ticket.pk} on this agent's boards."}
    charlies_ticket.refresh_from_db()
    assert charlies_ticket.phase.key == "PHASE_BACKLOG"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Field required"),
        ({"to_phase": ""}, "String should have at least 1 character"),
        ({"to_phase": "P" * 65}, "String should have at most 64 characters"),
        ({"to_phase": ["PHASE_TESTING"]}, "Input should be a valid string"),
        ({"to_phase": "PHASE_TESTING", "reason": "r" * 20_001}, "String should have at most 20000 characters"),
        ({"to_phase": "PHASE_TESTING", "reason": 5}, "Input should be a valid string"),
    ],
)
def test_transition_refuses_bad_bodies(api, ticket, body, message):
    response = api.post(f"/tickets/{ticket.pk}/transition", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response))
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_IMPLEMENTATION"


def test_an_agent_cannot_force_a_transition(api, ticket):
    # There is no force field: an unknown field is ignored and the rules still apply.
    response = api.post(f"/tickets/{ticket.pk}/transition", {"to_phase": "PHASE_DONE", "force": True, "reason": "!"})
    assert response.status_code == 409
    assert PhaseHistory.objects.filter(kind__in=["jump", "override"]).count() == 0


# Comments


def test_a_comment_is_stored_exactly_as_sent_and_announced(api, ticket):
    body = "<script>alert('x')</script> see <a href='javascript:x'>this</a> 😀"
    response = api.post(f"/tickets/{ticket.pk}/comments", {"body": body})
    assert response.status_code == 201
    data = response.json()
    assert set(data) == {"id", "ticket_id", "body", "author", "created_at"}
    assert (data["body"], data["author"], data["ticket_id"]) == (body, "agent:builder", ticket.pk)
    assert TicketComment.objects.get().body == body
    assert api.get(f"/tickets/{ticket.pk}").json()["comments"][0]["body"] == body
    event = Event.objects.get(type="ticket.commented")
    assert (event.payload["comment"], event.actor) == (data["id"], "agent:builder")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Field required"),
        ({"body": ""}, "String should have at least 1 character"),
        ({"body": " \n\t "}, "This field cannot be blank."),
        ({"body": "x" * 20_001}, "String should have at most 20000 characters"),
        ({"body": ["x"]}, "Input should be a valid string"),
    ],
)
def test_a_comment_refuses_bad_bodies(api, ticket, body, message):
    before = row_counts()
    response = api.post(f"/tickets/{ticket.pk}/comments", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response))
    assert row_counts() == before


def test_commenting_on_another_boards_ticket_is_not_found(api, charlies_ticket):
    response = api.post(f"/tickets/{charlies_ticket.pk}/comments", {"body": "Hello"})
    assert response.status_code == 404
    assert response.json() == {"detail": f"No ticket {charlies_ticket.pk} on this agent's boards."}
    assert not TicketComment.objects.exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/tickets"),
        ("get", "/tickets/{ticket}"),
        ("post", "/tickets/{ticket}/transition"),
        ("post", "/tickets/{ticket}/comments"),
    ],
)
def test_the_ticket_endpoints_need_a_valid_token(client, ticket, builder, alice, method, path):
    agent_revoke(agent=builder[0], actor=alice)
    before = row_counts()
    for token in (None, "omoi_wrong", builder[1]):
        response = getattr(AgentClient(client, token), method)(path.format(ticket=ticket.pk))
        assert response.status_code == 401
        assert response.json() == {"detail": "Unauthorized"}
    assert row_counts() == before
