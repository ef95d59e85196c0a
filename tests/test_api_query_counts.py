"""Every agent endpoint makes a fixed number of statements, whatever the size of the board.

Each endpoint is called through the HTTP API on a board of 5 tickets and tasks
and on one of 60, and must make exactly the statements listed here on both.
They are counted inside the test's transaction: a service's own transaction
shows as a SAVEPOINT and a RELEASE, which a request outside a test opens as
BEGIN and ends with COMMIT. Where PostgreSQL needs more than SQLite (a claim
locks the agent's row and reads the head of the queue), both are listed.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from board.models import Task
from board.services import agent_create, task_claim, task_create, ticket_create
from phases.models import Workflow

from .agent_api import AgentClient

pytestmark = pytest.mark.django_db

SIZES = [5, 60]
# (SQLite, PostgreSQL) where they differ.
STATEMENTS = {
    # Token; the service's savepoint around: the claim's update (which returns the task's dependencies), the
    # agent's status, the event (PostgreSQL first locks the agent's row and reads the head of the queue).
    "claim": (6, 8),
    # The board among the agent's, then as above.
    "claim on a board": (7, 9),
    # Token; savepoint: the claim's update (it takes nothing: the agent holds a task), the task in hand (with
    # its dependencies).
    "claim, holding a task": (5, 7),
    # Token; savepoint: the claim's update, the task in hand (none). PostgreSQL finds the queue empty first.
    "claim, nothing to do": (5, 6),
    # Token; the middleware's savepoint: the key recorded (in a savepoint of its own), the claim, the answer stored.
    "claim with an Idempotency-Key": (12, 14),
    # Token; the endpoint's savepoint: the task, locked, with its dependencies; the update; the event.
    "start": 6,
    # As start, and the agent made idle.
    "complete": 7,
    "fail": 7,
    # Token; the ticket; the insert, the event (no savepoint: see task_create).
    "task create": 4,
    # Token; the source task; savepoint: the discovery, the task, the branch, their three events in one insert
    # (the answer is made from what was written).
    "discovery branch": 8,
    # Token; the board; the column showing the first phase, locked; its phases with their last cards' positions;
    # the ticket, its history, the event.
    "ticket create": 9,
    # Token; the ticket; its tasks and their dependencies; its history; its comments.
    "ticket get": 6,
    # Token; the ticket; the move: the columns of the target phase and of the ticket's phase, locked with the
    # phase the ticket is in; the ticket locked with the phase it leaves and whether it may enter the target;
    # the column's phases with their cards' count and last position (the column has a WIP limit); the ticket,
    # its history, the event.
    "ticket transition": 10,
    # Token; the ticket; the comment, the event.
    "comment": 6,
    # Token; the ticket; the gate's facts.
    "gate": 9,
    # Token; the ticket; locked, read with its workflow, the agent on its board; the result, the event.
    "result submit": 9,
    # Token; the board; its last event; its columns and their phases; counts; the first cards; their tasks.
    "board get": 8,
    # Token; the phases; their transitions.
    "phases": 3,
    # Token; back online? (no); the heartbeat; the answer: the agent, its boards.
    "heartbeat": 7,
}


def expected(name):
    counts = STATEMENTS[name]
    if isinstance(counts, int):
        return counts
    return counts[1] if connection.vendor == "postgresql" else counts[0]


@pytest.fixture(params=SIZES, ids=[f"{size} tickets" for size in SIZES])
def world(request, board, alice):
    """A board of `size` tickets in implementation, each with a task, and Builder, an agent on it."""
    size = request.param
    tickets = [
        ticket_create(board=board, title=f"Ticket {n}", actor=alice, phase="PHASE_IMPLEMENTATION") for n in range(size)
    ]
    tasks = [task_create(ticket=ticket, title=f"Task {n}", actor=alice) for n, ticket in enumerate(tickets)]
    agent, token = agent_create(name="builder", boards=[board], actor=alice)
    return {"board": board, "tickets": tickets, "tasks": tasks, "agent": agent, "token": token}


@pytest.fixture
def api(client, world):
    return AgentClient(client, world["token"])


@pytest.fixture
def held(world):
    """The task Builder claimed."""
    return task_claim(agent=world["agent"])


def counted(name, call, status):
    """`call()`'s response, once it answered `status` with exactly the statements listed for `name`."""
    with CaptureQueriesContext(connection) as queries:
        response = call()
    assert response.status_code == status, response.content
    statements = [query["sql"] for query in queries]
    assert len(statements) == expected(name), "\n".join(statements)
    return response


