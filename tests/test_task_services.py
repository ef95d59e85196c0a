"""Agents and tasks: registration and tokens, the work queue, claims, and the life of a task."""

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, connections, transaction
from django.utils import timezone

from board.models import Agent, Board, Event, Task, TicketComment
from board.services import (
    TaskStateError,
    agent_authenticate,
    agent_create,
    agent_heartbeat,
    agent_revoke,
    agent_update,
    task_claim,
    task_complete,
    task_create,
    task_fail,
    task_score_now,
    task_start,
    ticket_comment,
    ticket_create,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")


@pytest.fixture
def agent(board, alice):
    return agent_create(name="builder", boards=[board], actor=alice, capabilities=["python", "django"])[0]


@pytest.fixture
def task(ticket, alice):
    return task_create(ticket=ticket, title="Write the code", actor=alice)


# Agents and tokens


def test_an_agent_token_is_shown_once_and_stored_hashed(board, alice):
    agent, token = agent_create(name="scout", boards=[board], actor=alice, capabilities="a, b")
    assert token.startswith("omoi_") and len(token) > 40
    assert token not in agent.token_hash
    assert agent.token_prefix == token[:11]
    assert agent.capabilities == ["a", "b"]
    assert agent_authenticate(token) == agent
    assert agent_authenticate(token + "x") is None
    assert agent_authenticate("") is None
    assert Event.objects.filter(type="agent.registered", entity_id=str(agent.pk)).exists()


def test_a_revoked_token_stops_working_at_once(agent, alice, task):
    token_agent, token = agent_create(name="revokee", boards=list(agent.boards.all()), actor=alice)
    claimed = task_claim(agent=token_agent)
    agent_revoke(agent=token_agent, actor=alice)
    assert agent_authenticate(token) is None
    claimed.refresh_from_db()
    assert (claimed.status, claimed.assigned_agent) == ("pending", None)
    assert Event.objects.filter(type="task.released").exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "builder"}, "name"),  # taken
        ({"boards": []}, "boards"),
        ({"capabilities": ["ok", ""]}, "capabilities"),
        ({"capabilities": [3]}, "capabilities"),
        ({"phase": "PHASE_NOPE"}, None),
    ],
)
def test_agent_registration_refuses_bad_input(board, alice, agent, kwargs, field):
    arguments = {"name": "new", "boards": [board], "actor": alice, **kwargs}
    before = Agent.objects.count()
    with pytest.raises((ValidationError, Exception)) as caught:
        agent_create(**arguments)
    if field:
        assert field in caught.value.message_dict
    assert Agent.objects.count() == before


def test_an_agent_specialised_in_a_phase_must_share_the_boards_workflow(board, review_board, alice, phase):
    with pytest.raises(ValidationError, match="not in the workflow of every board"):
        agent_create(name="odd", boards=[board, review_board], actor=alice, phase=phase("PHASE_TESTING"))


def test_an_agent_reports_its_heartbeat_and_status(agent):
    agent_heartbeat(agent=agent, status="busy")
    agent.refresh_from_db()
    assert agent.status == "busy" and agent.last_heartbeat is not None
    with pytest.raises(ValidationError, match="Unknown status 'asleep'"):
        agent_heartbeat(agent=agent, status="asleep")


def test_staff_change_an_agents_capabilities_type_and_phase_with_an_event(agent, alice, phase, board):
    agent_update(agent=agent, actor=alice, capabilities=["go", " go "], agent_type="reviewer", phase="PHASE_TESTING")
    agent.refresh_from_db()
    assert (agent.capabilities, agent.agent_type, agent.phase.key) == (["go"], "reviewer", "PHASE_TESTING")
    event = Event.objects.get(type="agent.updated")
    assert (event.board, event.actor) == (board, "alice")
    assert event.payload == {"capabilities": ["go"], "agent_type": "reviewer", "phase": "PHASE_TESTING"}
    agent_update(agent=agent, actor=alice, phase=None)
    agent.refresh_from_db()
    assert agent.phase is None and agent.capabilities == ["go"]
    agent_update(agent=agent, actor=alice, capabilities=["go"])  # no change, no event
    assert Event.objects.filter(type="agent.updated").count() == 2


@pytest.mark.parametrize("who", ["agent", "bob"])
def test_only_staff_change_what_an_agent_is_trusted_with(agent, bob, who):
    actor = agent if who == "agent" else bob
    with pytest.raises(PermissionDenied, match="Only staff"):
        agent_update(agent=agent, actor=actor, capabilities=["deploy"])
    agent.refresh_from_db()
    assert agent.capabilities == ["python", "django"]
    assert not Event.objects.filter(type="agent.updated").exists()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"capabilities": ["ok", ""]}, "capabilities"),
        ({"capabilities": ["x" * 65]}, "capabilities"),
        ({"agent_type": "  "}, "agent_type"),
        ({"phase": "PHASE_NOWHERE"}, "phase"),
    ],
)
def test_agent_changes_refuse_bad_input(agent, alice, kwargs, field):
    before = Agent.objects.values().get(pk=agent.pk)
    with pytest.raises(ValidationError) as caught:
        agent_update(agent=agent, actor=alice, **kwargs)
    assert field in caught.value.message_dict
    assert Agent.objects.values().get(pk=agent.pk) == before


