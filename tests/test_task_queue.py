"""The queue's rules: attempts, one task per agent, who matches a task, the score, back-off, time-outs, silent agents."""

import contextlib
import random
from datetime import timedelta
from unittest import mock

import pytest
from django.db.models import Exists, OuterRef
from django.utils import timezone

from board.models import Agent, Event, Task
from board.services import (
    PRIORITY_SCORE,
    RETRY_JITTER,
    TaskStateError,
    agent_create,
    agent_heartbeat,
    agent_mark_offline,
    agent_revoke,
    retry_delay,
    task_assign,
    task_claim,
    task_complete,
    task_create,
    task_fail,
    task_retry_delay,
    task_score,
    task_score_now,
    task_start,
    task_time_out,
    ticket_create,
)
from discoveries.services import discovery_branch

from .agent_api import AgentClient, row_counts

pytestmark = pytest.mark.django_db

START = timedelta(minutes=5)
SILENCE = timedelta(seconds=90)


@pytest.fixture(autouse=True)
def queue_settings(settings):
    """Time-outs and heartbeats as these tests count them, whatever the environment says."""
    settings.OMOI_START_TIMEOUT = START
    settings.OMOI_HEARTBEAT_INTERVAL = timedelta(seconds=30)
    settings.OMOI_MISSED_HEARTBEATS = 3
    settings.OMOI_RETRY_BACKOFF_MAX = timedelta(hours=1)


@pytest.fixture
def now():
    return timezone.now()


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")


@pytest.fixture
def agent(board, alice):
    return agent_create(name="builder", boards=[board], actor=alice, capabilities=["python"])[0]


@pytest.fixture
def other(board, alice):
    return agent_create(name="other", boards=[board], actor=alice, capabilities=["python"])[0]


@pytest.fixture
def task(ticket, alice):
    return task_create(ticket=ticket, title="Write the code", actor=alice)


@contextlib.contextmanager
def clock_at(when):
    """Rows created inside get `when` as their created_at (auto_now_add reads timezone.now)."""
    with mock.patch("django.utils.timezone.now", return_value=when):
        yield


def snapshot(task):
    return Task.objects.values().get(pk=task.pk), Event.objects.count()


def timed_out_and_claimed_again(task, first, second, now):
    """`first` holds attempt 1 until it times out; then `second` claims attempt 2. Returns the time of that claim."""
    assert task_claim(agent=first, now=now) == task
    late = now + START + timedelta(seconds=1)
    assert task_time_out(task=Task.objects.get(pk=task.pk), now=late) is not None
    later = Task.objects.get(pk=task.pk).next_attempt_at
    assert task_claim(agent=second, now=later) == task
    return later


# Attempts


def test_each_claim_starts_a_new_attempt(task, agent, now):
    assert task.attempt == 0
    claimed = task_claim(agent=agent, now=now)
    assert claimed.attempt == 1
    failed = task_fail(task=claimed, agent=agent, error="flaky", attempt=1, now=now)
    assert (failed.status, failed.attempt) == ("pending", 1)
    again = task_claim(agent=agent, now=failed.next_attempt_at)
    assert again.attempt == 2
    assigned = Event.objects.filter(type="task.assigned").order_by("id")
    assert [event.payload["attempt"] for event in assigned] == [1, 2]


@pytest.mark.parametrize("who", ["the same agent", "another agent"])
def test_a_completion_from_a_superseded_attempt_is_refused_and_changes_nothing(task, agent, other, now, who):
    second = agent if who == "the same agent" else other
    timed_out_and_claimed_again(task, agent, second, now)
    before = snapshot(task)
    with pytest.raises(TaskStateError) as refused:
        task_complete(task=task, agent=agent, result={"late": True}, attempt=1)
    assert str(refused.value).startswith(f"Task {task.pk}'s attempt 1 was superseded by attempt 2; ")
    assert snapshot(task) == before
    assert refused.value.status == 409


