"""The runtime: boards, their tickets, each ticket's phase history, and the event log."""

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import NotSupportedError, models
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from phases.models import Phase, Workflow


class Priority(models.TextChoices):
    LOW = "LOW", "Low"
    MEDIUM = "MEDIUM", "Medium"
    HIGH = "HIGH", "High"
    CRITICAL = "CRITICAL", "Critical"

    @classmethod
    def rank(cls, value):
        """0 for LOW up to 3 for CRITICAL."""
        return cls.values.index(value)

    @classmethod
    def raised(cls, value):
        """One level up, CRITICAL staying CRITICAL."""
        values = cls.values
        return values[min(values.index(value) + 1, len(values) - 1)]


class BoardQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        if user.is_staff:
            return self
        return self.filter(members=user)

    def managed_by(self, user):
        """The boards whose members `user` may manage: staff manage every board, an owner the boards they own.

        Ownership counts only alongside membership: an owner taken off the
        board (in the admin, say) manages it no more.
        """
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_staff:
            return self
        return self.filter(owners=user).filter(members=user)


# Paths under /boards/ that are pages, not boards: a board with one of these slugs could not be reached.
RESERVED_BOARD_SLUGS = frozenset({"new"})


def validate_board_slug(value):
    if value in RESERVED_BOARD_SLUGS:
        raise ValidationError(f"“{value}” is reserved for a page of the site; choose another address.")


class Board(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True, validators=[validate_board_slug])
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="boards")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="boards")
    # The members who manage the board's members (always members too; see BoardQuerySet.managed_by).
    # A board with none is managed by staff alone, as every board was before owners.
    owners = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="owned_boards")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BoardQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Ticket(models.Model):
    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="tickets")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.MEDIUM)
    # PROTECT: a workflow reload must say where a used phase's tickets go.
    phase = models.ForeignKey(Phase, on_delete=models.PROTECT, related_name="tickets")
    # Gapped order within the ticket's column: a move rewrites one row.
    position = models.BigIntegerField(default=0)
    is_blocked = models.BooleanField("blocked", default=False)
    blocked_reason = models.TextField(blank=True)
    # Bumped by every change, so a client can tell whether its copy is current.
    version = models.PositiveIntegerField(default=1)
    # The last phase gate evaluation recorded for the ticket's current phase (met, missing, passed), so a
    # gate that does not pass is recorded once per change, not on every orchestrator pass.
    gate_state = models.JSONField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["board", "position", "id"]
        indexes = [models.Index(fields=["board", "phase", "position"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(is_blocked=True) | Q(blocked_reason=""), name="ticket_blocked_reason_only_when_blocked"
            )
        ]

    def __str__(self):
        return f"#{self.pk} {self.title}"

    def phase_tasks(self, tasks, *, left_at):
        """The tasks among `tasks` that count for the ticket's current phase.

        A task of the current phase counts unless it finished before the ticket
        last left this phase (`left_at`; None when it never did): an earlier
        visit's work does not open a later visit's gate, as when testing sends
        a ticket back to implementation. Open tasks always count, and so does
        work finished ahead of the first visit (a discovery may spawn tasks in
        a later phase).
        """
        return [
            task
            for task in tasks
            if task.phase_id == self.phase_id
            and not (left_at is not None and task.finished_at is not None and task.finished_at < left_at)
        ]

    def done_criteria(self, tasks, *, left_at):
        """Each done-definition of the current phase, as {"text", "met"}, in the phase's order.

        The one rule, for the ticket page and the phase gate alike: a
        done-definition is met once a completed task counting for the current
        phase (`phase_tasks`) reported it.
        """
        reported = [
            criterion
            for task in self.phase_tasks(tasks, left_at=left_at)
            if task.status == Task.Status.COMPLETED
            for criterion in task.completed_criteria or ()
        ]
        missing = set(self.phase.missing_done_criteria(reported))
        return [{"text": text, "met": text not in missing} for text in self.phase.done_definitions]

    def reported_artifacts(self, tasks, *, left_at):
        """The artifacts reported by the completed tasks counting for the current phase, in task order."""
        return [
            artifact
            for task in self.phase_tasks(tasks, left_at=left_at)
            if task.status == Task.Status.COMPLETED
            for artifact in task.artifacts or ()
        ]


class PhaseHistory(models.Model):
    class Kind(models.TextChoices):
        NORMAL = "normal", "Normal (allowed transition)"
        JUMP = "jump", "Jump (forced by the system)"
        OVERRIDE = "override", "Override (forced by staff)"
        DISCOVERY = "discovery", "Discovery"

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="history")
    # The keys are kept too: history outlives a phase removed by a workflow reload.
    from_phase = models.ForeignKey(Phase, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    to_phase = models.ForeignKey(Phase, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    from_key = models.CharField(max_length=64, blank=True)
    to_key = models.CharField(max_length=64)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.NORMAL)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=200)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["ticket", "created_at", "id"]
        verbose_name_plural = "phase history"

    def __str__(self):
        return f"{self.from_key or '(new)'} → {self.to_key}"