def test_a_revoked_agent_is_not_changed(agent, alice):
    agent_revoke(agent=agent, actor=alice)
    with pytest.raises(ValidationError, match="is revoked"):
        agent_update(agent=agent, actor=alice, capabilities=["deploy"])


# Creating tasks


def test_a_task_may_start_in_any_phase_of_the_workflow(ticket, alice):
    task = task_create(ticket=ticket, title="Clarify", actor=alice, phase="PHASE_REQUIREMENTS")
    assert task.phase.key == "PHASE_REQUIREMENTS"
    assert ticket.phase.key == "PHASE_IMPLEMENTATION"  # the ticket itself does not move
    event = Event.objects.get(type="task.created")
    assert event.payload["phase"] == "PHASE_REQUIREMENTS" and event.payload["ticket"] == ticket.pk


def test_a_task_takes_the_tickets_phase_and_priority_by_default(ticket, alice):
    task = task_create(ticket=ticket, title="Code", actor=alice)
    assert (task.phase_id, task.priority) == (ticket.phase_id, "MEDIUM")
    assert task_score_now(task, now=task.created_at) == pytest.approx(2.0)


def test_task_creation_refuses_an_unknown_phase_and_foreign_dependencies(ticket, alice, review_board):
    with pytest.raises(ValidationError, match="Unknown phase 'PHASE_NOPE'"):
        task_create(ticket=ticket, title="x", actor=alice, phase="PHASE_NOPE")
    other_ticket = review_board.tickets.first()
    foreign = task_create(ticket=other_ticket, title="elsewhere", actor=alice)
    with pytest.raises(ValidationError, match="on another board"):
        task_create(ticket=ticket, title="x", actor=alice, dependencies=[foreign])
    assert Task.objects.count() == 1


def test_registering_an_agent_in_an_unknown_phase_is_a_validation_error_on_phase(board, alice):
    with pytest.raises(ValidationError) as refused:
        agent_create(name="scout", boards=[board], actor=alice, phase="PHASE_NOPE")
    assert list(refused.value.message_dict) == ["phase"]
    assert "Unknown phase 'PHASE_NOPE'" in refused.value.message_dict["phase"][0]
    assert not Agent.objects.filter(name="scout").exists()


# Claiming


def claim_and_finish(agent):
    """The task the agent claims, completed at once so that it may claim the next; None when there is none."""
    task = task_claim(agent=agent)
    if task is not None:
        task_complete(task=task, agent=agent)
    return task


def test_the_best_ready_task_goes_first(ticket, alice, agent):
    low = task_create(ticket=ticket, title="Low", actor=alice, priority="LOW")
    high = task_create(ticket=ticket, title="High", actor=alice, priority="HIGH")
    top = task_create(ticket=ticket, title="Top", actor=alice, score=10)
    assert [claim_and_finish(agent) for _ in range(2)] == [top, high]
    assert task_claim(agent=agent) == low
    low.refresh_from_db()
    assert (low.status, low.assigned_agent) == ("assigned", agent)
    agent.refresh_from_db()
    assert agent.status == "busy"
    task_complete(task=low, agent=agent)
    assert task_claim(agent=agent) is None


def test_claims_respect_capabilities_phase_dependencies_and_back_off(ticket, alice, board, phase):
    agent = agent_create(name="tester", boards=[board], actor=alice, phase=phase("PHASE_TESTING"), capabilities=["qa"])[
        0
    ]
    task_create(ticket=ticket, title="Wrong phase", actor=alice)
    task_create(ticket=ticket, title="Needs rust", actor=alice, phase="PHASE_TESTING", required_capabilities=["rust"])
    blocker = task_create(ticket=ticket, title="Blocker", actor=alice, phase="PHASE_IMPLEMENTATION")
    task_create(ticket=ticket, title="Waits", actor=alice, phase="PHASE_TESTING", dependencies=[blocker])
    later = task_create(ticket=ticket, title="Later", actor=alice, phase="PHASE_TESTING")
    Task.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    assert task_claim(agent=agent) is None

    Task.objects.filter(pk=blocker.pk).update(status="completed")
    assert claim_and_finish(agent).title == "Waits"
    Task.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert task_claim(agent=agent).title == "Later"


def test_an_agent_never_gets_work_from_another_board(agent, review_board, alice):
    task_create(ticket=review_board.tickets.first(), title="Not yours", actor=alice)
    assert task_claim(agent=agent) is None
    with pytest.raises(PermissionDenied, match="not on board review-board"):
        task_claim(agent=agent, board=review_board)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_hand_out_each_task_once(board, alice):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")
    ticket = ticket_create(board=board, title="Many tasks", actor=alice)
    for n in range(20):
        task_create(ticket=ticket, title=f"Task {n}", actor=alice)
    agents = [agent_create(name=f"a{n}", boards=[board], actor=alice)[0] for n in range(8)]
    claimed, errors = [], []
    start = threading.Barrier(len(agents))

    def work(agent):
        try:
            start.wait()
            while (task := claim_and_finish(agent)) is not None:
                claimed.append((task.pk, agent.pk))
        except Exception as exc:  # reported below, in the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ids = [pk for pk, _ in claimed]
    assert sorted(ids) == sorted(Task.objects.values_list("pk", flat=True))
    assert len(set(ids)) == len(ids) == 20
    for pk, agent_pk in claimed:
        assert Task.objects.get(pk=pk).assigned_agent_id == agent_pk


