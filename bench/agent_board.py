"""A board as agents find it after weeks of work: 10,000 tickets and 50,000 tasks, for bench.api and bench.live.

Not run on its own; import after django.setup(). Rows are bulk-created but
valid as the services would leave them: tickets in the phases of the
board's workflow (scenarios.PHASE_SHARE: a long backlog, a long tail of done
work, some blocked) at gapped positions in their columns; each task in a
phase the ticket has reached, with the score `task_create` gives (priority
weight, a discovery boost now and then, age since a creation date within
the last four weeks). Tasks of the phases a ticket has left are done (a few
failed for good or cancelled); those of its current phase mostly wait,
some held by busy agents (one task each, as the claim allows), a few failed
and waiting for their retry. On PostgreSQL the tables are analysed
afterwards, as a deployment's autovacuum would have done.
"""

import contextlib
import secrets
from collections import defaultdict
from datetime import timedelta

from django.db import connection
from django.db.models import Count
from django.utils import timezone

from board.models import Agent, Board, Task, Ticket
from board.services import POSITION_GAP, PRIORITY_SCORE, TOKEN_PREFIX, task_score, token_hash
from board.services.tasks import SCORE_EPOCH
from phases.defaults import DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow

from .scenarios import AREAS, PRIORITY_WEIGHT, SENTENCES, SUBJECTS, VERBS, phase_counts

TICKETS = 10_000
TASKS = 50_000
# Agents already holding a task when the benchmark starts.
BUSY_AGENTS = 200
AGE_DAYS = 28
# What becomes of a task of a phase its ticket has left, and of one in its ticket's current phase.
PAST_STATUS = {Task.Status.COMPLETED: 94, Task.Status.FAILED: 3, Task.Status.CANCELLED: 3}
CURRENT_STATUS = {Task.Status.PENDING: 82, Task.Status.COMPLETED: 12, Task.Status.FAILED: 6}


@contextlib.contextmanager
def own_creation_dates(model):
    """Let bulk_create keep the `created_at` given (auto_now_add would set every row to now)."""
    field = model._meta.get_field("created_at")
    field.auto_now_add = False
    try:
        yield
    finally:
        field.auto_now_add = True


def agent_tokens(board, count, *, name):
    """`count` agents on `board`, created in bulk: [(agent, token)]; named `<name>-<n>`."""
    tokens = [f"{TOKEN_PREFIX}{name}-{n:06d}-{secrets.token_urlsafe(16)}" for n in range(count)]
    made = Agent.objects.bulk_create(
        Agent(name=f"{name}-{n}", token_hash=token_hash(token), token_prefix=token[: len(TOKEN_PREFIX) + 6])
        for n, token in enumerate(tokens)
    )
    Agent.boards.through.objects.bulk_create(Agent.boards.through(agent=agent, board=board) for agent in made)
    return list(zip(made, tokens, strict=True))


