"""Tasks and the queue: create in any phase, claim (one task per agent, never twice), start, complete, fail, time out.

Every claim takes a new attempt (`Task.attempt`), so a report that comes from
an attempt the queue has since given up on (timed out, its agent gone silent)
is refused instead of overwriting the work of the attempt that replaced it.
"""

import contextlib
import json
import random
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Exists, F
from django.utils import timezone

from phases.models import Phase

from ..errors import TaskStateError, TransitionRefused
from ..events import ORCHESTRATOR, EventType, actor_label, event_emit, task_payload
from ..models import Agent, Board, Priority, Task, Ticket, running_time_limit
from .claim_sql import claim_statement, queue_head
from .inputs import clean_capabilities, clean_priority, clean_text, resolve_phase

PRIORITY_SCORE = {Priority.LOW: 1.0, Priority.MEDIUM: 2.0, Priority.HIGH: 3.0, Priority.CRITICAL: 4.0}
BOOST_POINTS = 1.0
DEPENDENT_POINTS = 0.5
AGE_POINTS_PER_DAY = 1.0
# The instant Task.score is stated at (see task_score); any fixed instant gives the same order.
SCORE_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

DEFAULT_RETRY_BACKOFF_SECONDS = 30
# The jitter's source: one generator for the process, seeded by tests that need a known spread.
RETRY_JITTER = random.Random()


def task_score(*, base, created_at, now, boost=False, dependents=0):
    """A task's place in the queue at `now`: the ready task with the highest score is handed out first.

        score = base + 1 (boosted by a discovery) + 0.5 × dependents + 1 × days waited

    - base: the priority's weight (LOW 1, MEDIUM 2, HIGH 3, CRITICAL 4), or the
      score given when the task was created, which replaces it;
    - boost: a discovery that asked for a priority boost adds a point, on top
      of the priority it raised by one level;
    - dependents: half a point for each task waiting on this one (counted as
      each is created), so the work that unblocks others goes first;
    - age: a point per day since the task was created (`now - created_at`), so
      waiting work overtakes fresh work one priority higher after a day and
      low-priority work never starves.

    Ties go to the older task, then the lower id. Every task ages at the same
    rate, so which of two tasks comes first never depends on `now`: `Task.score`
    stores the score at one fixed instant (`SCORE_EPOCH`; negative for tasks
    created later, which is only a shift) and the claim orders by that indexed
    column, `-score, created_at, id`, with nothing to refresh. `task_score_now`
    adds back the age every task shares.
    """
    waited_days = (now - created_at).total_seconds() / 86400
    return base + (BOOST_POINTS if boost else 0.0) + DEPENDENT_POINTS * dependents + AGE_POINTS_PER_DAY * waited_days


def task_score_now(task, *, now=None):
    """The task's score at `now` (what agents are shown), from the score stored at SCORE_EPOCH."""
    now = now or timezone.now()
    return task.score + AGE_POINTS_PER_DAY * (now - SCORE_EPOCH).total_seconds() / 86400


def retry_delay(*, retry_count, base, cap, rng=RETRY_JITTER):
    """How long a failed task waits before it is offered again: exponential back-off with "equal jitter".

    The ceiling doubles with each retry already made, `base × 2^retry_count`
    seconds, and never passes `cap`; the task waits half the ceiling plus a
    random share of the other half. The fixed half keeps a retry from coming
    back at once; the random half spreads tasks that failed together (a
    database down, an agent pool restarted) so they do not return together.
    """
    ceiling = min(float(cap), float(base) * 2.0 ** min(retry_count, 64))
    return timedelta(seconds=ceiling / 2 + rng.uniform(0, ceiling / 2))


