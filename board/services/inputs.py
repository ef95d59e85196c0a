"""Input rules shared by the board services: text, priority, capabilities and phases named by key."""

from django.core.exceptions import ValidationError

from phases.models import Phase

from ..errors import TransitionRefused
from ..models import Priority


def resolve_phase(workflow, phase):
    """A phase of `workflow`, given as a Phase or its key."""
    if isinstance(phase, Phase):
        if phase.workflow_id != workflow.pk:
            raise TransitionRefused(f"Phase {phase.key} belongs to another workflow than {workflow.name}.")
        return phase
    try:
        return Phase.objects.get(workflow=workflow, key=phase)
    except Phase.DoesNotExist:
        raise TransitionRefused(f"Unknown phase {phase!r} in workflow {workflow.name}.") from None


def clean_text(value, *, field, max_length=None, required=False):
    text = (value or "").strip()
    if required and not text:
        raise ValidationError({field: "This field cannot be blank."})
    if max_length and len(text) > max_length:
        raise ValidationError({field: f"At most {max_length} characters (this has {len(text)})."})
    return text


def clean_priority(priority):
    if priority not in Priority.values:
        raise ValidationError({"priority": f"Unknown priority {priority!r}; use one of {', '.join(Priority.values)}."})
    return priority


def clean_capabilities(capabilities, *, field="capabilities"):
    if capabilities is None:
        return []
    if isinstance(capabilities, str):
        capabilities = capabilities.split(",")
    cleaned = []
    for item in capabilities:
        if not isinstance(item, str) or not item.strip() or len(item.strip()) > 64:
            raise ValidationError({field: f"Each capability is a name of 1 to 64 characters, not {item!r}."})
        if item.strip() not in cleaned:
            cleaned.append(item.strip())
    if len(cleaned) > 50:
        raise ValidationError({field: "At most 50 capabilities."})
    return cleaned