@pytest.mark.parametrize("report", ["start", "fail"])
def test_a_start_or_failure_from_a_superseded_attempt_is_refused(task, agent, other, now, report):
    timed_out_and_claimed_again(task, agent, other, now)
    before = snapshot(task)
    with pytest.raises(TaskStateError, match="attempt 1 was superseded by attempt 2"):
        if report == "start":
            task_start(task=task, agent=other, attempt=1)
        else:
            task_fail(task=task, agent=other, error="late", attempt=1)
    assert snapshot(task) == before


def test_the_current_attempt_or_none_is_accepted(task, agent, now):
    task_claim(agent=agent, now=now)
    assert task_start(task=task, agent=agent, attempt=1).status == "running"
    assert task_complete(task=task, agent=agent, attempt=None).status == "completed"


def test_an_attempt_not_yet_made_is_refused(task, agent, now):
    task_claim(agent=agent, now=now)
    before = snapshot(task)
    with pytest.raises(TaskStateError, match=f"Task {task.pk} has no attempt 2; its current attempt is 1"):
        task_complete(task=task, agent=agent, attempt=2)
    assert snapshot(task) == before


def test_a_report_from_an_agent_that_no_longer_holds_the_task_stays_refused(task, agent, other, now):
    timed_out_and_claimed_again(task, agent, other, now)
    before = snapshot(task)
    with pytest.raises(TaskStateError, match="held by another agent, not by builder"):
        task_complete(task=task, agent=agent, attempt=2)
    assert snapshot(task) == before


def test_the_api_refuses_a_superseded_completion_with_409_and_changes_nothing(api, client, board, alice, task):
    claimed = api.post("/tasks/next", {}).json()
    assert claimed["attempt"] == 1
    task_time_out(task=Task.objects.get(pk=task.pk), now=timezone.now() + START + timedelta(seconds=1))
    Task.objects.filter(pk=task.pk).update(next_attempt_at=None)
    rival, token = agent_create(name="rival", boards=[board], actor=alice)
    assert AgentClient(client, token).post("/tasks/next", {}).json()["attempt"] == 2
    before = (row_counts(), Task.objects.values().get(pk=task.pk))
    response = api.post(f"/tasks/{task.pk}/complete", {"result": "late", "attempt": 1})
    assert response.status_code == 409
    assert response.json()["detail"].startswith(f"Task {task.pk}'s attempt 1 was superseded by attempt 2; ")
    assert (row_counts(), Task.objects.values().get(pk=task.pk)) == before
    assert Task.objects.get(pk=task.pk).assigned_agent == rival


def test_the_api_takes_the_attempt_with_start_complete_and_fail(api, task):
    attempt = api.post("/tasks/next", {}).json()["attempt"]
    assert api.post(f"/tasks/{task.pk}/start", {"attempt": attempt}).json()["status"] == "running"
    assert api.post(f"/tasks/{task.pk}/fail", {"error": "x", "attempt": attempt + 1}).status_code == 409
    response = api.post(f"/tasks/{task.pk}/fail", {"error": "x", "attempt": attempt})
    assert (response.status_code, response.json()["status"], response.json()["attempt"]) == (200, "pending", 1)


@pytest.mark.parametrize("action", ["start", "complete", "fail"])
@pytest.mark.parametrize(
    ("attempt", "message"),
    [
        (0, "Input should be greater than or equal to 1"),
        (2**31, "Input should be less than or equal to 2147483647"),
        ("first", "Input should be a valid integer"),
        (1.5, "Input should be a valid integer"),
    ],
)
def test_the_api_refuses_a_bad_attempt(api, task, action, attempt, message):
    api.post("/tasks/next", {})
    before = (row_counts(), Task.objects.values().get(pk=task.pk))
    response = api.post(f"/tasks/{task.pk}/{action}", {"error": "x", "attempt": attempt})
    assert response.status_code == 422
    assert any(message in problem["msg"] for problem in response.json()["detail"])
    assert (row_counts(), Task.objects.values().get(pk=task.pk)) == before


# One task per agent


def test_an_agent_holding_a_task_gets_the_same_task_back(ticket, alice, agent, task, now):
    task_create(ticket=ticket, title="More work", actor=alice, priority="CRITICAL")
    first = task_claim(agent=agent, now=now)
    again = task_claim(agent=agent, now=now + timedelta(minutes=1))
    assert (again, again.attempt, again.assigned_at) == (first, 1, now)
    assert Task.objects.filter(assigned_agent=agent).count() == 1
    assert Event.objects.filter(type="task.assigned").count() == 1
    task_start(task=first, agent=agent)
    assert task_claim(agent=agent, now=now).status == "running"  # running counts as held too


