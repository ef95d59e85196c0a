"""Several orchestrator processes on one PostgreSQL database, and one killed at random moments: each piece of
work is done exactly once, and nothing is lost or left stuck.

The data gives every duty work: phases to enter, ready tasks and idle agents,
running tasks past their time-out, agents gone silent with tasks in hand,
tickets whose phase gate passes, and stuck tickets to rescue. The processes
are real `manage.py orchestrate` commands; the counts come from the database
and its event log.
"""

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db.models import Count
from django.utils import timezone

from board.demo import workflow_capabilities
from board.models import Agent, Event, PhaseHistory, Task, Ticket
from board.runner.simulate import outputs_for
from board.services import (
    agent_create,
    agent_heartbeat,
    task_claim,
    task_complete,
    task_start,
    ticket_create,
    ticket_phase_enter,
)
from discoveries.models import Discovery, TicketRescue
from phases.models import Phase
from tests.browser import _server_database_env

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SETUP = "setup"
GATE_TICKETS, FRESH_TICKETS, LATE_TASKS, SILENT_AGENTS, STUCK_TICKETS, IDLE_AGENTS = 6, 25, 8, 6, 5, 20


@pytest.fixture(autouse=True)
def postgres_only():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")


def phase_dict(phase):
    return {"expected_outputs": phase.expected_outputs}


@pytest.fixture
def work(board, alice):
    """Work for every duty; returns what the checks need to know."""
    workflow = board.workflow
    caps = workflow_capabilities(workflow)
    requirements = Phase.objects.get(workflow=workflow, key="PHASE_REQUIREMENTS")

    # Tickets whose gate passes: their Requirements task completed with every criterion and output.
    worker, _ = agent_create(name="worker", boards=[board], capabilities=caps, actor=alice)
    gate_tickets = []
    for number in range(GATE_TICKETS):
        ticket = ticket_create(board=board, title=f"Gate {number}", actor=alice, phase="PHASE_REQUIREMENTS")
        ticket_phase_enter(ticket=ticket, actor=alice)
        task = task_claim(agent=worker)
        task_start(task=task, agent=worker)
        task_complete(
            task=task,
            agent=worker,
            result={"summary": "done"},
            artifacts=outputs_for(
                phase_dict(requirements), {"id": task.pk, "title": task.title, "ticket_id": ticket.pk}
            ),
            completed_criteria=requirements.done_definitions,
        )
        gate_tickets.append(ticket.pk)

    # Tickets in a phase with default tasks and none yet: phase entry gives them their tasks.
    fresh = [
        ticket_create(board=board, title=f"Fresh {n}", actor=alice, phase="PHASE_IMPLEMENTATION").pk
        for n in range(FRESH_TICKETS)
    ]

    # Running tasks long past their time-out, with no retries left; their agents are alive.
    late = []
    for number in range(LATE_TASKS):
        ticket = ticket_create(board=board, title=f"Late {number}", actor=alice, phase="PHASE_TESTING")
        [task] = ticket_phase_enter(ticket=ticket, actor=alice)
        agent, _ = agent_create(name=f"late-{number}", boards=[board], capabilities=caps, actor=alice)
        assert task_claim(agent=agent).pk == task.pk
        task_start(task=task, agent=agent)
        Task.objects.filter(pk=task.pk).update(
            started_at=timezone.now() - timedelta(hours=2), timeout_seconds=60, max_retries=0
        )
        late.append(task.pk)

    # Agents that stopped sending heartbeats with a task in hand.
    silent = []
    for number in range(SILENT_AGENTS):
        ticket = ticket_create(board=board, title=f"Silent {number}", actor=alice, phase="PHASE_DESIGN")
        ticket_phase_enter(ticket=ticket, actor=alice)
        agent, _ = agent_create(name=f"silent-{number}", boards=[board], capabilities=caps, actor=alice)
        task_start(task=task_claim(agent=agent), agent=agent)
        Agent.objects.filter(pk=agent.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))
        silent.append(agent.pk)

    # Tickets without progress for hours: a failed task in Backlog, everything dated back.
    stuck = []
    long_ago = timezone.now() - timedelta(hours=3)
    for number in range(STUCK_TICKETS):
        ticket = ticket_create(board=board, title=f"Stuck {number}", actor=alice)
        task = Task.objects.create(ticket=ticket, phase=ticket.phase, title="Triage", status=Task.Status.FAILED)
        Ticket.objects.filter(pk=ticket.pk).update(updated_at=long_ago)
        PhaseHistory.objects.filter(ticket=ticket).update(created_at=long_ago)
        Task.objects.filter(pk=task.pk).update(updated_at=long_ago)
        stuck.append(ticket.pk)

    # Idle agents, alive, waiting for work; the worker rests too.
    for number in range(IDLE_AGENTS):
        agent, _ = agent_create(name=f"idle-{number}", boards=[board], capabilities=caps, actor=alice)
        agent_heartbeat(agent=agent)
    agent_heartbeat(agent=worker)
    return {"gate": gate_tickets, "fresh": fresh, "late": late, "silent": silent, "stuck": stuck}


