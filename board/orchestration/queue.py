"""The orchestrator's queue steps: take silent agents off the queue, time out late tasks, assign ready tasks.

Each step finds at most `batch` candidates with one query and hands each to a
service that re-checks it under a lock or a conditional update, so two
orchestrators running the same step over the same rows never both act on one:

- `release_silent_agents`: an agent silent for OMOI_MISSED_HEARTBEATS heartbeat
  intervals goes offline (`agent.offline`) and each task it held fails with
  "Agent X went silent", a retry like any failure (`agent_mark_offline`).
- `time_out_tasks`: a task assigned but not started within OMOI_START_TIMEOUT,
  or running past its time-out, fails with a time-out error through the
  failure path; its `task.failed` event says `timed_out: true` (`task_time_out`).
- `assign_tasks`: each idle agent with ready work it matches gets the task its
  own claim would take, one per agent (`task_assign`, the claim's rule).

A step returns True when it filled its batch: there may be more right now.
"""

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import Agent, Task
from ..services import agent_mark_offline, agent_silence_limit, agents_silent, task_assign, task_time_out


def release_silent_agents(*, now=None, batch=None):
    """Take agents that stopped sending heartbeats off the queue, longest silent first; their tasks go back."""
    now = now or timezone.now()
    batch = batch or settings.OMOI_ORCHESTRATOR_BATCH
    silent = list(agents_silent(now=now).order_by("seen", "pk")[:batch])
    for agent in silent:
        agent_mark_offline(agent=agent, now=now)
    return len(silent) >= batch


def time_out_tasks(*, now=None, batch=None):
    """Fail the tasks held past their time (`Task.objects.overdue`), oldest assignment first."""
    now = now or timezone.now()
    batch = batch or settings.OMOI_ORCHESTRATOR_BATCH
    late = list(Task.objects.overdue(now).only("pk", "status", "attempt").order_by("assigned_at", "pk")[:batch])
    for task in late:
        task_time_out(task=task, now=now)
    return len(late) >= batch


def assign_tasks(*, now=None, batch=None):
    """Give each idle agent that has ready work it matches the task its own claim would take.

    Idle is: status idle, not revoked, heard from within the silence limit (a
    heartbeat, else its registration), holding no task. Only agents with work
    are candidates (the same `matching` rule, asked in the same query), so
    agents with nothing to do never take the batch's places.
    """
    now = now or timezone.now()
    batch = batch or settings.OMOI_ORCHESTRATOR_BATCH
    holding = Task.objects.in_hand().filter(assigned_agent=OuterRef("pk"))
    work = Task.objects.ready(now).matching(OuterRef("pk"))
    idle = (
        Agent.objects.filter(status=Agent.Status.IDLE, revoked_at__isnull=True)
        .alias(seen=Coalesce("last_heartbeat", "created_at"))
        .filter(seen__gte=now - agent_silence_limit())
        .filter(~Exists(holding), Exists(work))
        .order_by("pk")
    )
    assigned = sum(task_assign(agent=agent, now=now) is not None for agent in idle[:batch])
    return assigned >= batch