def test_an_agent_learns_from_its_claim_what_the_orchestrator_assigned(task, agent, now):
    assigned = task_assign(agent=agent, now=now)
    assert (assigned, assigned.attempt) == (task, 1)
    event = Event.objects.get(type="task.assigned")
    assert (event.actor, event.payload["agent"]) == ("orchestrator", "builder")
    assert task_claim(agent=agent, now=now) == task
    assert Task.objects.get(pk=task.pk).attempt == 1
    assert Event.objects.filter(type="task.assigned").count() == 1


def test_a_task_held_on_another_board_answers_none_on_this_one(ticket, alice, board, workflow, task, now):
    from board.models import Board

    second = Board.objects.create(name="Second", slug="second", workflow=workflow)
    task_create(ticket=ticket_create(board=second, title="There", actor=alice), title="Elsewhere", actor=alice)
    both = agent_create(name="both", boards=[board, second], actor=alice)[0]
    assert task_claim(agent=both, board=board, now=now) == task
    assert task_claim(agent=both, board=second, now=now) is None
    assert Task.objects.filter(assigned_agent=both).count() == 1


def test_the_orchestrator_assigns_nothing_to_an_agent_that_holds_or_is_not_idle(ticket, alice, agent, task, now):
    task_create(ticket=ticket, title="More work", actor=alice)
    task_claim(agent=agent, now=now)
    Agent.objects.filter(pk=agent.pk).update(status="idle")  # even when it says it is idle
    assert task_assign(agent=agent, now=now) is None
    task_complete(task=task, agent=agent)
    agent_heartbeat(agent=agent, status="busy", now=now)
    assert task_assign(agent=agent, now=now) is None  # busy by its own word
    agent_heartbeat(agent=agent, status="idle", now=now)
    assert task_assign(agent=agent, now=now).title == "More work"


def test_a_revoked_agent_claims_nothing(task, agent, alice, now):
    agent_revoke(agent=agent, actor=alice)
    assert task_claim(agent=agent, now=now) is None
    assert task_assign(agent=agent, now=now) is None
    assert Task.objects.get(pk=task.pk).status == "pending"


# Who matches a task: one rule, the same on every database


CAPABILITY_CASES = [
    ([], [], True),
    ([], ["python"], True),
    (["python"], [], False),
    (["python"], ["python", "django"], True),
    (["python", "django"], ["python"], False),
    (["python", "python"], ["python"], True),
    (["Python"], ["python"], False),
    (["py"], ["python"], False),
    (["a b"], ["a", "b"], False),
    (["ünïcode ✓"], ["ünïcode ✓"], True),
    (["1"], [1], False),
    ([1], [1, 2], True),
]


@pytest.mark.parametrize(("required", "offered", "expected"), CAPABILITY_CASES)
def test_capability_matching_gives_the_same_answer_everywhere(ticket, alice, board, required, offered, expected):
    # Ids that differ between agents and tasks, so a query that mixed them up could not pass by chance.
    agent_create(name="first", boards=[board], actor=alice)
    candidate = agent_create(name="candidate", boards=[board], actor=alice)[0]
    for n in range(3):
        task_create(ticket=ticket, title=f"Filler {n}", actor=alice, required_capabilities=["nobody has this"])
    # Stored as given, past the services' cleaning: the rule must hold for any JSON list.
    Agent.objects.filter(pk=candidate.pk).update(capabilities=offered)
    candidate.refresh_from_db()
    task = task_create(ticket=ticket, title="Needs things", actor=alice)
    Task.objects.filter(pk=task.pk).update(required_capabilities=required)
    assert task.pk != candidate.pk
    assert list(Task.objects.matching(candidate)) == ([task] if expected else [])
    assert candidate.has_capabilities(required) is expected
    with_work = Agent.objects.filter(Exists(Task.objects.matching(OuterRef("pk"))))
    assert (candidate in with_work) is expected
    assert (task_claim(agent=candidate) == task) is expected


