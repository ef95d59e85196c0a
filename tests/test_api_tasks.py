"""The agent API for tasks: claim the next one, create one in any phase, start, complete and fail."""

import threading
import time

import pytest
from django.db import connection, connections
from django.test import Client

from board.models import Agent, Board, Event, Task
from board.services import agent_create, agent_revoke, task_claim, task_create, ticket_create

from .agent_api import AgentClient, messages_of, row_counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")


@pytest.fixture
def builder(board, alice):
    return agent_create(name="builder", boards=[board], actor=alice, capabilities=["python"])


@pytest.fixture
def task(ticket, alice):
    return task_create(ticket=ticket, title="Write the code", actor=alice, description="Use <b>the</b> design.")


@pytest.fixture
def charlies_board(workflow, charlie):
    """A board Alice's agents are not on, with the same workflow, a ticket and a task."""
    board = Board.objects.create(name="Charlie's board", slug="charlies-board", workflow=workflow)
    board.members.add(charlie)
    ticket = ticket_create(board=board, title="Charlie's ticket", actor=charlie)
    task_create(ticket=ticket, title="Charlie's task", actor=charlie)
    return board


def held(task, builder):
    """`task`, claimed by the builder."""
    assert task_claim(agent=builder[0]) == task
    return task


TASK_FIELDS = {
    "id",
    "ticket_id",
    "board",
    "phase",
    "task_type",
    "title",
    "description",
    "status",
    "priority",
    "score",
    "dependencies",
    "required_capabilities",
    "assigned_agent",
    "retry_count",
    "attempt",
    "max_retries",
    "timeout_seconds",
    "next_attempt_at",
    "result",
    "artifacts",
    "completed_criteria",
    "error",
    "parent_task_id",
    "created_at",
    "updated_at",
}


# Claiming


def test_next_hands_out_the_best_ready_task(api, task, ticket, builder):
    response = api.post("/tasks/next", {})
    assert response.status_code == 200
    data = response.json()
    assert set(data) == TASK_FIELDS
    assert data["id"] == task.pk
    assert (data["status"], data["assigned_agent"], data["board"]) == ("assigned", "builder", "alices-board")
    assert (data["phase"], data["ticket_id"], data["description"]) == (
        "PHASE_IMPLEMENTATION",
        ticket.pk,
        "Use <b>the</b> design.",
    )
    task.refresh_from_db()
    assert (task.status, task.assigned_agent_id) == ("assigned", builder[0].pk)
    assert Agent.objects.get(pk=builder[0].pk).status == "busy"
    event = Event.objects.get(type="task.assigned")
    assert (event.entity_id, event.actor) == (str(task.pk), "agent:builder")


def test_next_answers_204_when_no_task_is_ready(api, ticket):
    before = row_counts()
    response = api.post("/tasks/next", {})
    assert response.status_code == 204
    assert response.content == b""
    assert row_counts() == before


def test_next_goes_by_score_then_age(api, ticket, alice):
    low = task_create(ticket=ticket, title="Low", actor=alice, priority="LOW")
    top = task_create(ticket=ticket, title="Top", actor=alice, score=9)
    high = task_create(ticket=ticket, title="High", actor=alice, priority="HIGH")
    claimed = []
    for _ in range(3):
        data = api.post("/tasks/next", {}).json()
        claimed.append(data["id"])
        assert api.post(f"/tasks/{data['id']}/complete", {"attempt": data["attempt"]}).status_code == 200
    assert claimed == [top.pk, high.pk, low.pk]
    assert api.post("/tasks/next", {}).status_code == 204


def test_next_answers_the_task_the_agent_holds_until_it_reports(api, ticket, alice, task):
    task_create(ticket=ticket, title="Another", actor=alice)
    first = api.post("/tasks/next", {}).json()
    again = api.post("/tasks/next", {}).json()
    assert (again["id"], again["attempt"], again["status"]) == (first["id"], 1, "assigned")
    assert Task.objects.filter(status="assigned").count() == 1
    assert Event.objects.filter(type="task.assigned").count() == 1
    api.post(f"/tasks/{first['id']}/complete", {"attempt": 1})
    assert api.post("/tasks/next", {}).json()["id"] != first["id"]


