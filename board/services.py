"""Changes to boards and tickets: each checks its rules, writes its rows and its event in one transaction."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from phases.models import Phase

from .events import actor_label, actor_user, event_emit
from .models import PhaseHistory, Priority, Ticket

# Room between neighbouring cards, so most moves rewrite one row.
POSITION_GAP = 1024


class TransitionRefused(Exception):
    """A phase change the rules do not allow; the message says why, for the person or agent who asked."""


def _column_phase_ids(phase):
    """Ids of the phases shown in the same board column as `phase`."""
    ids = list(Phase.objects.filter(columns__phases=phase).values_list("id", flat=True).distinct())
    return ids or [phase.pk]


def _end_of_column(board, phase):
    last = Ticket.objects.filter(board=board, phase_id__in=_column_phase_ids(phase)).aggregate(Max("position"))
    return (last["position__max"] or 0) + POSITION_GAP


def _resolve_phase(workflow, phase):
    """A phase of `workflow`, given as a Phase or its key."""
    if isinstance(phase, Phase):
        if phase.workflow_id != workflow.pk:
            raise TransitionRefused(f"Phase {phase.key} belongs to another workflow than {workflow.name}.")
        return phase
    try:
        return Phase.objects.get(workflow=workflow, key=phase)
    except Phase.DoesNotExist:
        raise TransitionRefused(f"Unknown phase {phase!r} in workflow {workflow.name}.") from None


def _clean_text(value, *, field, max_length=None, required=False):
    text = (value or "").strip()
    if required and not text:
        raise ValidationError({field: "This field cannot be blank."})
    if max_length and len(text) > max_length:
        raise ValidationError({field: f"At most {max_length} characters (this has {len(text)})."})
    return text


def _clean_priority(priority):
    if priority not in Priority.values:
        raise ValidationError({"priority": f"Unknown priority {priority!r}; use one of {', '.join(Priority.values)}."})
    return priority


@transaction.atomic
def ticket_create(*, board, title, actor, description="", priority=Priority.MEDIUM, phase=None):
    """Create a ticket at the end of its column, in `phase` or the workflow's first phase."""
    title = _clean_text(title, field="title", max_length=200, required=True)
    priority = _clean_priority(priority)
    if phase is None:
        phase = board.workflow.phases.in_order().first()
        if phase is None:
            raise ValidationError({"phase": f"Workflow {board.workflow.name} has no phases."})
    else:
        try:
            phase = _resolve_phase(board.workflow, phase)
        except TransitionRefused as exc:
            raise ValidationError({"phase": str(exc)}) from None

    ticket = Ticket.objects.create(
        board=board,
        title=title,
        description=description or "",
        priority=priority,
        phase=phase,
        position=_end_of_column(board, phase),
        created_by=actor_user(actor),
    )
    PhaseHistory.objects.create(
        ticket=ticket,
        to_phase=phase,
        to_key=phase.key,
        reason="Ticket created",
        actor=actor_label(actor),
        user=actor_user(actor),
    )
    event_emit(
        board=board,
        type="ticket.created",
        entity=ticket,
        payload={"title": ticket.title, "priority": ticket.priority, "phase": phase.key, "position": ticket.position},
        actor=actor,
    )
    return ticket


@transaction.atomic
def ticket_update(*, ticket, actor, **changes):
    """Change a ticket's title, description, priority or blocked state; phases change only by transition."""
    editable = {"title", "description", "priority", "is_blocked", "blocked_reason"}
    unknown = set(changes) - editable
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed here."))
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)

    if "title" in changes:
        changes["title"] = _clean_text(changes["title"], field="title", max_length=200, required=True)
    if "priority" in changes:
        changes["priority"] = _clean_priority(changes["priority"])
    if "description" in changes:
        changes["description"] = changes["description"] or ""
    blocked = changes.get("is_blocked", ticket.is_blocked)
    if "blocked_reason" in changes or "is_blocked" in changes:
        reason = _clean_text(changes.get("blocked_reason", ticket.blocked_reason), field="blocked_reason")
        if blocked and not reason:
            raise ValidationError({"blocked_reason": "Say what blocks the ticket."})
        changes["blocked_reason"] = reason if blocked else ""

    diff = {name: [getattr(ticket, name), value] for name, value in changes.items() if getattr(ticket, name) != value}
    if not diff:
        return ticket
    for name, (_, value) in diff.items():
        setattr(ticket, name, value)
    ticket.version += 1
    ticket.save(update_fields=[*diff, "version", "updated_at"])
    event_emit(
        board=ticket.board,
        type="ticket.updated",
        entity=ticket,
        payload={"changes": diff, "version": ticket.version},
        actor=actor,
    )
    return ticket


@transaction.atomic
def ticket_transition(*, ticket, to_phase, actor, reason="", force=False):
    """Move a ticket to another phase of its workflow: the one path every move takes.

    An allowed transition is recorded as `normal`. Anything else is refused
    with TransitionRefused, unless `force` is given with a written reason by a
    staff user (`override`) or by a system process named by a string such as
    "orchestrator" (`jump`).
    """
    ticket = Ticket.objects.select_for_update().select_related("board__workflow", "phase").get(pk=ticket.pk)
    to_phase = _resolve_phase(ticket.board.workflow, to_phase)
    from_phase = Phase.objects.with_transitions().get(pk=ticket.phase_id)
    reason = (reason or "").strip()

    if to_phase.pk == from_phase.pk:
        raise TransitionRefused(f"The ticket is already in {from_phase.name}.")
    if from_phase.can_transition_to(to_phase):
        kind = PhaseHistory.Kind.NORMAL
    elif not force:
        allowed = ", ".join(target.name for target in from_phase.allowed_transitions.all()) or "nowhere"
        raise TransitionRefused(
            f"{from_phase.name} cannot move to {to_phase.name}; from {from_phase.name} a ticket may move to: {allowed}."
        )
    else:
        user = actor_user(actor)
        if user is not None and not user.is_staff:
            raise TransitionRefused(f"Only staff may force a move from {from_phase.name} to {to_phase.name}.")
        if user is None and not isinstance(actor, str):
            raise TransitionRefused(
                f"{actor_label(actor)} may not force a move from {from_phase.name} to {to_phase.name}."
            )
        if not reason:
            raise TransitionRefused("A forced move needs a written reason.")
        kind = PhaseHistory.Kind.OVERRIDE if user is not None else PhaseHistory.Kind.JUMP

    if set(_column_phase_ids(to_phase)) != set(_column_phase_ids(from_phase)):
        ticket.position = _end_of_column(ticket.board, to_phase)
    ticket.phase = to_phase
    ticket.version += 1
    ticket.save(update_fields=["phase", "position", "version", "updated_at"])
    PhaseHistory.objects.create(
        ticket=ticket,
        from_phase=from_phase,
        to_phase=to_phase,
        from_key=from_phase.key,
        to_key=to_phase.key,
        kind=kind,
        reason=reason,
        actor=actor_label(actor),
        user=actor_user(actor),
    )
    event_emit(
        board=ticket.board,
        type="ticket.transitioned",
        entity=ticket,
        payload={
            "from": from_phase.key,
            "to": to_phase.key,
            "kind": kind,
            "reason": reason,
            "position": ticket.position,
            "version": ticket.version,
        },
        actor=actor,
    )
    return ticket