def task_retry_delay(task, *, rng=RETRY_JITTER):
    """The back-off before `task`'s next retry, from its phase's settings or the site's defaults."""
    phase = task.phase
    base = phase.retry_backoff_seconds
    cap = phase.retry_backoff_max_seconds
    return retry_delay(
        retry_count=task.retry_count,
        base=DEFAULT_RETRY_BACKOFF_SECONDS if base is None else base,
        cap=settings.OMOI_RETRY_BACKOFF_MAX.total_seconds() if cap is None else cap,
        rng=rng,
    )


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
    boost=False,
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
    through the transition service. Its score is `task_score`'s: `score`, when
    given, replaces the priority's weight; `boost` is a discovery's boost; each
    dependency still open gains the points of one more dependent.

    The input is checked before the transaction begins, and the writes take
    no savepoint of their own (one statement each way, and a discovery's
    branch makes one): a refusal leaves the caller's transaction untouched,
    while an error during the writes marks it for rollback, as it would undo
    any caller that does not catch it.
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
    base = PRIORITY_SCORE[priority] if score is None else float(score)
    required_capabilities = clean_capabilities(required_capabilities, field="required_capabilities")
    with transaction.atomic(savepoint=False):
        # The score counts age from the clock read here; the insert stamps created_at a moment later, which
        # keeps the same order (microseconds are 1e-11 of a point).
        created = timezone.now()
        task = Task.objects.create(
            score=task_score(base=base, boost=boost, created_at=created, now=SCORE_EPOCH),
            ticket=ticket,
            phase=phase,
            title=title,
            description=description or "",
            task_type=task_type,
            priority=priority,
            required_capabilities=required_capabilities,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            parent=parent,
            created_by=actor_label(actor),
        )
        if dependencies:
            task.dependencies.set(dependencies)
            Task.objects.filter(pk__in=[dep.pk for dep in dependencies], status__in=Task.OPEN_STATUSES).update(
                score=F("score") + DEPENDENT_POINTS
            )
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


@transaction.atomic
def task_claim(*, agent, board=None, now=None):
    """The task `agent` is to work on: the one it holds, else the best ready task it may do; None when there is none.

    One task per agent at a time. An agent that holds a task, assigned or
    running, gets that one back (the oldest if it somehow holds several), with
    its attempt unchanged: that is also how an agent learns what the
    orchestrator assigned to it. With `board`, only that board's work is
    considered, and a task held on another board answers None.

    Otherwise the agent takes the ready task with the highest score (see
    `task_score`) among those it matches (`Task.objects.matching`): a new
    attempt, taken in one conditional update (`_task_take_best`), so two agents
    never get the same task and an agent never ends up holding two, on any
    database. Where the database locks rows, the agent's row is locked first,
    so its own concurrent calls take turns.
    """
    now = now or timezone.now()
    live = Agent.objects.filter(pk=agent.pk, revoked_at__isnull=True)
    if not _agent_locked(live):
        return None
    task = _task_take_best(agent, idle_only=False, board=board, now=now, actor=agent)
    if task is not None:
        return task  # a task it matches is on one of its boards: taking one proves membership
    held = _task_in_hand(agent)
    if board is None:
        return held
    if not agent.boards.filter(pk=board.pk).exists():
        raise PermissionDenied(f"Agent {agent.name} is not on board {board.slug}.")
    return held if held is not None and held.ticket.board_id == board.pk else None


@transaction.atomic
def task_assign(*, agent, now=None, actor=ORCHESTRATOR):
    """The orchestrator's claim for an idle agent: the task `task_claim` would give it, taken the same way.

    None when the agent is not idle, revoked, already holds a task, is being
    handled by another orchestrator (its row is locked: skipped, not waited
    for), or no ready task matches it. The agent learns of its new task from
    its next claim.
    """
    now = now or timezone.now()
    idle = Agent.objects.filter(pk=agent.pk, revoked_at__isnull=True, status=Agent.Status.IDLE)
    if not _agent_locked(idle, skip_locked=True):
        return None
    return _task_take_best(agent, idle_only=True, board=None, now=now, actor=actor)


def _agent_locked(agents, *, skip_locked=False):
    """Lock the agent's row, where the database locks rows; whether `agents` (the agent, if fit to claim) found it.

    SQLite has no row locks and needs none: the transaction took the
    database's write lock at BEGIN (IMMEDIATE), so writers take turns, and the
    claim's update checks `agents` itself. No statement is spent there.
    """
    if not connection.features.has_select_for_update:
        return True
    return agents.select_for_update(skip_locked=skip_locked).exists()


def _task_in_hand(agent):
    return (
        Task.objects.in_hand()
        .filter(assigned_agent=agent, assigned_agent__revoked_at__isnull=True)
        .select_related("ticket__board", "phase", "assigned_agent")
        .with_dependency_ids()
        .order_by("assigned_at", "pk")
        .first()
    )


QUEUE_ORDER = ("-score", "created_at", "id")
# How much of the head of the queue a claim looks at first (see _task_take_best).
QUEUE_HEAD = 100