# Tasks


def test_a_claim(api):
    counted("claim", lambda: api.post("/tasks/next", {}), 200)


def test_a_claim_on_a_board(api, world):
    counted("claim on a board", lambda: api.post("/tasks/next", {"board": world["board"].slug}), 200)


def test_a_claim_holding_a_task(api, held):
    assert counted("claim, holding a task", lambda: api.post("/tasks/next", {}), 200).json()["id"] == held.pk


def test_a_claim_with_nothing_to_do(api):
    Task.objects.update(status=Task.Status.CANCELLED)
    counted("claim, nothing to do", lambda: api.post("/tasks/next", {}), 204)


def test_a_claim_with_an_idempotency_key(api):
    counted("claim with an Idempotency-Key", lambda: api.post("/tasks/next", {}, key="claim-1"), 200)


def test_a_start(api, held):
    counted("start", lambda: api.post(f"/tasks/{held.pk}/start", {"attempt": held.attempt}), 200)


def test_a_completion(api, held):
    counted("complete", lambda: api.post(f"/tasks/{held.pk}/complete", {"attempt": held.attempt}), 200)


def test_a_failure(api, held):
    counted("fail", lambda: api.post(f"/tasks/{held.pk}/fail", {"error": "It broke."}), 200)


def test_a_task_created(api, world):
    body = {"ticket_id": world["tickets"][0].pk, "title": "More work"}
    counted("task create", lambda: api.post("/tasks", body), 201)


def test_a_discovery_branch(client, world, held):
    body = {"source_task_id": held.pk, "discovery_type": "bug", "description": "Empty passwords pass"}
    counted("discovery branch", lambda: AgentClient(client, world["token"]).post("/discoveries/branch", body), 201)


# Tickets


def test_a_ticket_created(api, world):
    counted("ticket create", lambda: api.post("/tickets", {"board": world["board"].slug, "title": "New"}), 201)


def test_a_ticket_read(api, world):
    counted("ticket get", lambda: api.get(f"/tickets/{world['tickets'][0].pk}"), 200)


def test_a_transition(api, world):
    path = f"/tickets/{world['tickets'][0].pk}/transition"
    counted("ticket transition", lambda: api.post(path, {"to_phase": "PHASE_TESTING"}), 200)


def test_a_comment(api, world):
    path = f"/tickets/{world['tickets'][0].pk}/comments"
    counted("comment", lambda: api.post(path, {"body": "Looks good."}), 201)


def test_a_gate(api, world):
    counted("gate", lambda: api.get(f"/tickets/{world['tickets'][0].pk}/gate"), 200)


def test_a_result_submitted(api, world):
    Workflow.objects.filter(pk=world["board"].workflow_id).update(has_result=True)
    path = f"/tickets/{world['tickets'][0].pk}/result"
    counted("result submit", lambda: api.post(path, {"summary": "It is 42."}), 201)


# Boards, phases, agents


def test_a_board_read(api, world):
    counted("board get", lambda: api.get(f"/boards/{world['board'].slug}"), 200)


def test_the_phases(api):
    counted("phases", lambda: api.get("/phases"), 200)


def test_a_heartbeat(api):
    counted("heartbeat", lambda: api.post("/agents/me/heartbeat", {}), 200)