def populate(*, slug, rng, tickets=TICKETS, tasks=TASKS, busy_agents=BUSY_AGENTS):
    """Create the board `slug` on the default workflow with its tickets and tasks; returns the board."""
    workflow = Workflow.objects.get(slug=DEFAULT_WORKFLOW_SLUG)
    board = Board.objects.create(name=f"Bench {slug}", slug=slug, workflow=workflow)
    phases = {phase.key: phase for phase in workflow.phases.all()}
    column_of = {
        phase.pk: column.pk for column in workflow.columns.prefetch_related("phases") for phase in column.phases.all()
    }
    # The phases a ticket passes through in order; Blocked holds tickets stopped anywhere along the way.
    path = [phase for phase in workflow.phases.in_order() if phase.key != "PHASE_BLOCKED"]

    now = timezone.now()
    keys = [key for key, count in phase_counts(tickets).items() for _ in range(count)]
    rng.shuffle(keys)
    last_position = defaultdict(int)
    rows = []
    for key in keys:
        phase = phases[key]
        last_position[column_of[phase.pk]] += POSITION_GAP
        blocked = key == "PHASE_BLOCKED"
        rows.append(
            Ticket(
                board=board,
                title=f"{rng.choice(VERBS)} {rng.choice(SUBJECTS)} {rng.choice(AREAS)}",
                description=" ".join(rng.sample(SENTENCES, 3)),
                priority=rng.choices(list(PRIORITY_WEIGHT), weights=list(PRIORITY_WEIGHT.values()))[0],
                phase=phase,
                position=last_position[column_of[phase.pk]],
                is_blocked=blocked,
                blocked_reason="Waiting for access to the staging database." if blocked else "",
            )
        )
    made = Ticket.objects.bulk_create(rows, batch_size=1000)
    if made[0].pk is None:  # databases that do not return ids from a bulk insert
        made = list(Ticket.objects.filter(board=board).order_by("pk"))

    # How far each ticket has come along the path (a blocked one: somewhere before Deployment).
    reached = {}
    for ticket in made:
        if ticket.phase.key == "PHASE_BLOCKED":
            reached[ticket.pk] = rng.randrange(1, 5)
        else:
            reached[ticket.pk] = next(index for index, phase in enumerate(path) if phase.pk == ticket.phase_id)

    task_rows = []
    for number in range(tasks):
        ticket = made[number % len(made)]
        stage = rng.randint(0, reached[ticket.pk])
        phase = path[stage]
        current = stage == reached[ticket.pk] and phase.key != "PHASE_DONE"
        weights = CURRENT_STATUS if current else PAST_STATUS
        status = rng.choices(list(weights), weights=list(weights.values()))[0]
        created_at = now - timedelta(days=rng.uniform(0, AGE_DAYS))
        boost = rng.random() < 0.05
        task = Task(
            ticket=ticket,
            phase=phase,
            title=f"{rng.choice(VERBS)} {rng.choice(SUBJECTS)}",
            priority=ticket.priority,
            score=task_score(base=PRIORITY_SCORE[ticket.priority], boost=boost, created_at=created_at, now=SCORE_EPOCH),
            status=status,
            max_retries=3,
            created_by="agent:bench",
            created_at=created_at,
        )
        if status in (Task.Status.COMPLETED, Task.Status.FAILED):
            task.attempt = 1 if status == Task.Status.COMPLETED else 4
            task.assigned_at = task.started_at = created_at + timedelta(minutes=rng.uniform(1, 600))
            task.finished_at = task.started_at + timedelta(minutes=rng.uniform(1, 120))
        if status == Task.Status.COMPLETED:
            task.result = {"summary": "Done as the phase asks."}
        elif status == Task.Status.FAILED:
            task.retry_count = task.max_retries
            task.error = "The test suite failed on the branch; see the report."
        task_rows.append(task)
    with own_creation_dates(Task):
        Task.objects.bulk_create(task_rows, batch_size=1000)

    hold_busy_tasks(board, busy_agents, rng, now)
    # A few tasks failed once and wait for their retry, which the queue must skip until then.
    retrying = list(
        Task.objects.filter(ticket__board=board, status=Task.Status.PENDING).values_list("pk", flat=True)[:200]
    )
    Task.objects.filter(pk__in=retrying).update(
        retry_count=1, attempt=1, error="Timed out.", next_attempt_at=now + timedelta(hours=1)
    )
    analyze()
    return board


def hold_busy_tasks(board, count, rng, now):
    """`count` agents on the board (fewer on a small board), each holding one of its pending tasks, half started."""
    pending = list(Task.objects.filter(ticket__board=board, status=Task.Status.PENDING).values_list("pk", flat=True))
    count = min(count, len(pending) // 4)
    holders = agent_tokens(board, count, name="busy")
    for (agent, _), pk in zip(holders, rng.sample(pending, count), strict=True):
        started = rng.random() < 0.5
        Task.objects.filter(pk=pk).update(
            status=Task.Status.RUNNING if started else Task.Status.ASSIGNED,
            assigned_agent=agent,
            attempt=1,
            assigned_at=now,
            started_at=now if started else None,
        )
    Agent.objects.filter(pk__in=[agent.pk for agent, _ in holders]).update(status=Agent.Status.BUSY, last_heartbeat=now)


def analyze():
    """Statistics for the planner, as a deployment has them (PostgreSQL; SQLite deployments rarely run ANALYZE)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")


def counts(board):
    """How many tickets and tasks the board holds, tasks by status, for the results."""
    by_status = dict(Task.objects.filter(ticket__board=board).order_by().values_list("status").annotate(n=Count("pk")))
    return {
        "tickets": Ticket.objects.filter(board=board).count(),
        "tasks": sum(by_status.values()),
        "tasks_by_status": by_status,
    }