def test_a_specialist_matches_only_its_phase_and_boards(ticket, alice, board, review_board, phase):
    tester = agent_create(name="tester", boards=[board], actor=alice, phase=phase("PHASE_TESTING"))[0]
    mine = task_create(ticket=ticket, title="Test it", actor=alice, phase="PHASE_TESTING")
    task_create(ticket=ticket, title="Build it", actor=alice, phase="PHASE_IMPLEMENTATION")
    task_create(ticket=review_board.tickets.first(), title="Not this board", actor=alice)
    assert list(Task.objects.matching(tester)) == [mine]
    assert list(Agent.objects.filter(Exists(Task.objects.matching(OuterRef("pk"))), pk=tester.pk)) == [tester]


# The score


def test_the_score_adds_priority_boost_dependents_and_days_waited(now):
    assert task_score(base=2.0, created_at=now, now=now) == 2.0
    assert task_score(base=2.0, created_at=now, now=now, boost=True) == 3.0
    assert task_score(base=2.0, created_at=now, now=now, dependents=3) == 3.5
    assert task_score(base=2.0, created_at=now - timedelta(hours=12), now=now) == pytest.approx(2.5)


def test_a_task_waiting_more_than_a_day_overtakes_fresh_work_one_priority_higher(ticket, alice, agent, now):
    with clock_at(now - timedelta(hours=25)):
        waited = task_create(ticket=ticket, title="Low, 25 hours", actor=alice, priority="LOW")
    with clock_at(now - timedelta(hours=23)):
        not_yet = task_create(ticket=ticket, title="Low, 23 hours", actor=alice, priority="LOW")
    with clock_at(now):
        fresh = task_create(ticket=ticket, title="Medium, fresh", actor=alice, priority="MEDIUM")
    claimed = []
    for _ in range(3):
        claimed.append(task_claim(agent=agent, now=now))
        task_complete(task=claimed[-1], agent=agent)
    assert claimed == [waited, fresh, not_yet]
    assert task_score_now(waited, now=now) == pytest.approx(1 + 25 / 24)
    assert task_score_now(fresh, now=now) == pytest.approx(2.0)


def test_the_stored_score_orders_tasks_as_their_score_now_does(ticket, alice, now):
    made = []
    for hours, priority in [(0, "HIGH"), (30, "LOW"), (5, "CRITICAL"), (50, "MEDIUM"), (1, "MEDIUM")]:
        with clock_at(now - timedelta(hours=hours)):
            made.append(task_create(ticket=ticket, title=f"{priority} {hours}h", actor=alice, priority=priority))
    by_column = list(Task.objects.order_by("-score", "created_at", "id"))
    for moment in (now, now + timedelta(days=3), now + timedelta(days=300)):
        assert sorted(made, key=lambda task: -task_score_now(task, now=moment)) == by_column


def test_a_discovery_boost_adds_to_the_raised_priority(ticket, alice, agent, now):
    source = task_create(ticket=ticket, title="Source", actor=alice, priority="MEDIUM")
    _, plain = discovery_branch(source_task=source, discovery_type="bug", description="Plain", actor=agent)
    _, boosted = discovery_branch(
        source_task=source, discovery_type="bug", description="Urgent", actor=agent, priority_boost=True
    )
    assert task_score_now(plain, now=plain.created_at) == pytest.approx(PRIORITY_SCORE["MEDIUM"])
    assert task_score_now(boosted, now=boosted.created_at) == pytest.approx(PRIORITY_SCORE["HIGH"] + 1)


def test_each_open_dependent_adds_half_a_point_to_what_it_waits_for(ticket, alice, agent, now):
    blocker = task_create(ticket=ticket, title="Blocker", actor=alice)
    done = task_create(ticket=ticket, title="Done already", actor=alice)
    Task.objects.filter(pk=done.pk).update(status="completed")
    before = Task.objects.get(pk=blocker.pk).score
    task_create(ticket=ticket, title="Waits", actor=alice, dependencies=[blocker, done])
    task_create(ticket=ticket, title="Waits too", actor=alice, dependencies=[blocker])
    assert Task.objects.get(pk=blocker.pk).score == pytest.approx(before + 1.0)
    assert Task.objects.get(pk=done.pk).score == done.score  # finished work needs no push