def orchestrator(tmp_path, name):
    env = {
        **os.environ,
        **_server_database_env(),
        "DJANGO_SETTINGS_MODULE": "omoi_site.settings",
        "OMOI_ORCHESTRATOR_BATCH": "7",  # small batches: every duty takes several rounds, so the processes interleave
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with open(tmp_path / f"{name}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", "orchestrate", "--interval", "0.2"],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def quiet_for(seconds, timeout=90):
    """Wait until no event has been written for `seconds`: the orchestrators have nothing left to do."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        current = Event.objects.order_by("-id").values_list("id", flat=True).first()
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return
        time.sleep(0.2)
    raise AssertionError("The orchestrators kept writing events")


def terminate(processes, tmp_path):
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        assert process.wait(timeout=30) == 0, (tmp_path / "logs").parent


def assert_each_piece_done_once(work, board):
    events = Event.objects.filter(board=board)

    # Assignments: one event per claim, and each claim is one attempt; nobody holds two tasks.
    assigned = Counter(int(e) for e in events.filter(type="task.assigned").values_list("entity_id", flat=True))
    attempts = dict(Task.objects.filter(ticket__board=board).values_list("pk", "attempt"))
    assert {pk: n for pk, n in assigned.items() if n != attempts[pk]} == {}
    holding = Task.objects.in_hand().values("assigned_agent").annotate(n=Count("pk")).filter(n__gt=1)
    assert list(holding) == []

    # Time-outs: each late task failed once, as a time-out, and stays failed (no retries left).
    failures = Counter(
        int(e.entity_id) for e in events.filter(type="task.failed", entity_id__in=[str(pk) for pk in work["late"]])
    )
    assert failures == dict.fromkeys(work["late"], 1)
    assert set(Task.objects.filter(pk__in=work["late"]).values_list("status", flat=True)) == {"failed"}

    # Silent agents: each went offline once.
    offline = Counter(int(e) for e in events.filter(type="agent.offline").values_list("entity_id", flat=True))
    assert offline == dict.fromkeys(work["silent"], 1)

    # Gates: each passing ticket advanced once, out of Requirements.
    advanced = Counter(
        int(e.entity_id)
        for e in events.filter(type="ticket.transitioned", actor="orchestrator")
        if e.payload.get("from") == "PHASE_REQUIREMENTS"
    )
    assert advanced == dict.fromkeys(work["gate"], 1)
    assert set(Ticket.objects.filter(pk__in=work["gate"]).values_list("phase__key", flat=True)) == {"PHASE_DESIGN"}

    # Phase entry: every fresh ticket got its phase's tasks, none twice.
    twice = (
        Task.objects.filter(ticket__board=board)
        .values("ticket", "phase", "title")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
    )
    assert list(twice) == []
    entered = set(Task.objects.filter(ticket__in=work["fresh"]).values_list("ticket", flat=True))
    assert entered == set(work["fresh"])

    # Rescues: one per stuck ticket, with one diagnosis.
    assert sorted(TicketRescue.objects.values_list("ticket", flat=True)) == sorted(work["stuck"])
    assert Discovery.objects.filter(discovery_type="diagnostic_no_result").count() == len(work["stuck"])


def assert_nothing_lost_or_stuck(board, tasks_before):
    tasks = Task.objects.filter(ticket__board=board)
    assert tasks_before <= set(tasks.values_list("pk", flat=True))
    # A task in hand has a holder who is not offline; a task not in hand has none.
    assert not tasks.in_hand().filter(assigned_agent__isnull=True).exists()
    assert not tasks.in_hand().filter(assigned_agent__status="offline").exists()
    assert not tasks.filter(status="pending", assigned_agent__isnull=False).exists()
    # Every idle agent with work it could take has some: the queue is not stuck.
    ready = tasks.ready().count()
    free = Agent.objects.filter(status="idle", revoked_at__isnull=True).exclude(tasks__status__in=Task.OPEN_STATUSES)
    assert ready == 0 or free.count() == 0


def test_three_orchestrators_do_each_piece_of_work_exactly_once(work, board, tmp_path):
    tasks_before = set(Task.objects.values_list("pk", flat=True))
    processes = [orchestrator(tmp_path, f"orchestrator-{n}") for n in range(3)]
    try:
        quiet_for(3)
    finally:
        terminate(processes, tmp_path)
    assert_each_piece_done_once(work, board)
    assert_nothing_lost_or_stuck(board, tasks_before)


def test_an_orchestrator_killed_at_any_moment_loses_nothing_and_the_next_one_finishes(work, board, tmp_path):
    tasks_before = set(Task.objects.values_list("pk", flat=True))
    moments = random.Random(8).sample([0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 2.0], 5)
    for number, moment in enumerate(moments):
        process = orchestrator(tmp_path, f"killed-{number}")
        time.sleep(moment)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    survivor = orchestrator(tmp_path, "survivor")
    try:
        quiet_for(3)
    finally:
        terminate([survivor], tmp_path)
    assert_each_piece_done_once(work, board)
    assert_nothing_lost_or_stuck(board, tasks_before)