def test_next_on_one_board_claims_only_from_it(client, board, workflow, alice, task):
    second = Board.objects.create(name="Second board", slug="second", workflow=workflow)
    other = task_create(ticket=ticket_create(board=second, title="Elsewhere", actor=alice), title="There", actor=alice)
    _, token = agent_create(name="both", boards=[board, second], actor=alice)
    api = AgentClient(client, token)
    assert api.post("/tasks/next", {"board": "second"}).json()["id"] == other.pk
    # One task at a time: the one held on the second board is the answer there, and nothing elsewhere.
    assert api.post("/tasks/next", {"board": "second"}).json()["id"] == other.pk
    assert api.post("/tasks/next", {"board": "alices-board"}).status_code == 204
    assert api.post(f"/tasks/{other.pk}/complete", {}).status_code == 200
    assert api.post("/tasks/next", {"board": "second"}).status_code == 204
    assert api.post("/tasks/next", {"board": "alices-board"}).json()["id"] == task.pk


def test_next_on_a_board_the_agent_is_not_on_is_not_found(api, charlies_board):
    # The board is looked up among the agent's own boards, so task_claim's permission check is not reached.
    response = api.post("/tasks/next", {"board": "charlies-board"})
    assert response.status_code == 404
    assert response.json() == {"detail": "No board 'charlies-board' among this agent's boards."}
    assert not Task.objects.filter(status="assigned").exists()


def test_a_claim_the_service_forbids_is_answered_403(api, charlies_board, monkeypatch):
    # Should a lookup ever hand task_claim a board the agent is not on, its PermissionDenied becomes a 403.
    monkeypatch.setattr("board.api.tasks.agent_board", lambda agent, slug: charlies_board)
    response = api.post("/tasks/next", {"board": "charlies-board"})
    assert response.status_code == 403
    assert response.json() == {"detail": "Agent builder is not on board charlies-board."}


