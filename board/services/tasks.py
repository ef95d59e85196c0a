"""Tasks and the queue: create in any phase, claim (never twice), start, complete, fail with retries, release."""

from datetime import timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.utils import timezone

from ..errors import TaskStateError, TransitionRefused
from ..events import EventType, actor_label, event_emit, task_payload
from ..models import Agent, Priority, Task
from .inputs import clean_capabilities, clean_priority, clean_text, resolve_phase

PRIORITY_SCORE = {Priority.LOW: 1.0, Priority.MEDIUM: 2.0, Priority.HIGH: 3.0, Priority.CRITICAL: 4.0}


@transaction.atomic
def task_create(
    *,
    ticket,
    title,
    actor,
    phase=None,
    description="",
    task_type="work",
    priority=None,
    score=None,
    dependencies=(),
    required_capabilities=None,
    max_retries=None,
    timeout_seconds=None,
    parent=None,
    event_payload=None,
):
    """Create a task in any phase of the ticket's workflow (the ticket's own phase by default).

    Tasks are free to start in another phase than the ticket's: an agent
    spawns work wherever it is needed, and the ticket's own phase moves only
    through the transition service.
    """
    title = clean_text(title, field="title", max_length=200, required=True)
    task_type = clean_text(task_type, field="task_type", max_length=64) or "work"
    workflow = ticket.board.workflow
    if phase is None:
        phase = ticket.phase
    else:
        try:
            phase = resolve_phase(workflow, phase)
        except TransitionRefused as exc:
            raise ValidationError({"phase": str(exc)}) from None
    priority = clean_priority(priority or ticket.priority)
    dependencies = list(dependencies)
    foreign = [dep.pk for dep in dependencies if dep.ticket.board_id != ticket.board_id]
    if foreign:
        raise ValidationError({"dependencies": f"Tasks {foreign} are on another board."})
    if parent is not None and parent.ticket.board_id != ticket.board_id:
        raise ValidationError({"parent_task": f"Task {parent.pk} is on another board."})
    if max_retries is None:
        max_retries = phase.max_retries if phase.max_retries is not None else 3
    if timeout_seconds is None:
        timeout_seconds = phase.timeout_seconds or 3600
    task = Task.objects.create(
        ticket=ticket,
        phase=phase,
        title=title,
        description=description or "",
        task_type=task_type,
        priority=priority,
        score=PRIORITY_SCORE[priority] if score is None else float(score),
        required_capabilities=clean_capabilities(required_capabilities, field="required_capabilities"),
        max_retries=max_retries,
        timeout_seconds=timeout_seconds,
        parent=parent,
        created_by=actor_label(actor),
    )
    if dependencies:
        task.dependencies.set(dependencies)
    event_emit(
        board=ticket.board,
        type=EventType.TASK_CREATED,
        entity=task,
        payload=task_payload(
            task,
            priority=task.priority,
            parent=parent.pk if parent else None,
            dependencies=[dep.pk for dep in dependencies],
            **(event_payload or {}),
        ),
        actor=actor,
    )
    return task


def task_claim(*, agent, board=None):
    """Hand the best ready task to `agent`, or None when there is none.

    Best is the highest score, then the oldest. The claim is a conditional
    update (`status = pending` still true), so two agents asking at once never
    get the same task, on any database. Where the database can skip locked
    rows, each claimer first locks its candidate with SKIP LOCKED: concurrent
    agents then take different tasks instead of queueing behind the same one.
    """
    if board is not None and not agent.boards.filter(pk=board.pk).exists():
        raise PermissionDenied(f"Agent {agent.name} is not on board {board.slug}.")
    candidates = Task.objects.ready().for_agent(agent)
    if board is not None:
        candidates = candidates.filter(ticket__board=board)
    candidates = candidates.order_by("-score", "created_at", "id")
    if connection.features.has_select_for_update_skip_locked and connection.vendor == "postgresql":
        return _task_claim_skip_locked(candidates, agent)
    candidates = candidates.values_list("pk", "required_capabilities")
    offset, batch = 0, 100
    while True:
        rows = list(candidates[offset : offset + batch])
        if not rows:
            return None
        for pk, required in rows:
            if not agent.has_capabilities(required):
                continue
            task = _task_take(pk, agent)
            if task is not None:
                return task
        offset += batch


@transaction.atomic
def _task_claim_skip_locked(candidates, agent):
    mine = candidates.filter(required_capabilities__contained_by=agent.capabilities or [])
    pk = mine.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True).first()
    return _task_take(pk, agent) if pk is not None else None


