"""The runtime: boards, their tickets, each ticket's phase history, and the event log."""

from django.conf import settings
from django.db import models
from django.db.models import Q

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


class Board(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="boards")
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="boards")
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

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["board", "id"]),
            models.Index(fields=["entity_type", "entity_id"]),
        ]

    def __str__(self):
        return f"{self.type} {self.entity_type}:{self.entity_id}"

    def as_message(self):
        """The event as sent to websocket clients."""
        return {
            "id": self.pk,
            "type": self.type,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "payload": self.payload,
            "actor": self.actor,
            "created_at": self.created_at.isoformat(),
        }