def test_next_never_hands_out_another_boards_task(api, charlies_board):
    assert api.post("/tasks/next", {}).status_code == 204


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"board": 3}, "Input should be a valid string"),
        ({"board": "x" * 101}, "String should have at most 100 characters"),
        ({"board": ["alices-board"]}, "Input should be a valid string"),
    ],
)
def test_next_refuses_a_bad_board(api, task, body, message):
    response = api.post("/tasks/next", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response))
    task.refresh_from_db()
    assert task.status == "pending"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_agents_racing_through_the_api_get_each_task_once(board, alice):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")
    ticket = ticket_create(board=board, title="Many tasks", actor=alice)
    tasks = [task_create(ticket=ticket, title=f"Task {n}", actor=alice) for n in range(40)]
    tokens = [agent_create(name=f"racer{n}", boards=[board], actor=alice)[1] for n in range(8)]
    claimed, errors = [], []
    start = threading.Barrier(len(tokens))

    def work(token):
        api = AgentClient(Client(), token)
        try:
            start.wait()
            while (response := api.post("/tasks/next", {})).status_code == 200:
                claimed.append((response.json()["id"], response.json()["assigned_agent"]))
                done = api.post(f"/tasks/{response.json()['id']}/complete", {"attempt": response.json()["attempt"]})
                assert done.status_code == 200, done.content
            assert response.status_code == 204, response.content
        except Exception as exc:  # reported below, in the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    began = time.monotonic()
    threads = [threading.Thread(target=work, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert time.monotonic() - began < 5
    ids = [pk for pk, _ in claimed]
    assert sorted(ids) == sorted(task.pk for task in tasks)
    holders = dict(Task.objects.values_list("pk", "assigned_agent__name"))
    assert all(holders[pk] == name for pk, name in claimed)
    assert Event.objects.filter(type="task.assigned").count() == len(tasks)
    assert set(Task.objects.values_list("status", "attempt")) == {("completed", 1)}


# Creating


def test_an_agent_creates_a_task_in_the_tickets_phase_by_default(api, ticket, builder):
    response = api.post("/tasks", {"ticket_id": ticket.pk, "title": "Write the migration"})
    assert response.status_code == 201
    data = response.json()
    assert set(data) == TASK_FIELDS
    task = Task.objects.get(pk=data["id"])
    assert (task.phase.key, task.priority, task.created_by) == ("PHASE_IMPLEMENTATION", "MEDIUM", "agent:builder")
    assert data["score"] == pytest.approx(2.0, abs=0.001)  # the priority's weight, aged a moment
    assert (data["phase"], data["status"], data["assigned_agent"]) == ("PHASE_IMPLEMENTATION", "pending", None)
    event = Event.objects.get(type="task.created")
    assert (event.entity_id, event.actor, event.payload["phase"]) == (str(task.pk), "agent:builder", task.phase.key)


def test_an_agent_may_create_a_task_in_any_phase_of_the_workflow(api, ticket, workflow):
    keys = list(workflow.phases.in_order().values_list("key", flat=True))
    for key in keys:
        response = api.post("/tasks", {"ticket_id": ticket.pk, "title": f"Work in {key}", "phase": key})
        assert response.status_code == 201, response.content
        assert response.json()["phase"] == key
    assert sorted(Task.objects.values_list("phase__key", flat=True)) == sorted(keys)
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_IMPLEMENTATION"  # tasks do not move their ticket


def test_a_task_is_created_with_every_field_given(api, ticket, alice):
    first = task_create(ticket=ticket, title="First", actor=alice)
    parent = task_create(ticket=ticket, title="Parent", actor=alice)
    body = {
        "ticket_id": ticket.pk,
        "title": "Second <i>step</i>",
        "phase": "PHASE_TESTING",
        "description": "Line one\nline two: <script>alert(1)</script> ✓",
        "task_type": "review",
        "priority": "CRITICAL",
        "score": 7.5,
        "dependencies": [first.pk, first.pk],
        "required_capabilities": ["qa", "qa", "python"],
        "parent_task_id": parent.pk,
        "max_retries": 0,
        "timeout_seconds": 60,
    }
    response = api.post("/tasks", body)
    assert response.status_code == 201
    data = response.json()
    assert {name: data[name] for name in ("title", "description", "task_type", "priority")} == {
        "title": "Second <i>step</i>",
        "description": "Line one\nline two: <script>alert(1)</script> ✓",
        "task_type": "review",
        "priority": "CRITICAL",
    }
    assert data["score"] == pytest.approx(7.5, abs=0.001)
    assert (data["dependencies"], data["required_capabilities"], data["parent_task_id"]) == (
        [first.pk],
        ["qa", "python"],
        parent.pk,
    )
    assert (data["max_retries"], data["timeout_seconds"]) == (0, 60)
    task = Task.objects.get(pk=data["id"])
    assert list(task.dependencies.all()) == [first] and task.parent == parent


def test_a_task_with_an_unknown_phase_is_refused_with_the_reason(api, ticket):
    before = row_counts()
    response = api.post("/tasks", {"ticket_id": ticket.pk, "title": "Lost", "phase": "PHASE_NOPE"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {
                "loc": ["body", "phase"],
                "msg": "Unknown phase 'PHASE_NOPE' in workflow Software Development.",
                "type": "value_error",
            }
        ]
    }
    assert row_counts() == before


def test_a_task_on_another_boards_ticket_is_not_found(api, charlies_board):
    ticket = charlies_board.tickets.get()
    before = row_counts()
    response = api.post("/tasks", {"ticket_id": ticket.pk, "title": "Sneaky"})
    assert response.status_code == 404
    assert response.json() == {"detail": f"No ticket {ticket.pk} on this agent's boards."}
    assert row_counts() == before


def test_dependencies_and_parents_must_be_on_the_agents_boards(api, ticket, task, charlies_board):
    foreign = Task.objects.get(ticket__board=charlies_board)
    before = row_counts()
    response = api.post("/tasks", {"ticket_id": ticket.pk, "title": "x", "dependencies": [task.pk, foreign.pk]})
    assert response.status_code == 404
    assert response.json() == {"detail": f"dependencies: no task {foreign.pk} on this agent's boards."}
    response = api.post("/tasks", {"ticket_id": ticket.pk, "title": "x", "parent_task_id": foreign.pk})
    assert response.status_code == 404
    assert response.json() == {"detail": f"parent_task_id: no task {foreign.pk} on this agent's boards."}
    assert row_counts() == before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"title": None}, "Field required"),  # None leaves the field out
        ({"title": 5}, "Input should be a valid string"),
        ({"title": ""}, "String should have at least 1 character"),
        ({"title": "   "}, "This field cannot be blank."),
        ({"title": "x" * 201}, "String should have at most 200 characters"),
        ({"ticket_id": "one"}, "Input should be a valid integer"),
        ({"ticket_id": 0}, "Input should be greater than 0"),
        ({"ticket_id": 2**64}, "Input should be less than 9007199254740992"),
        ({"description": "x" * 20_001}, "String should have at most 20000 characters"),
        ({"description": ["a"]}, "Input should be a valid string"),
        ({"priority": "URGENT"}, "Input should be 'LOW', 'MEDIUM', 'HIGH' or 'CRITICAL'"),
        ({"priority": "high"}, "Input should be 'LOW', 'MEDIUM', 'HIGH' or 'CRITICAL'"),
        ({"score": 1e10}, "Input should be less than or equal to 1000000000"),
        ({"score": "lots"}, "Input should be a valid number"),
        ({"dependencies": [2**70]}, "Input should be less than 9007199254740992"),
        ({"dependencies": [-1]}, "Input should be greater than 0"),
        ({"dependencies": list(range(1, 102))}, "List should have at most 100 items"),
        ({"dependencies": 5}, "Input should be a valid list"),
        ({"parent_task_id": 2**63}, "Input should be less than 9007199254740992"),
        ({"required_capabilities": ["x" * 65]}, "String should have at most 64 characters"),
        ({"max_retries": 101}, "Input should be less than or equal to 100"),
        ({"timeout_seconds": 0}, "Input should be greater than or equal to 1"),
        ({"task_type": "x" * 65}, "String should have at most 64 characters"),
        ({"phase": "x" * 65}, "String should have at most 64 characters"),
        ({"phase": ""}, "String should have at least 1 character"),
        ({"phase": "PHASE_NOWHERE"}, "Unknown phase 'PHASE_NOWHERE' in workflow Software Development."),
    ],
)
def test_task_creation_refuses_bad_bodies(api, ticket, changes, message):
    body = {"ticket_id": ticket.pk, "title": "Fine", **changes}
    body = {name: value for name, value in body.items() if value is not None}
    before = row_counts()
    response = api.post("/tasks", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response)), response.json()
    assert row_counts() == before