def test_a_given_score_replaces_the_priority_weight(ticket, alice):
    task = task_create(ticket=ticket, title="Chosen", actor=alice, priority="LOW", score=7.5)
    assert task_score_now(task, now=task.created_at) == pytest.approx(7.5)


# Back-off


@pytest.mark.parametrize("retry_count", [0, 1, 2, 5])
def test_the_back_off_doubles_with_half_of_it_jitter(retry_count):
    ceiling = 30 * 2**retry_count
    delays = [
        retry_delay(retry_count=retry_count, base=30, cap=3600, rng=random.Random(seed)).total_seconds()
        for seed in range(200)
    ]
    assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
    # The jitter spreads the retries over the whole upper half, not a sliver of it.
    assert max(delays) - min(delays) > 0.4 * ceiling


@pytest.mark.parametrize("retry_count", [7, 20, 100])
def test_the_back_off_never_passes_its_cap(retry_count):
    delays = [
        retry_delay(retry_count=retry_count, base=30, cap=600, rng=random.Random(seed)).total_seconds()
        for seed in range(100)
    ]
    assert min(delays) >= 300 and max(delays) <= 600


def test_the_same_seed_gives_the_same_back_off():
    first = retry_delay(retry_count=3, base=10, cap=1000, rng=random.Random(7))
    assert retry_delay(retry_count=3, base=10, cap=1000, rng=random.Random(7)) == first
    assert retry_delay(retry_count=3, base=10, cap=1000, rng=random.Random(8)) != first


def test_the_back_off_reads_the_phase_then_the_site(task, settings):
    phase = task.phase
    phase.configuration = {"retry_backoff_seconds": 10, "retry_backoff_max_seconds": 15}
    phase.save()
    task = Task.objects.select_related("phase").get(pk=task.pk)
    task.retry_count = 3  # ceiling 80 s, capped by the phase at 15
    assert timedelta(seconds=7.5) <= task_retry_delay(task, rng=random.Random(1)) <= timedelta(seconds=15)
    phase.configuration = {"retry_backoff_seconds": 10}
    phase.save()
    settings.OMOI_RETRY_BACKOFF_MAX = timedelta(seconds=20)
    task = Task.objects.select_related("phase").get(pk=task.pk)
    task.retry_count = 3
    assert timedelta(seconds=10) <= task_retry_delay(task, rng=random.Random(1)) <= timedelta(seconds=20)
    phase.configuration = {}
    phase.save()
    task = Task.objects.select_related("phase").get(pk=task.pk)  # no retry yet: 30 s by default, capped at 20
    assert timedelta(seconds=10) <= task_retry_delay(task, rng=random.Random(1)) <= timedelta(seconds=20)


def test_a_failure_waits_the_seeded_back_off(task, agent, now):
    task.phase.configuration = {"retry_backoff_seconds": 100}
    task.phase.save()
    task_claim(agent=agent, now=now)
    RETRY_JITTER.seed(42)
    failed = task_fail(task=task, agent=agent, error="flaky", now=now)
    expected = retry_delay(retry_count=0, base=100, cap=3600, rng=random.Random(42))
    assert failed.next_attempt_at == now + expected
    assert task_claim(agent=agent, now=failed.next_attempt_at - timedelta(seconds=1)) is None
    assert task_claim(agent=agent, now=failed.next_attempt_at) == task


def test_a_phase_without_back_off_retries_at_once(task, agent, now):
    task.phase.configuration = {"retry_backoff_seconds": 0}
    task.phase.save()
    task_claim(agent=agent, now=now)
    assert task_fail(task=task, agent=agent, error="flaky", now=now).next_attempt_at == now


# Time-outs


