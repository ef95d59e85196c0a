"""The agent API for boards: the agent's boards, and one board's columns, counts, limits and tickets."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from board.models import Board, Event, Task, Ticket
from board.selectors import PAGE_SIZE
from board.services import (
    POSITION_GAP,
    agent_create,
    agent_revoke,
    task_claim,
    task_complete,
    task_create,
    ticket_create,
)

from .agent_api import AgentClient

pytestmark = pytest.mark.django_db

COLUMN_KEYS = ["backlog", "analyzing", "building", "testing", "deploying", "done", "blocked"]
CARD_FIELDS = {
    "id",
    "title",
    "priority",
    "phase",
    "is_blocked",
    "blocked_reason",
    "position",
    "version",
    "tasks_done",
    "tasks_total",
    "open_discoveries",
}


@pytest.fixture
def charlies_board(workflow, charlie):
    board = Board.objects.create(name="Charlie's board", slug="charlies-board", workflow=workflow)
    board.members.add(charlie)
    ticket_create(board=board, title="Charlie's ticket", actor=charlie)
    return board


def bulk_tickets(board, phase, count, start=0):
    """Tickets written straight to the table: the board is only read here, so no events are needed."""
    Ticket.objects.bulk_create(
        Ticket(board=board, title=f"Ticket {n}", phase=phase, position=(n + 1) * POSITION_GAP)
        for n in range(start, start + count)
    )


def column(data, key):
    return next(col for col in data["columns"] if col["key"] == key)


# The list


def test_the_list_has_the_agents_boards_with_their_ticket_counts(client, board, workflow, alice, charlies_board):
    second = Board.objects.create(name="A second board", slug="second", workflow=workflow)
    ticket_create(board=board, title="One", actor=alice)
    ticket_create(board=board, title="Two", actor=alice)
    _, token = agent_create(name="both", boards=[board, second], actor=alice)
    response = AgentClient(client, token).get("/boards")
    assert response.status_code == 200
    assert response.json() == [
        {"slug": "second", "name": "A second board", "tickets": 0},
        {"slug": "alices-board", "name": "Alice's board", "tickets": 2},
    ]


# One board


def test_a_board_has_its_columns_in_order_with_limits_and_cards(api, board, alice, phase):
    ticket = ticket_create(board=board, title="Build <it>", actor=alice, phase="PHASE_IMPLEMENTATION", priority="HIGH")
    ticket_create(board=board, title="Analyse", actor=alice, phase="PHASE_REQUIREMENTS")
    ticket_create(board=board, title="Design", actor=alice, phase="PHASE_DESIGN")
    response = api.get("/boards/alices-board")
    assert response.status_code == 200
    data = response.json()
    assert (data["slug"], data["name"], data["workflow"]) == ("alices-board", "Alice's board", "software_development")
    assert data["last_event_id"] == Event.objects.filter(board=board).latest("id").pk
    assert [col["key"] for col in data["columns"]] == COLUMN_KEYS
    analyzing = column(data, "analyzing")
    assert (analyzing["name"], analyzing["phases"], analyzing["count"]) == (
        "Analyzing",
        ["PHASE_REQUIREMENTS", "PHASE_DESIGN"],
        2,
    )
    assert (analyzing["wip_limit"], analyzing["wip_policy"], analyzing["wip_state"]) == (5, "warn", "ok")
    assert [card["phase"] for card in analyzing["tickets"]] == ["PHASE_REQUIREMENTS", "PHASE_DESIGN"]
    building = column(data, "building")
    assert building["count"] == 1 and building["has_more"] is False
    (card,) = building["tickets"]
    assert set(card) == CARD_FIELDS
    assert card == {
        "id": ticket.pk,
        "title": "Build <it>",
        "priority": "HIGH",
        "phase": "PHASE_IMPLEMENTATION",
        "is_blocked": False,
        "blocked_reason": "",
        "position": ticket.position,
        "version": 1,
        "tasks_done": 0,
        "tasks_total": 0,
        "open_discoveries": 0,
    }
    backlog = column(data, "backlog")
    assert (backlog["count"], backlog["tickets"], backlog["wip_limit"], backlog["wip_state"]) == (0, [], None, "ok")


def test_a_board_reports_the_wip_state_of_each_column(api, board, phase):
    bulk_tickets(board, phase("PHASE_DEPLOYMENT"), 3)  # Deploying: limit 3, block
    bulk_tickets(board, phase("PHASE_TESTING"), 9)  # Testing: limit 8, block; over only by force or a reload
    data = api.get("/boards/alices-board").json()
    deploying, testing = column(data, "deploying"), column(data, "testing")
    assert (deploying["count"], deploying["wip_limit"], deploying["wip_policy"], deploying["wip_state"]) == (
        3,
        3,
        "block",
        "at",
    )
    assert (testing["count"], testing["wip_state"]) == (9, "over")


def test_a_card_counts_its_tasks(api, board, alice, builder):
    ticket = ticket_create(board=board, title="Work", actor=alice)
    for n in range(3):
        task_create(ticket=ticket, title=f"Task {n}", actor=alice)
    task_complete(task=task_claim(agent=builder[0]), agent=builder[0])
    (card,) = column(api.get("/boards/alices-board").json(), "backlog")["tickets"]
    assert (card["tasks_done"], card["tasks_total"]) == (1, 3)


def test_a_long_column_shows_its_first_page_and_says_there_is_more(api, board, phase):
    bulk_tickets(board, phase("PHASE_BACKLOG"), PAGE_SIZE + 5)
    backlog = column(api.get("/boards/alices-board").json(), "backlog")
    assert backlog["count"] == PAGE_SIZE + 5
    assert len(backlog["tickets"]) == PAGE_SIZE and backlog["has_more"] is True
    assert [card["title"] for card in backlog["tickets"][:2]] == ["Ticket 0", "Ticket 1"]


def test_card_titles_come_back_exactly_as_stored(api, board, alice):
    title = "<script>alert(1)</script> & “x” 😀"
    ticket_create(board=board, title=title, actor=alice)
    assert column(api.get("/boards/alices-board").json(), "backlog")["tickets"][0]["title"] == title


def test_the_board_costs_the_same_queries_with_10_or_200_tickets(api, board, workflow, alice):
    phases = list(workflow.phases.in_order())

    def spread(count, start):
        for n in range(count):
            bulk_tickets(board, phases[n % len(phases)], 1, start=start + n)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert api.get("/boards/alices-board").status_code == 200
        return len(captured)

    spread(10, 0)
    Task.objects.bulk_create(Task(ticket=t, phase=t.phase, title="t") for t in Ticket.objects.all())
    few = queries()
    spread(190, 10)
    assert Ticket.objects.count() == 200
    assert queries() == few


def test_another_boards_page_is_not_found(api, charlies_board):
    for slug in ("charlies-board", "no-such-board"):
        response = api.get(f"/boards/{slug}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"No board '{slug}' among this agent's boards."}


@pytest.mark.parametrize("path", ["/boards", "/boards/alices-board"])
def test_the_board_endpoints_need_a_valid_token(client, builder, alice, path):
    for token in (None, "omoi_wrong", "Bearer omoi_x"):
        response = AgentClient(client, token).get(path)
        assert response.status_code == 401
        assert response.json() == {"detail": "Unauthorized"}
    api = AgentClient(client, builder[1])
    assert api.get(path).status_code == 200
    agent_revoke(agent=builder[0], actor=alice)
    assert api.get(path).status_code == 401