def _task_take_best(agent, *, idle_only, board, now, actor):
    """Take the best ready task `agent` matches, in one update; None when there is none (or it holds one).

    The update (`claim_sql.claim_statement`) picks its row with a subquery,
    the first task in `QUEUE_ORDER` that is ready and that the agent matches
    (`Task.objects.ready(now).matching(agent)`, said in SQL), and takes it
    only while it is still pending, the agent is still fit to claim and
    holds nothing; it returns the row it took. Where the database can skip
    locked rows, the subquery locks its candidate with SKIP LOCKED, so
    concurrent claims take the next tasks in line instead of queueing behind
    the same one; SQLite runs one writer at a time, so there the candidate it
    picks is still free, and its planner walks the queue in order by an
    index, stopping at the first task that fits.

    PostgreSQL first reads the ids of the QUEUE_HEAD first pending tasks, from
    the task table alone, and the update looks among those; the rest of the
    queue only when the head has nothing for this agent (a second subquery,
    evaluated only then). Without the head, a planner that does not know the
    table yet (a fresh bulk load, no statistics) checks every pending task's
    dependencies, board and capabilities before sorting.
    """
    heads = [None]
    if connection.vendor == "postgresql":
        # Apart, not as a subquery: in one statement the planner may still check every pending task first and
        # match them against the head last. A head shorter than QUEUE_HEAD is the whole queue.
        head = queue_head(QUEUE_HEAD)
        if not head:
            return None
        heads = [head] + (heads if len(head) == QUEUE_HEAD else [])
    sql, params = claim_statement(agent, board=board, now=now, idle_only=idle_only, heads=heads)
    taken = list(Task.objects.raw(sql, params))
    if not taken:
        return None
    task = taken[0]
    returned = {name: vars(task).pop(name) for name in ("phase_key", "board_id", "board_slug")}
    task.dependency_ids = json.loads(task.dependency_ids)
    # The rows the answer and the event name, from what the update returned: only the fields they read are
    # loaded, any other is read from the database if asked for.
    db = task._state.db
    task.phase = Phase.from_db(db, ["id", "key"], [task.phase_id, returned["phase_key"]])
    if board is None:
        board = Board.from_db(db, ["id", "slug"], [returned["board_id"], returned["board_slug"]])
    task.ticket = Ticket.from_db(db, ["id", "board_id"], [task.ticket_id, board.pk])
    task.ticket.board = board
    task.assigned_agent = agent
    changes = {"status": Agent.Status.BUSY}
    if isinstance(actor, Agent):
        changes["last_heartbeat"] = now  # asking for work is a sign of life; an assignment is not
    Agent.objects.filter(pk=agent.pk).update(**changes)
    event_emit(
        board=board,
        type=EventType.TASK_ASSIGNED,
        entity=task,
        payload=task_payload(task, attempt=task.attempt),
        actor=actor,
    )
    return task


@contextlib.contextmanager
def _holders_report(task, agent, allowed, attempt, locked):
    """The transaction of a holder's report on `task`, giving the task as it is there, once it passed the checks.

    The checks: the task is held by `agent`, in one of the `allowed` states
    and, with `attempt`, still at that attempt. Without `locked`, this is a
    transaction of its own, which reads the task again with its row locked.
    With `locked`, the caller read it so in its own transaction: the checks
    come before anything is written, so a refusal leaves that transaction as
    it was, and the writes take no savepoint (an error during them marks the
    caller's transaction for rollback, as in `task_create`).
    """
    if locked:
        _check_held(task, agent, allowed, attempt)
        with transaction.atomic(savepoint=False):
            yield task
        return
    with transaction.atomic():
        task = Task.objects.select_for_update(of=("self",)).select_related("ticket__board", "phase").get(pk=task.pk)
        _check_held(task, agent, allowed, attempt)
        yield task


def _check_held(task, agent, allowed, attempt):
    if attempt is not None and attempt != task.attempt:
        if attempt < task.attempt:
            raise TaskStateError(
                f"Task {task.pk}'s attempt {attempt} was superseded by attempt {task.attempt}; "
                "its report is not recorded, so drop this work and ask for your next task."
            )
        raise TaskStateError(f"Task {task.pk} has no attempt {attempt}; its current attempt is {task.attempt}.")
    if task.assigned_agent_id != agent.pk:
        holder = "nobody" if task.assigned_agent_id is None else "another agent"
        raise TaskStateError(f"Task {task.pk} is held by {holder}, not by {agent.name}.")
    if task.status not in allowed:
        raise TaskStateError(f"Task {task.pk} is {task.status}; this needs it {' or '.join(str(s) for s in allowed)}.")
    task.assigned_agent = agent