@transaction.atomic
def _task_take(pk, agent):
    now = timezone.now()
    taken = Task.objects.filter(pk=pk, status=Task.Status.PENDING).update(
        status=Task.Status.ASSIGNED, assigned_agent=agent, assigned_at=now, updated_at=now
    )
    if not taken:
        return None  # another agent was quicker
    task = Task.objects.select_related("ticket__board", "phase", "assigned_agent").get(pk=pk)
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.BUSY, last_heartbeat=now)
    event_emit(
        board=task.ticket.board, type=EventType.TASK_ASSIGNED, entity=task, payload=task_payload(task), actor=agent
    )
    return task


def _held_task(task, agent, allowed):
    task = Task.objects.select_for_update(of=("self",)).select_related("ticket__board", "phase").get(pk=task.pk)
    if task.assigned_agent_id != agent.pk:
        holder = "nobody" if task.assigned_agent_id is None else "another agent"
        raise TaskStateError(f"Task {task.pk} is held by {holder}, not by {agent.name}.")
    if task.status not in allowed:
        raise TaskStateError(f"Task {task.pk} is {task.status}; this needs it {' or '.join(str(s) for s in allowed)}.")
    task.assigned_agent = agent
    return task


@transaction.atomic
def task_start(*, task, agent):
    task = _held_task(task, agent, [Task.Status.ASSIGNED])
    task.status = Task.Status.RUNNING
    task.started_at = timezone.now()
    task.save(update_fields=["status", "started_at", "updated_at"])
    event_emit(
        board=task.ticket.board, type=EventType.TASK_STARTED, entity=task, payload=task_payload(task), actor=agent
    )
    return task


@transaction.atomic
def task_complete(*, task, agent, result=None, artifacts=(), completed_criteria=()):
    """The holder reports the task done, with its result, artifacts and the done-definitions it met."""
    task = _held_task(task, agent, [Task.Status.ASSIGNED, Task.Status.RUNNING])
    task.status = Task.Status.COMPLETED
    task.result = result
    task.artifacts = list(artifacts)
    task.completed_criteria = list(completed_criteria)
    task.finished_at = timezone.now()
    task.error = ""
    task.save(
        update_fields=["status", "result", "artifacts", "completed_criteria", "finished_at", "error", "updated_at"]
    )
    _agent_free(agent)
    missing = task.phase.missing_done_criteria(task.completed_criteria)
    event_emit(
        board=task.ticket.board,
        type=EventType.TASK_COMPLETED,
        entity=task,
        payload=task_payload(task, missing_criteria=missing),
        actor=agent,
    )
    return task


@transaction.atomic
def task_fail(*, task, agent, error, retryable=True):
    """The holder reports failure. A retryable failure goes back to the queue after a back-off, while retries last."""
    task = _held_task(task, agent, [Task.Status.ASSIGNED, Task.Status.RUNNING])
    error = clean_text(error, field="error", required=True)
    return _task_failed(task, actor=agent, error=error, retryable=retryable)


def _retry_delay(task):
    base = task.phase.retry_backoff_seconds or 30
    return timedelta(seconds=min(base * 2**task.retry_count, 24 * 3600))


def _task_failed(task, *, actor, error, retryable):
    now = timezone.now()
    will_retry = retryable and task.retry_count < task.max_retries
    task.error = error
    task.finished_at = None if will_retry else now
    if will_retry:
        task.next_attempt_at = now + _retry_delay(task)
        task.retry_count += 1
        task.status = Task.Status.PENDING
    else:
        task.status = Task.Status.FAILED
    agent = task.assigned_agent
    task.assigned_agent = None
    task.save(
        update_fields=[
            "status",
            "error",
            "finished_at",
            "next_attempt_at",
            "retry_count",
            "assigned_agent",
            "updated_at",
        ]
    )
    if agent is not None:
        _agent_free(agent)
    event_emit(
        board=task.ticket.board,
        type=EventType.TASK_FAILED,
        entity=task,
        payload=task_payload(
            task,
            error=error,
            will_retry=will_retry,
            retry_count=task.retry_count,
            next_attempt_at=task.next_attempt_at.isoformat() if will_retry else None,
        ),
        actor=actor,
    )
    return task


def task_release(task, *, actor, reason):
    """Put a task in hand back in the queue, without counting a retry."""
    task.status = Task.Status.PENDING
    task.assigned_agent = None
    task.save(update_fields=["status", "assigned_agent", "updated_at"])
    event_emit(
        board=task.ticket.board,
        type=EventType.TASK_RELEASED,
        entity=task,
        payload=task_payload(task, reason=reason),
        actor=actor,
    )


def _agent_free(agent):
    still_busy = Task.objects.filter(
        assigned_agent=agent, status__in=[Task.Status.ASSIGNED, Task.Status.RUNNING]
    ).exists()
    if not still_busy:
        Agent.objects.filter(pk=agent.pk, status=Agent.Status.BUSY).update(status=Agent.Status.IDLE)