def test_a_task_not_started_in_time_fails_as_timed_out_and_is_retried(task, agent, now):
    task_claim(agent=agent, now=now)
    held = Task.objects.get(pk=task.pk)
    assert task_time_out(task=held, now=now + START) is None  # not yet: exactly on time is in time
    failed = task_time_out(task=held, now=now + START + timedelta(seconds=1))
    assert (failed.status, failed.retry_count, failed.assigned_agent) == ("pending", 1, None)
    assert failed.error == "Timed out: not started within 300 s of being assigned."
    event = Event.objects.get(type="task.failed")
    assert (event.actor, event.payload["timed_out"], event.payload["will_retry"], event.payload["attempt"]) == (
        "orchestrator",
        True,
        True,
        1,
    )
    assert Agent.objects.get(pk=agent.pk).status == "idle"


def test_a_running_task_times_out_after_its_own_time_out(ticket, alice, agent, now):
    task = task_create(ticket=ticket, title="Quick", actor=alice, timeout_seconds=60)
    task_claim(agent=agent, now=now)
    task_start(task=task, agent=agent, now=now + timedelta(seconds=10))
    running = Task.objects.get(pk=task.pk)
    assert task_time_out(task=running, now=now + timedelta(seconds=70)) is None
    failed = task_time_out(task=running, now=now + timedelta(seconds=71))
    assert failed.error == "Timed out: still running 60 s after it started."


def test_a_task_without_its_own_time_out_takes_its_phases(ticket, alice, agent, now):
    task = task_create(ticket=ticket, title="Phase's", actor=alice)
    Task.objects.filter(pk=task.pk).update(timeout_seconds=0)
    task.phase.configuration = {"timeout_seconds": 120}
    task.phase.save()
    task_claim(agent=agent, now=now)
    task_start(task=task, agent=agent, now=now)
    running = Task.objects.get(pk=task.pk)
    assert task_time_out(task=running, now=now + timedelta(seconds=120)) is None
    assert task_time_out(task=running, now=now + timedelta(seconds=121)).error.endswith(
        "running 120 s after it started."
    )


def test_a_time_out_is_guarded_on_the_status_and_attempt_it_saw(task, agent, now):
    task_claim(agent=agent, now=now)
    seen = Task.objects.get(pk=task.pk)  # assigned, attempt 1
    task_start(task=task, agent=agent, now=now + timedelta(seconds=1))
    before = snapshot(task)
    assert task_time_out(task=seen, now=now + START + timedelta(seconds=2)) is None  # it started meanwhile
    assert snapshot(task) == before
    task_complete(task=task, agent=agent)
    assert task_time_out(task=Task.objects.get(pk=task.pk), now=now + timedelta(days=9)) is None


def test_a_task_out_of_retries_that_times_out_stays_failed(ticket, alice, agent, now):
    task = task_create(ticket=ticket, title="Last try", actor=alice, max_retries=0)
    task_claim(agent=agent, now=now)
    failed = task_time_out(task=Task.objects.get(pk=task.pk), now=now + START + timedelta(seconds=1))
    assert (failed.status, failed.finished_at) == ("failed", now + START + timedelta(seconds=1))
    payload = Event.objects.get(type="task.failed").payload
    assert (payload["will_retry"], payload["timed_out"], payload["next_attempt_at"]) == (False, True, None)


# Silent agents and heartbeats


def test_a_silent_agent_goes_offline_and_its_task_is_retried(task, agent, now):
    agent_heartbeat(agent=agent, now=now)
    task_claim(agent=agent, now=now)
    assert agent_mark_offline(agent=agent, now=now + SILENCE) is False  # not silent yet
    assert agent_mark_offline(agent=agent, now=now + SILENCE + timedelta(seconds=1)) is True
    agent.refresh_from_db()
    assert agent.status == "offline"
    released = Task.objects.get(pk=task.pk)
    assert (released.status, released.retry_count, released.assigned_agent) == ("pending", 1, None)
    assert released.error == "Agent builder went silent: no heartbeat for 90 s."
    failed, offline = Event.objects.filter(type__in=["task.failed", "agent.offline"]).order_by("id")
    assert (failed.type, failed.actor, failed.payload["timed_out"]) == ("task.failed", "orchestrator", False)
    assert (offline.type, offline.actor, offline.payload["tasks"]) == ("agent.offline", "orchestrator", [task.pk])
    before = snapshot(task)
    assert agent_mark_offline(agent=agent, now=now + timedelta(hours=1)) is False  # done once only
    assert snapshot(task) == before