# The life of a task


def test_start_and_complete_by_the_holder(task, agent):
    task_claim(agent=agent)
    task_start(task=task, agent=agent)
    done = task_complete(
        task=task, agent=agent, result={"summary": "<b>done</b>"}, artifacts=["src/sso.py"], completed_criteria=[]
    )
    assert done.status == "completed" and done.result == {"summary": "<b>done</b>"}
    event = Event.objects.get(type="task.completed")
    assert event.payload["missing_criteria"] == done.phase.done_definitions
    agent.refresh_from_db()
    assert agent.status == "idle"


def test_only_the_holder_may_report_on_a_task(task, agent, board, alice):
    other = agent_create(name="other", boards=[board], actor=alice)[0]
    with pytest.raises(TaskStateError, match="held by nobody"):
        task_start(task=task, agent=agent)
    task_claim(agent=agent)
    with pytest.raises(TaskStateError, match="held by another agent"):
        task_complete(task=task, agent=other)
    task_complete(task=task, agent=agent)
    with pytest.raises(TaskStateError, match="is completed"):
        task_fail(task=task, agent=agent, error="late")


def test_a_report_on_a_task_the_caller_locked_refuses_before_writing_and_keeps_its_transaction(
    task, agent, board, alice
):
    other = agent_create(name="other", boards=[board], actor=alice)[0]
    task_claim(agent=agent)
    with transaction.atomic():
        locked = Task.objects.select_for_update().select_related("ticket__board", "phase").get(pk=task.pk)
        with pytest.raises(TaskStateError, match="held by another agent"):
            task_complete(task=locked, agent=other, locked=True)
        # The caller's transaction goes on: the refusal wrote nothing and broke nothing.
        assert Task.objects.get(pk=task.pk).status == Task.Status.ASSIGNED
        done = task_complete(task=locked, agent=agent, result={"ok": True}, locked=True)
    assert (done.status, Task.objects.get(pk=task.pk).status) == ("completed", "completed")
    assert Event.objects.filter(type="task.completed", entity_id=str(task.pk)).count() == 1


def test_a_retryable_failure_waits_its_back_off_then_is_claimed_again(task, agent):
    task_claim(agent=agent)
    failed = task_fail(task=task, agent=agent, error="network down")
    assert (failed.status, failed.retry_count, failed.assigned_agent) == ("pending", 1, None)
    assert failed.next_attempt_at > timezone.now()
    assert task_claim(agent=agent) is None  # back-off not over
    Task.objects.filter(pk=task.pk).update(next_attempt_at=timezone.now())
    assert task_claim(agent=agent) == task


def test_back_off_doubles_and_retries_run_out(task, agent):
    base = task.phase.retry_backoff_seconds
    for n in range(task.max_retries):
        Task.objects.filter(pk=task.pk).update(next_attempt_at=None)
        task_claim(agent=agent)
        now = timezone.now()
        failed = task_fail(task=task, agent=agent, error="flaky", now=now)
        # Half the doubled ceiling is fixed, the other half is jitter.
        delay = (failed.next_attempt_at - now).total_seconds()
        assert base * 2**n / 2 <= delay <= base * 2**n
    Task.objects.filter(pk=task.pk).update(next_attempt_at=None)
    task_claim(agent=agent)
    final = task_fail(task=task, agent=agent, error="flaky")
    assert final.status == "failed"
    assert Event.objects.filter(type="task.failed").last().payload["will_retry"] is False


def test_a_failure_that_is_not_retryable_fails_at_once(task, agent):
    task_claim(agent=agent)
    assert task_fail(task=task, agent=agent, error="bad spec", retryable=False).status == "failed"


def test_a_failure_needs_an_error(task, agent):
    task_claim(agent=agent)
    with pytest.raises(ValidationError):
        task_fail(task=task, agent=agent, error="  ")
    task.refresh_from_db()
    assert task.status == "assigned"


def test_comments_are_stored_as_given_and_announced(ticket, agent):
    comment = ticket_comment(ticket=ticket, body="<script>x</script>", actor=agent)
    assert TicketComment.objects.get().body == "<script>x</script>"
    event = Event.objects.get(type="ticket.commented")
    assert (event.actor, event.payload["comment"]) == ("agent:builder", comment.pk)
    with pytest.raises(ValidationError):
        ticket_comment(ticket=ticket, body="", actor=agent)


def test_agents_see_boards_through_membership(agent, board, workflow):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    assert list(agent.boards.all()) == [board]
    assert other not in agent.boards.all()
