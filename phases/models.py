"""Workflow definitions: a workflow, its phases and the board columns they map to."""

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse

from .schema import (
    COLOR_RULE,
    COLUMN_CATEGORIES,
    MAX_RETRIES,
    MAX_RETRY_BACKOFF_SECONDS,
    MAX_TIMEOUT_SECONDS,
    PALETTE,
    color_hex,
    is_holding_phase,
)

_SPACES = re.compile(r"\s+")


def normalize_criterion(text):
    """Compare done-definitions the way a person reads them: case and spacing do not matter."""
    return _SPACES.sub(" ", str(text)).strip().casefold()


def validate_color(value):
    """A column colour is rendered into a style attribute: a palette name or #rrggbb, nothing else."""
    if value and not color_hex(value):
        raise ValidationError(f"Unknown colour {value!r}; {COLOR_RULE}.", code="invalid_color")


class Workflow(models.Model):
    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Bumped on every reload so an exported file says which revision it came from.
    version = models.PositiveIntegerField(default=1)
    # OmoiOS's result settings: whether a ticket ends with a result an agent submits and staff review,
    # what the result must show, and what accepting it does (stop_all: cancel the ticket's open tasks
    # and move it to its terminal phase).
    has_result = models.BooleanField(default=False)
    result_criteria = models.JSONField(default=list, blank=True)
    on_result_found = models.CharField(
        max_length=16,
        choices=[("do_nothing", "Do nothing"), ("stop_all", "Stop all work on the ticket")],
        default="do_nothing",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("admin:phases_workflow_change", args=[self.pk])


class PhaseQuerySet(models.QuerySet):
    def in_order(self):
        return self.order_by("sequence_order", "key")

    def with_transitions(self):
        return self.prefetch_related(models.Prefetch("allowed_transitions", queryset=Phase.objects.in_order()))


class Phase(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="phases")
    key = models.CharField(
        max_length=64,
        help_text="Stable identifier used by files, the API and agents, e.g. PHASE_IMPLEMENTATION.",
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    sequence_order = models.IntegerField(default=0)
    is_terminal = models.BooleanField(
        default=False, help_text="Work ends here: the orchestrator does not advance tickets out of it."
    )
    allowed_transitions = models.ManyToManyField("self", symmetrical=False, blank=True, related_name="entered_from")
    done_definitions = models.JSONField(default=list, blank=True)
    expected_outputs = models.JSONField(default=list, blank=True)
    phase_prompt = models.TextField(blank=True)
    next_steps_guide = models.JSONField(default=list, blank=True)
    # Checks the phase's work is held to, shown to agents: [{"description", "check_type", "target", ...}].
    validation_criteria = models.JSONField(default=list, blank=True)
    configuration = models.JSONField(default=dict, blank=True)

    objects = PhaseQuerySet.as_manager()

    class Meta:
        ordering = ["workflow", "sequence_order", "key"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="phase_key_unique_in_workflow"),
        ]

    def __str__(self):
        return f"{self.name} ({self.key})"

    def can_transition_to(self, phase):
        """Whether a ticket in this phase may move to `phase` (a Phase or its key) normally."""
        key = phase if isinstance(phase, str) else phase.key
        if not isinstance(phase, str) and phase.workflow_id != self.workflow_id:
            return False
        # Uses the prefetched transitions when the caller loaded them.
        return any(target.key == key for target in self.allowed_transitions.all())

    def missing_done_criteria(self, completed):
        """The done-definitions not found in `completed`, in the phase's own wording and order."""
        done = {normalize_criterion(item) for item in completed or ()}
        return [item for item in self.done_definitions if normalize_criterion(item) not in done]

    def is_done_criteria_met(self, completed):
        """Return (all met, the ones missing)."""
        missing = self.missing_done_criteria(completed)
        return not missing, missing

    def required_outputs(self):
        return [output for output in self.expected_outputs if output.get("required", True)]

    @property
    def is_holding(self):
        """Parks work and sends it back, like Blocked."""
        return self.is_terminal and is_holding_phase(self.key, self.configuration)

    @property
    def timeout_seconds(self):
        return self._setting("timeout_seconds", int, 1, MAX_TIMEOUT_SECONDS)

    @property
    def max_retries(self):
        return self._setting("max_retries", int, 0, MAX_RETRIES)

    @property
    def retry_backoff_seconds(self):
        return self._setting("retry_backoff_seconds", (int, float), 0, MAX_RETRY_BACKOFF_SECONDS)

    @property
    def retry_backoff_max_seconds(self):
        """The longest back-off between retries in this phase; None: the site's OMOI_RETRY_BACKOFF_MAX."""
        return self._setting("retry_backoff_max_seconds", (int, float), 0, MAX_RETRY_BACKOFF_SECONDS)

    def _setting(self, name, kind, low, high):
        """A configured value within its range, or None (the default applies).

        Files and the admin refuse anything else, but a row saved before they
        did may hold any JSON, and tasks must still be creatable in its phase.
        """
        value = (self.configuration or {}).get(name) if isinstance(self.configuration, dict) else None
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            return None
        return value

    def agent_instructions(self):
        """The text an agent working in this phase is given, in Markdown."""
        lines = [f"# Phase: {self.name} ({self.key})"]
        if self.description:
            lines += ["", self.description.strip()]
        # Set by workflows loaded from Hephaestus folders, whose agents each work in a given folder.
        folder = self.configuration.get("working_directory") if isinstance(self.configuration, dict) else None
        if isinstance(folder, str) and folder.strip():
            lines += ["", f"Working directory: `{folder.strip()}`"]
        if self.phase_prompt.strip():
            lines += ["", "## Instructions", "", self.phase_prompt.strip()]
        if self.done_definitions:
            # A blank line before the list: Markdown takes lines straight after a sentence as part of it.
            lines += [
                "",
                "## Completion criteria",
                "",
                "All of these must be true before you report the task done:",
                "",
            ]
            lines += [f"- [ ] {item}" for item in self.done_definitions]
        if self.expected_outputs:
            lines += ["", "## Expected outputs", ""]
            for output in self.expected_outputs:
                pattern = output.get("pattern", "")
                text = f"- {output.get('type', 'output')}" + (f": `{pattern}`" if pattern else "")
                text += " (required)" if output.get("required", True) else " (optional)"
                if output.get("validation_rule"):
                    text += f" — {output['validation_rule']}"
                lines.append(text)
        if self.validation_criteria:
            lines += ["", "## Validation", "", "Your work in this phase is checked against these:", ""]
            lines += [_criterion_line(criterion) for criterion in self.validation_criteria]
        if self.next_steps_guide:
            lines += ["", "## What happens next", ""]
            lines += [f"{number}. {step}" for number, step in enumerate(self.next_steps_guide, start=1)]
        targets = [target.key for target in self.allowed_transitions.all()]
        if targets:
            lines += ["", f"From here the ticket may move to: {', '.join(targets)}."]
        return "\n".join(lines) + "\n"


def _criterion_line(criterion):
    """One validation criterion as a Markdown list item: what it checks, then how."""
    if not isinstance(criterion, dict):
        return f"- {criterion}"
    how = [f"`{criterion[key]}`" for key in ("target", "pattern", "command") if criterion.get(key)]
    kind = criterion.get("check_type") or "check"
    return f"- {criterion.get('description', '')} ({', '.join([kind, *how])})"


class BoardColumn(models.Model):
    class WipPolicy(models.TextChoices):
        WARN = "warn", "Warn (allow, mark the column)"
        BLOCK = "block", "Block (refuse the move)"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="columns")
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    sequence_order = models.IntegerField(default=0)
    phases = models.ManyToManyField(Phase, related_name="columns", verbose_name="phase mapping")
    wip_limit = models.PositiveIntegerField(null=True, blank=True, help_text="Empty means no limit.")
    wip_policy = models.CharField(max_length=8, choices=WipPolicy.choices, default=WipPolicy.WARN)
    is_terminal = models.BooleanField(default=False)
    category = models.CharField(
        max_length=8,
        choices=[(value, COLUMN_CATEGORIES[value]) for value in COLUMN_CATEGORIES],
        default="working",
        help_text="How flow analytics count the column: cycle time runs from the first working column to done.",
    )
    auto_transition_to = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Column a ticket moves on to by itself once its phase's work here is done.",
    )
    color = models.CharField(
        max_length=32,
        blank=True,
        validators=[validate_color],
        help_text=f"A palette colour ({', '.join(PALETTE)}) or #rrggbb; empty for none.",
    )

    class Meta:
        ordering = ["workflow", "sequence_order", "key"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="column_key_unique_in_workflow"),
        ]

    def __str__(self):
        return self.name

    @property
    def color_hex(self):
        """The colour to render; empty for a stored value that is not a valid colour (saved before colours were checked)."""
        return color_hex(self.color)