def test_an_agent_that_never_sent_a_heartbeat_counts_from_its_assignment(task, agent, now):
    task_assign(agent=agent, now=now + timedelta(hours=2))
    assert Agent.objects.get(pk=agent.pk).last_heartbeat is None
    assert agent_mark_offline(agent=agent, now=now + timedelta(hours=2) + SILENCE) is False
    assert agent_mark_offline(agent=agent, now=now + timedelta(hours=2) + SILENCE + timedelta(seconds=1))


def test_an_idle_agent_that_never_sent_a_heartbeat_counts_from_its_registration(agent):
    registered = Agent.objects.get(pk=agent.pk).created_at
    assert agent_mark_offline(agent=agent, now=registered + SILENCE) is False
    assert agent_mark_offline(agent=agent, now=registered + SILENCE + timedelta(seconds=1)) is True
    assert Event.objects.get(type="agent.offline").payload == {"name": "builder", "last_heartbeat": None, "tasks": []}


def test_agent_offline_is_announced_on_each_of_its_boards_in_id_order(alice, board, workflow, now):
    from board.models import Board

    boards = [Board.objects.create(name=f"B{n}", slug=f"b{n}", workflow=workflow) for n in range(2)]
    roamer = agent_create(name="roamer", boards=[boards[1], board, boards[0]], actor=alice)[0]
    agent_mark_offline(agent=roamer, now=now + timedelta(hours=1))
    events = Event.objects.filter(type="agent.offline").order_by("id")
    assert [event.board_id for event in events] == sorted([board.pk, boards[0].pk, boards[1].pk])


def test_a_heartbeat_brings_an_offline_agent_back(agent, now):
    agent_mark_offline(agent=agent, now=now + timedelta(hours=1))
    agent_heartbeat(agent=agent, now=now + timedelta(hours=2))
    agent.refresh_from_db()
    assert (agent.status, agent.last_heartbeat) == ("idle", now + timedelta(hours=2))
    event = Event.objects.get(type="agent.online")
    assert (event.actor, event.payload) == ("agent:builder", {"name": "builder"})
    agent_heartbeat(agent=agent, now=now + timedelta(hours=3))
    assert Event.objects.filter(type="agent.online").count() == 1  # only coming back is news


def test_an_agent_saying_it_is_offline_stays_offline_until_it_says_otherwise(agent, now):
    agent_heartbeat(agent=agent, status="offline", now=now)
    assert Agent.objects.get(pk=agent.pk).status == "offline"
    agent_heartbeat(agent=agent, status="idle", now=now)
    assert Agent.objects.get(pk=agent.pk).status == "idle"
    assert Event.objects.filter(type="agent.online").count() == 1


def test_an_agent_back_with_a_task_in_hand_is_busy(task, agent, now):
    task_claim(agent=agent, now=now)
    agent_heartbeat(agent=agent, status="offline", now=now)
    assert agent_heartbeat(agent=agent, now=now).status == "busy"
    assert Agent.objects.get(pk=agent.pk).status == "busy"


def test_a_heartbeat_does_not_bring_back_a_revoked_agent(agent, alice, now):
    agent_revoke(agent=agent, actor=alice)
    agent_heartbeat(agent=agent, now=now)
    assert Agent.objects.get(pk=agent.pk).status == "offline"
    assert not Event.objects.filter(type="agent.online").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_agent_claiming_from_several_connections_at_once_still_holds_one_task(board, alice):
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")
    ticket = ticket_create(board=board, title="Many tasks", actor=alice)
    for n in range(10):
        task_create(ticket=ticket, title=f"Task {n}", actor=alice)
    agent = agent_create(name="eager", boards=[board], actor=alice)[0]
    start = threading.Barrier(6)
    got, errors = [], []

    def claim():
        try:
            start.wait()
            for _ in range(5):
                got.append(task_claim(agent=agent).pk)
        except Exception as exc:  # reported below, in the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(got) == 30 and len(set(got)) == 1
    assert Task.objects.filter(assigned_agent=agent).count() == 1
    assert Event.objects.filter(type="task.assigned").count() == 1