# Reading


def test_an_agent_reads_a_task_on_its_boards(api, task):
    response = api.get(f"/tasks/{task.pk}")
    assert response.status_code == 200
    assert response.json()["title"] == "Write the code" and set(response.json()) == TASK_FIELDS


def test_another_boards_task_is_not_found(api, charlies_board):
    foreign = Task.objects.get(ticket__board=charlies_board)
    for path in (f"/tasks/{foreign.pk}", "/tasks/999999", "/tasks/99999999999999999999999"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json()["detail"] == f"No task {path.split('/')[-1]} on this agent's boards."


# The life of a task


def test_the_holder_starts_and_completes_its_task(api, task, builder):
    held(task, builder)
    response = api.post(f"/tasks/{task.pk}/start")
    assert response.status_code == 200
    assert response.json()["status"] == "running"
    body = {
        "result": {"summary": "<b>done</b>", "lines": [1, 2.5, None, True]},
        "artifacts": ["src/sso.py", {"path": "docs/sso.md"}],
        "completed_criteria": ["the full test suite passes locally with no failing or skipped new tests"],
    }
    response = api.post(f"/tasks/{task.pk}/complete", body)
    assert response.status_code == 200
    data = response.json()
    assert data["status"] == "completed"
    assert {name: data[name] for name in body} == body
    task.refresh_from_db()
    assert (task.status, task.result, task.artifacts) == ("completed", body["result"], body["artifacts"])
    assert Agent.objects.get(pk=builder[0].pk).status == "idle"
    started, completed = Event.objects.filter(type__in=["task.started", "task.completed"]).order_by("id")
    assert (started.type, completed.type, completed.actor) == ("task.started", "task.completed", "agent:builder")
    # Done-definitions are matched as a person reads them: case does not matter.
    assert (
        "The full test suite passes locally with no failing or skipped new tests"
        not in (completed.payload["missing_criteria"])
    )
    assert len(completed.payload["missing_criteria"]) == len(task.phase.done_definitions) - 1


def test_a_task_may_be_completed_without_being_started(api, task, builder):
    held(task, builder)
    response = api.post(f"/tasks/{task.pk}/complete", {})
    assert response.status_code == 200
    assert response.json()["result"] is None and response.json()["artifacts"] == []


def test_starting_twice_is_a_conflict(api, task, builder):
    held(task, builder)
    assert api.post(f"/tasks/{task.pk}/start").status_code == 200
    response = api.post(f"/tasks/{task.pk}/start")
    assert response.status_code == 409
    assert response.json() == {"detail": f"Task {task.pk} is running; this needs it assigned."}
    assert Event.objects.filter(type="task.started").count() == 1


@pytest.mark.parametrize("action", ["start", "complete", "fail"])
def test_an_agent_may_not_report_on_a_task_nobody_holds(api, task, action):
    before = row_counts()
    response = api.post(f"/tasks/{task.pk}/{action}", {"error": "x"} if action == "fail" else {})
    assert response.status_code == 409
    assert response.json() == {"detail": f"Task {task.pk} is held by nobody, not by builder."}
    task.refresh_from_db()
    assert task.status == "pending" and row_counts() == before


@pytest.mark.parametrize("action", ["start", "complete", "fail"])
def test_an_agent_may_not_report_on_a_task_another_agent_holds(api, task, board, alice, action):
    other = agent_create(name="other", boards=[board], actor=alice)[0]
    task_claim(agent=other)
    before = row_counts()
    response = api.post(f"/tasks/{task.pk}/{action}", {"error": "x"} if action == "fail" else {})
    assert response.status_code == 409
    assert response.json() == {"detail": f"Task {task.pk} is held by another agent, not by builder."}
    task.refresh_from_db()
    assert (task.status, task.assigned_agent) == ("assigned", other) and row_counts() == before


def test_a_completed_task_cannot_be_completed_or_failed_again(api, task, builder):
    held(task, builder)
    assert api.post(f"/tasks/{task.pk}/complete", {"result": 1}).status_code == 200
    for action, body in (("complete", {"result": 2}), ("fail", {"error": "late"}), ("start", {})):
        response = api.post(f"/tasks/{task.pk}/{action}", body)
        assert response.status_code == 409
        assert f"Task {task.pk} is completed" in response.json()["detail"]
    task.refresh_from_db()
    assert (task.status, task.result) == ("completed", 1)


@pytest.mark.parametrize("action", ["start", "complete", "fail"])
def test_reporting_on_another_boards_task_is_not_found(api, charlies_board, action):
    foreign = Task.objects.get(ticket__board=charlies_board)
    response = api.post(f"/tasks/{foreign.pk}/{action}", {"error": "x"})
    assert response.status_code == 404
    assert response.json() == {"detail": f"No task {foreign.pk} on this agent's boards."}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"artifacts": "src/sso.py"}, "Input should be a valid list"),
        ({"artifacts": list(range(101))}, "List should have at most 100 items"),
        ({"completed_criteria": [1]}, "Input should be a valid string"),
        ({"completed_criteria": "all"}, "Input should be a valid list"),
    ],
)
def test_completion_refuses_bad_bodies(api, task, builder, body, message):
    held(task, builder)
    response = api.post(f"/tasks/{task.pk}/complete", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response))
    task.refresh_from_db()
    assert task.status == "assigned"