class Event(models.Model):
    """Append-only log of every state change: audit trail, activity feed and replay source."""

    board = models.ForeignKey(Board, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=64, db_index=True)
    entity_type = models.CharField(max_length=32)
    entity_id = models.CharField(max_length=64)
    payload = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    # The event's place in its board's log, in commit order, given by the database as the transaction
    # commits (board/migrations/0006_event_log_positions.py); until then it is the id, seen by no one else.
    # `previous_seq` is the board's event just before it, so a reader can tell a broadcast that follows
    # on from what it has from one after a gap.
    seq = models.BigIntegerField(null=True, editable=False)
    previous_seq = models.BigIntegerField(null=True, editable=False)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["board", "seq"]),
            models.Index(fields=["seq"]),
            models.Index(fields=["entity_type", "entity_id"]),
        ]

    def __str__(self):
        return f"{self.type} {self.entity_type}:{self.entity_id}"

    def as_message(self):
        """The event as sent to websocket clients: its `id` is its position in the board's log (see `seq`)."""
        return {
            "id": self.seq,
            "previous": self.previous_seq,
            "type": self.type,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "payload": self.payload,
            "actor": self.actor,
            "created_at": self.created_at.isoformat(),
        }


class Agent(models.Model):
    """An AI agent (or any automated worker) that claims tasks through the API with its own token."""

    class Status(models.TextChoices):
        IDLE = "idle", "Idle"
        BUSY = "busy", "Busy"
        OFFLINE = "offline", "Offline"

    name = models.CharField(max_length=100, unique=True)
    agent_type = models.CharField("type", max_length=50, default="worker")
    boards = models.ManyToManyField(Board, related_name="agents")
    # A specialist only claims tasks of this phase; None takes any phase.
    phase = models.ForeignKey(Phase, on_delete=models.SET_NULL, null=True, blank=True, related_name="agents")
    capabilities = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.IDLE)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    # SHA-256 of the token: tokens are long and random, so a slow hash adds nothing.
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_prefix = models.CharField(max_length=16, editable=False, help_text="The token's first characters.")
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def actor_label(self):
        return f"agent:{self.name}"

    @property
    def is_revoked(self):
        return self.revoked_at is not None

    def has_capabilities(self, required):
        """Whether the agent offers every capability in `required`.

        Asked of the database with `CapabilitiesWithin`, the expression the
        queue filters by, so this answer and the claim's can never disagree.
        """
        required = Value(list(required or []), output_field=models.JSONField())
        offered = Value(list(self.capabilities or []), output_field=models.JSONField())
        return Agent.objects.filter(pk=self.pk).filter(CapabilitiesWithin(required, offered)).exists()


class CapabilitiesWithin(models.Expression):
    """True when every capability in `required` is also in `offered`: the one rule for who may do a task.

    Both sides are JSON lists of names, given as expressions (a column, an
    `OuterRef`, a `Value`), compared exactly. PostgreSQL says it with jsonb
    containment (`<@`, as the `contained_by` lookup does); SQLite, which has no
    containment operator, walks both lists with `json_each` and compares value
    and JSON type, so the two databases agree on every list of names.
    """

    output_field = models.BooleanField()

    def __init__(self, required, offered):
        super().__init__()
        self.required, self.offered = required, offered

    def get_source_expressions(self):
        return [self.required, self.offered]

    def set_source_expressions(self, exprs):
        self.required, self.offered = exprs

    @staticmethod
    def sql(vendor, required, offered):
        """The condition in SQL, for SQL expressions `required` and `offered` (also written out in the claim's)."""
        if vendor == "postgresql":
            return f"(({required})::jsonb <@ ({offered})::jsonb)"
        if vendor == "sqlite":
            return (
                f"NOT EXISTS (SELECT 1 FROM json_each({required}) AS needed WHERE NOT EXISTS ("
                f"SELECT 1 FROM json_each({offered}) AS given "
                "WHERE given.type = needed.type AND given.value = needed.value))"
            )
        raise NotSupportedError(f"Capability matching is written for SQLite and PostgreSQL, not {vendor}.")

    def as_sql(self, compiler, connection):
        required, required_params = compiler.compile(self.required)
        offered, offered_params = compiler.compile(self.offered)
        return self.sql(connection.vendor, required, offered), (*required_params, *offered_params)


