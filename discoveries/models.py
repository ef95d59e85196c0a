"""Discoveries: what an agent found while doing a task, and the tasks it branched the work into."""

from django.conf import settings
from django.db import models

from board.models import Agent, Task, Ticket


class Discovery(models.Model):
    class Type(models.TextChoices):
        BUG = "bug", "Bug"
        OPTIMIZATION = "optimization", "Optimisation"
        CLARIFICATION_NEEDED = "clarification_needed", "Clarification needed"
        NEW_COMPONENT = "new_component", "New component"
        SECURITY_ISSUE = "security_issue", "Security issue"
        PERFORMANCE_ISSUE = "performance_issue", "Performance issue"
        MISSING_REQUIREMENT = "missing_requirement", "Missing requirement"
        INTEGRATION_ISSUE = "integration_issue", "Integration issue"
        TECHNICAL_DEBT = "technical_debt", "Technical debt"
        DIAGNOSTIC_NO_RESULT = "diagnostic_no_result", "Diagnostic without result"

    class Resolution(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"
        INVALID = "invalid", "Invalid"

    source_task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="discoveries")
    discovery_type = models.CharField("type", max_length=32, choices=Type.choices, db_index=True)
    description = models.TextField()
    spawned_tasks = models.ManyToManyField(Task, blank=True, related_name="spawned_by")
    discovered_at = models.DateTimeField(auto_now_add=True)
    discovered_by = models.CharField(max_length=200)
    # The agent that recorded it, if one did: it may close what it found.
    discovered_by_agent = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    priority_boost = models.BooleanField(default=False)
    resolution_status = models.CharField(
        max_length=10, choices=Resolution.choices, default=Resolution.OPEN, db_index=True
    )
    resolved_by = models.CharField(max_length=200, blank=True)
    resolved_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    resolution_note = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Kept exactly as the agent sent it.
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["discovered_at", "id"]
        verbose_name_plural = "discoveries"

    def __str__(self):
        return f"{self.get_discovery_type_display()}: {self.description[:60]}"


class TicketRescue(models.Model):
    """A stuck ticket's rescue: one diagnostic discovery and one recovery task.

    The unique window makes "at most one rescue per ticket per window" a
    property of the table, so several orchestrators cannot rescue twice.
    """

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="rescues")
    # The rescue window's number: seconds since the epoch // OMOI_RESCUE_WINDOW's seconds.
    window = models.BigIntegerField()
    discovery = models.ForeignKey(Discovery, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    task = models.ForeignKey(Task, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["ticket", "created_at"]
        constraints = [models.UniqueConstraint(fields=["ticket", "window"], name="one_rescue_per_ticket_per_window")]

    def __str__(self):
        return f"Rescue of #{self.ticket_id} (window {self.window})"