def test_a_retryable_failure_puts_the_task_back_after_a_back_off(api, task, builder):
    held(task, builder)
    response = api.post(f"/tasks/{task.pk}/fail", {"error": "network down"})
    assert response.status_code == 200
    data = response.json()
    assert (data["status"], data["retry_count"], data["error"], data["assigned_agent"]) == (
        "pending",
        1,
        "network down",
        None,
    )
    assert data["next_attempt_at"] is not None
    assert api.post("/tasks/next", {}).status_code == 204  # still backing off
    event = Event.objects.get(type="task.failed")
    assert (event.payload["will_retry"], event.actor) == (True, "agent:builder")


def test_a_failure_that_is_not_retryable_ends_the_task(api, task, builder):
    held(task, builder)
    response = api.post(f"/tasks/{task.pk}/fail", {"error": "bad spec", "retryable": False})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["retry_count"]) == ("failed", 0)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "Field required"),
        ({"error": ""}, "String should have at least 1 character"),
        ({"error": "   "}, "This field cannot be blank."),
        ({"error": "x" * 20_001}, "String should have at most 20000 characters"),
        ({"error": "x", "retryable": "maybe"}, "Input should be a valid boolean"),
    ],
)
def test_a_failure_needs_a_reason(api, task, builder, body, message):
    held(task, builder)
    before = row_counts()
    response = api.post(f"/tasks/{task.pk}/fail", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response))
    task.refresh_from_db()
    assert task.status == "assigned" and row_counts() == before