def running_time_limit(timeout_seconds, phase):
    """How long a task may run: its own `timeout_seconds`, else its phase's configured time-out, else an hour."""
    return timedelta(seconds=timeout_seconds or (phase.timeout_seconds if phase else None) or 3600)


class DependencyIds(models.Expression):
    """The ids of the tasks a task depends on, smallest first, as a JSON list: read with the task, not after it.

    `task_id` is an expression for the task's id (`F("pk")`, an `OuterRef`).
    Also written into the claim's statement (`sql`).
    """

    output_field = models.JSONField()

    def __init__(self, task_id):
        super().__init__()
        self.task_id = task_id

    def get_source_expressions(self):
        return [self.task_id]

    def set_source_expressions(self, exprs):
        (self.task_id,) = exprs

    @staticmethod
    def sql(vendor, task_id):
        """The list in SQL, for the SQL expression `task_id`; JSON text on both databases."""
        if vendor == "postgresql":
            return (
                '(SELECT COALESCE(jsonb_agg(dep."to_task_id" ORDER BY dep."to_task_id"), \'[]\'::jsonb) '
                f'FROM "board_task_dependencies" dep WHERE dep."from_task_id" = ({task_id}))'
            )
        if vendor == "sqlite":
            return (
                '(SELECT json_group_array(ids."to_task_id") FROM (SELECT dep."to_task_id" '
                f'FROM "board_task_dependencies" dep WHERE dep."from_task_id" = ({task_id}) '
                'ORDER BY dep."to_task_id") AS ids)'
            )
        raise NotSupportedError(f"Dependency lists are written for SQLite and PostgreSQL, not {vendor}.")

    def as_sql(self, compiler, connection):
        task_id, params = compiler.compile(self.task_id)
        return self.sql(connection.vendor, task_id), params


class TaskQuerySet(models.QuerySet):
    def ready(self, now=None):
        """Pending tasks whose dependencies are completed and whose back-off has passed."""
        now = now or timezone.now()
        unfinished = Task.dependencies.through.objects.filter(from_task=OuterRef("pk")).exclude(
            to_task__status=Task.Status.COMPLETED
        )
        return self.filter(status=Task.Status.PENDING).filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now), ~Exists(unfinished)
        )

    def for_agent(self, agent):
        """Tasks on the agent's boards, in its phase if it has one."""
        tasks = self.filter(ticket__board__agents=agent)
        if agent.phase_id:
            tasks = tasks.filter(phase_id=agent.phase_id)
        return tasks

    def matching(self, agent):
        """Tasks `agent` may do: on its boards, in its phase if it has one, needing no capability it lacks.

        The one definition of a match: the orchestrator's views of the queue
        and `Agent.has_capabilities` go through it, and the claim's statement
        (`board.services.claim_sql`) says it again in SQL, tested to pick the
        same task (`tests/test_claim_statement.py`). `agent` is an
        Agent, or `OuterRef("pk")` inside a query of agents, which then keeps
        the agents with work (`Exists(Task.objects.ready().matching(OuterRef("pk")))`).
        """
        if isinstance(agent, OuterRef):
            # An agent without a phase takes any: its phase_id is NULL and the task's own stands in.
            tasks = self.filter(ticket__board__agents=agent, phase_id=Coalesce(OuterRef("phase_id"), F("phase_id")))
            offered = OuterRef("capabilities")
        else:
            tasks = self.filter(ticket__board_id__in=agent.boards.values("pk"))
            if agent.phase_id:
                tasks = tasks.filter(phase_id=agent.phase_id)
            offered = Value(list(agent.capabilities or []), output_field=models.JSONField())
        return tasks.filter(CapabilitiesWithin(F("required_capabilities"), offered))

    def with_dependency_ids(self):
        """Each task with `dependency_ids`, the ids of the tasks it depends on (see `DependencyIds`)."""
        return self.annotate(dependency_ids=DependencyIds(F("pk")))

    def in_hand(self):
        """Tasks an agent holds: assigned to it or running."""
        return self.filter(status__in=(Task.Status.ASSIGNED, Task.Status.RUNNING))

    def overdue(self, now):
        """Tasks held past their time at `now`.

        Assigned but not started within OMOI_START_TIMEOUT of `assigned_at`, or
        running for longer than `running_time_limit` since `started_at`. The
        limits are few (the phases' and a few custom ones), so each distinct
        one becomes one condition: a plain comparison on an indexed column,
        the same on every database, instead of date arithmetic per row.
        """
        late = Q(status=Task.Status.ASSIGNED, assigned_at__lt=now - settings.OMOI_START_TIMEOUT)
        limits = set(self.filter(status=Task.Status.RUNNING).values_list("timeout_seconds", "phase_id").distinct())
        limits = {(seconds, None if seconds else phase_id) for seconds, phase_id in limits}
        phases = Phase.objects.in_bulk({phase_id for _, phase_id in limits if phase_id is not None})
        for seconds, phase_id in sorted(limits, key=lambda limit: (limit[0], limit[1] or 0)):
            same = Q(timeout_seconds=seconds) if phase_id is None else Q(timeout_seconds=0, phase_id=phase_id)
            started_before = now - running_time_limit(seconds, phases.get(phase_id))
            late |= same & Q(status=Task.Status.RUNNING, started_at__lt=started_before)
        return self.filter(late)