def task_start(*, task, agent, attempt=None, now=None, locked=False):
    """The holder starts the task; with `attempt`, only if that attempt is still the task's.

    `locked`: the caller read `task` with its row locked, in the transaction
    it is in (see `_holders_report`); the same for complete and fail.
    """
    with _holders_report(task, agent, [Task.Status.ASSIGNED], attempt, locked) as task:
        task.status = Task.Status.RUNNING
        task.started_at = now or timezone.now()
        task.save(update_fields=["status", "started_at", "updated_at"])
        event_emit(
            board=task.ticket.board,
            type=EventType.TASK_STARTED,
            entity=task,
            payload=task_payload(task, attempt=task.attempt),
            actor=agent,
        )
    return task


def task_complete(
    *, task, agent, result=None, artifacts=(), completed_criteria=(), attempt=None, now=None, locked=False
):
    """The holder reports the task done, with its result, artifacts and the done-definitions it met.

    With `attempt`, a report from an attempt the queue has given up on (timed
    out, or its agent went silent, and claimed again since) is refused and
    changes nothing.
    """
    with _holders_report(task, agent, [Task.Status.ASSIGNED, Task.Status.RUNNING], attempt, locked) as task:
        task.status = Task.Status.COMPLETED
        task.result = result
        task.artifacts = list(artifacts)
        task.completed_criteria = list(completed_criteria)
        task.finished_at = now or timezone.now()
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
            payload=task_payload(task, attempt=task.attempt, missing_criteria=missing),
            actor=agent,
        )
    return task


def task_fail(*, task, agent, error, retryable=True, attempt=None, now=None, actor=None, locked=False):
    """The holder's attempt failed. A retryable failure goes back to the queue after a back-off, while retries last.

    The back-off is `task_retry_delay`'s. After `max_retries` retries the task
    stays failed, and the event says `will_retry: false`. `actor` is who
    reports it: the holder itself by default, the orchestrator for a holder
    that went silent.
    """
    error = clean_text(error, field="error", required=True)
    with _holders_report(task, agent, [Task.Status.ASSIGNED, Task.Status.RUNNING], attempt, locked) as task:
        return _task_failed(task, actor=actor or agent, error=error, retryable=retryable, now=now or timezone.now())


@transaction.atomic
def task_time_out(*, task, now=None, actor=ORCHESTRATOR):
    """Fail a task held past its time, through the failure path: retried after a back-off while retries last.

    Past its time is `Task.objects.overdue`: assigned but not started within
    OMOI_START_TIMEOUT, or running longer than its time-out. The update is
    guarded on the status and attempt the caller saw in `task`: when the task
    has moved on since (started, reported, timed out by another orchestrator),
    nothing changes and None is returned. The task.failed event says
    `timed_out: true`.
    """
    now = now or timezone.now()
    late = (
        Task.objects.filter(pk=task.pk, status=task.status, attempt=task.attempt)
        .overdue(now)
        .select_for_update(of=("self",))
        .select_related("ticket__board", "phase", "assigned_agent")
        .first()
    )
    if late is None:
        return None
    if late.status == Task.Status.ASSIGNED:
        seconds = int(settings.OMOI_START_TIMEOUT.total_seconds())
        error = f"Timed out: not started within {seconds} s of being assigned."
    else:
        seconds = int(running_time_limit(late.timeout_seconds, late.phase).total_seconds())
        error = f"Timed out: still running {seconds} s after it started."
    return _task_failed(late, actor=actor, error=error, retryable=True, now=now, timed_out=True)


def _task_failed(task, *, actor, error, retryable, now, timed_out=False):
    will_retry = retryable and task.retry_count < task.max_retries
    task.error = error
    task.finished_at = None if will_retry else now
    if will_retry:
        task.next_attempt_at = now + task_retry_delay(task)
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
            attempt=task.attempt,
            error=error,
            timed_out=timed_out,
            # Who held it: the actor may be the orchestrator (a time-out, a silent agent), not the agent.
            held_by=agent.name if agent is not None else None,
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
    holds_one = Task.objects.in_hand().filter(assigned_agent=agent)
    Agent.objects.filter(pk=agent.pk, status=Agent.Status.BUSY).filter(~Exists(holds_one)).update(
        status=Agent.Status.IDLE
    )