def test_a_revoked_agent_can_no_longer_touch_its_task(api, task, builder, alice):
    held(task, builder)
    agent_revoke(agent=builder[0], actor=alice)
    for path in (f"/tasks/{task.pk}/start", f"/tasks/{task.pk}/complete", "/tasks/next"):
        response = api.post(path, {})
        assert response.status_code == 401
        assert response.json() == {"detail": "Unauthorized"}
    task.refresh_from_db()
    assert (task.status, task.assigned_agent) == ("pending", None)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/tasks/next"),
        ("post", "/tasks"),
        ("get", "/tasks/{task}"),
        ("post", "/tasks/{task}/start"),
        ("post", "/tasks/{task}/complete"),
        ("post", "/tasks/{task}/fail"),
    ],
)
@pytest.mark.parametrize("token", [None, "omoi_wrong"])
def test_the_task_endpoints_need_a_valid_token(client, task, method, path, token):
    before = row_counts()
    response = getattr(AgentClient(client, token), method)(path.format(task=task.pk))
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert row_counts() == before


def test_every_answer_about_a_task_lists_its_dependencies_smallest_first(api, ticket, alice):
    """The claim's update and the locked lookup read the dependencies with the task; each answer lists them."""
    done = [task_create(ticket=ticket, title=f"Done first {n}", actor=alice) for n in range(3)]
    Task.objects.filter(pk__in=[task.pk for task in done]).update(status=Task.Status.COMPLETED)
    dependent = task_create(ticket=ticket, title="Needs all three", actor=alice, dependencies=done[::-1], score=9)
    lonely = task_create(ticket=ticket, title="Needs nothing", actor=alice, score=1)
    ids = sorted(task.pk for task in done)

    claimed = api.post("/tasks/next", {}).json()
    assert (claimed["id"], claimed["dependencies"]) == (dependent.pk, ids)
    assert api.post("/tasks/next", {}).json()["dependencies"] == ids  # the task it holds, answered again
    assert api.get(f"/tasks/{dependent.pk}").json()["dependencies"] == ids
    assert api.post(f"/tasks/{dependent.pk}/start", {"attempt": 1}).json()["dependencies"] == ids
    assert api.post(f"/tasks/{dependent.pk}/complete", {"attempt": 1}).json()["dependencies"] == ids
    assert api.post("/tasks/next", {}).json()["id"] == lonely.pk
    assert api.post(f"/tasks/{lonely.pk}/fail", {"error": "no luck", "attempt": 1}).json()["dependencies"] == []