class Task(models.Model):
    """A unit of work inside a ticket, in one phase of its workflow, done by an agent."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ASSIGNED = "assigned", "Assigned"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    OPEN_STATUSES = (Status.PENDING, Status.ASSIGNED, Status.RUNNING)
    DONE_STATUSES = (Status.COMPLETED,)

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="tasks")
    phase = models.ForeignKey(Phase, on_delete=models.PROTECT, related_name="tasks")
    task_type = models.CharField(max_length=64, default="work")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.MEDIUM)
    # Higher first when agents ask for work; derived from priority unless given.
    score = models.FloatField(default=0)
    dependencies = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="dependents")
    required_capabilities = models.JSONField(default=list, blank=True)
    assigned_agent = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="tasks")
    retry_count = models.PositiveIntegerField(default=0)
    # Which claim holds the task: each claim increments it, and a report from an older attempt is refused.
    attempt = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=3)
    timeout_seconds = models.PositiveIntegerField(default=3600)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    artifacts = models.JSONField(default=list, blank=True)
    completed_criteria = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    parent = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="children")
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["ticket", "created_at", "id"]
        indexes = [
            models.Index(fields=["status", "-score", "created_at"]),
            # The queue: pending tasks alone, in the claim's order. Small and exact, so the claim's plan
            # does not depend on the planner's statistics (a fresh bulk load has none).
            models.Index(fields=["-score", "created_at", "id"], condition=Q(status="pending"), name="board_task_queue"),
        ]

    def __str__(self):
        return f"Task #{self.pk} {self.title}"


class TicketResult(models.Model):
    """A ticket's result as an agent submitted it (workflows with `has_result`), until staff accept or reject it."""

    class Status(models.TextChoices):
        SUBMITTED = "submitted", "Submitted"
        ACCEPTED = "accepted", "Accepted"
        REJECTED = "rejected", "Rejected"

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="results")
    summary = models.TextField()
    artifacts = models.JSONField(default=list, blank=True)
    submitted_by = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    submitted_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.SUBMITTED, db_index=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.TextField(blank=True)
    # Set once the orchestrator has acted on an accepted result (`on_result_found`), so it acts once.
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["ticket", "submitted_at", "id"]

    def __str__(self):
        return f"Result of #{self.ticket_id} ({self.status})"


class TicketComment(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="comments")
    body = models.TextField()
    author = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ticket", "created_at", "id"]

    def __str__(self):
        return f"Comment by {self.author} on #{self.ticket_id}"


class IdempotencyRecord(models.Model):
    """The first answer to an agent's POST carrying an Idempotency-Key, returned again for each retry."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    body_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response = models.JSONField(null=True)
    # Indexed for pruning: records expire after OMOI_IDEMPOTENCY_TTL.
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "key"], name="idempotency_key_once_per_agent")]

    def __str__(self):
        return f"{self.method} {self.path} ({self.key})"
