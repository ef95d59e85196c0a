"""Tickets: create, edit, comment, and the one path every move and phase change takes (WIP limits included)."""

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Prefetch, Q, Subquery, prefetch_related_objects
from django.db.models.functions import Coalesce

from phases.models import BoardColumn, Phase

from ..errors import TransitionRefused
from ..events import EventType, SystemActor, actor_label, actor_user, event_emit
from ..models import PhaseHistory, Priority, Ticket, TicketComment
from .inputs import clean_priority, clean_text, resolve_phase
from .ordering import position_after, position_after_last, position_between


@transaction.atomic
def ticket_create(*, board, title, actor, description="", priority=Priority.MEDIUM, phase=None):
    """Create a ticket at the end of its column, in `phase` or the workflow's first phase."""
    title = clean_text(title, field="title", max_length=200, required=True)
    priority = clean_priority(priority)
    try:
        phase, position = _place_new(board=board, phase=phase)
    except TransitionRefused as exc:
        raise ValidationError({"phase": str(exc)}) from None
    ticket = Ticket.objects.create(
        board=board,
        title=title,
        description=description or "",
        priority=priority,
        phase=phase,
        position=position,
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
        type=EventType.TICKET_CREATED,
        entity=ticket,
        payload={"title": ticket.title, "priority": ticket.priority, "phase": phase.key, "position": ticket.position},
        actor=actor,
    )
    return ticket


def _place_new(*, board, phase):
    """The phase (a Phase, its key, or None for the first) and the position at the end of its column of a new
    ticket; TransitionRefused when the phase is unknown or its column full (`block`).

    The phase is found among the phases of the column showing it, read with their cards once it is locked.
    """
    workflow = board.workflow
    if isinstance(phase, Phase):
        phase = resolve_phase(workflow, phase)
    column, _ = _lock_columns(column=None, wanted=_phase_wanted(workflow, phase))
    shown = _column_phases(column, board_id=board.pk, at_end=True) if column else []
    _wip_check(
        board_id=board.pk,
        column=column,
        force=False,
        forcing_allowed=None,
        count=sum(p.cards for p in shown) if column and column.wip_limit is not None else None,
    )
    found = _phase_among(shown, phase)
    if found is not None:
        return found, position_after(max((p.last for p in shown if p.last is not None), default=None))
    # No column shows it: the phase's own cards are its column.
    found = resolve_phase(workflow, phase) if phase is not None else workflow.phases.in_order().first()
    if found is None:
        raise ValidationError({"phase": f"Workflow {workflow.name} has no phases."})
    return found, position_after_last(board_id=board.pk, column_phase_ids=[found.pk])


@transaction.atomic
def ticket_update(*, ticket, actor, **changes):
    """Change a ticket's title, description, priority or blocked state; phases change only by transition."""
    editable = {"title", "description", "priority", "is_blocked", "blocked_reason"}
    unknown = set(changes) - editable
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed here."))
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)

    if "title" in changes:
        changes["title"] = clean_text(changes["title"], field="title", max_length=200, required=True)
    if "priority" in changes:
        changes["priority"] = clean_priority(changes["priority"])
    if "description" in changes:
        changes["description"] = changes["description"] or ""
    blocked = changes.get("is_blocked", ticket.is_blocked)
    if "blocked_reason" in changes or "is_blocked" in changes:
        reason = clean_text(changes.get("blocked_reason", ticket.blocked_reason), field="blocked_reason")
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
        type=EventType.TICKET_UPDATED,
        entity=ticket,
        payload={"changes": diff, "phase": ticket.phase.key, "version": ticket.version},
        actor=actor,
    )
    return ticket


def _wip_check(*, board_id, column, force, forcing_allowed, count=None):
    """Refuse entering a full `block` column unless forced; describe the WIP state for the event.

    `count`: the column's cards, when the caller has read them already.
    """
    if column is None or column.wip_limit is None:
        return None
    if count is None:
        count = Ticket.objects.filter(board_id=board_id, phase__columns=column).count()
    wip = {"column": column.key, "count": count + 1, "limit": column.wip_limit, "policy": column.wip_policy}
    if count < column.wip_limit:
        return wip
    if column.wip_policy == BoardColumn.WipPolicy.BLOCK:
        if not force:
            raise TransitionRefused(f"{column.name} is full ({count}/{column.wip_limit}).")
        forcing_allowed(f"{column.name} is full ({count}/{column.wip_limit})")
        wip["overridden"] = True
    wip["exceeded"] = True
    return wip


def _forcing_rule(actor, reason):
    """Who may force a refused move: staff users (override) and system actors such as the orchestrator (jump),
    each with a written reason; agents and anyone else may not."""

    def allowed(what):
        user = actor_user(actor)
        if user is not None and not user.is_staff:
            raise TransitionRefused(f"{what}; only staff may force it.")
        if user is None and not isinstance(actor, SystemActor):
            raise TransitionRefused(f"{what}; {actor_label(actor)} may not force it.")
        if not reason:
            raise TransitionRefused(f"{what}; a forced move needs a written reason.")

    return allowed


def _not_allowed(from_phase, target):
    allowed = ", ".join(t.name for t in from_phase.allowed_transitions.all()) or "nowhere"
    return f"{from_phase.name} cannot move to {target}; from {from_phase.name} a ticket may move to: {allowed}"


def _phase_wanted(workflow, phase):
    """`phase` (a Phase, its key, or None for `workflow`'s first phase) as a filter on the phase links of
    columns, so that the statement locking its column finds it. `workflow` serves a key or None only."""
    if isinstance(phase, Phase):
        return {"phase_id": phase.pk}
    if phase is None:
        return {"phase_id": Subquery(workflow.phases.in_order().values("pk")[:1])}
    return {"phase__workflow_id": workflow.pk, "phase__key": phase}


def _phase_among(phases, phase):
    """`phase` (as for _phase_wanted) among `phases`, the phases in order of the column showing it; None if absent."""
    if phase is None:
        return phases[0] if phases else None
    key = phase.key if isinstance(phase, Phase) else phase
    return next((p for p in phases if p.key == key), None)


def _lock_columns(*, column, wanted, from_phase_id=None):
    """Lock the target column and the ticket's current one, in id order.

    `column`: the column dropped on, or None to lock the one showing the phase
    `wanted` (see _phase_wanted). `from_phase_id`: the ticket's phase id, or an
    expression reading it, which is then read in this same statement; None for
    a new ticket. Returns the target column (None: no column shows it) and the
    ticket's phase id as the lock saw it (None when no column was locked, so
    the statement told nothing).

    Columns are locked before the ticket's row, on every path: a renumber
    rewrites every card of its column, so a mover holding its own card while
    waiting for that column would deadlock with the one renumbering it. With
    the source column locked too, nobody else can be moving a card out of the
    column being renumbered.
    """
    through = BoardColumn.phases.through.objects

    def showing(**phase_filter):
        return Exists(through.filter(boardcolumn_id=OuterRef("pk"), **phase_filter))

    target = Q(pk=column.pk) if column is not None else showing(**wanted)
    where = target if from_phase_id is None else target | Q(showing(phase_id=from_phase_id))
    locked = BoardColumn.objects.select_for_update().filter(where)
    read_here = from_phase_id is not None and not isinstance(from_phase_id, int)
    if read_here:
        locked = locked.annotate(seen_phase_id=from_phase_id)
    if column is None and from_phase_id is not None:
        locked = locked.annotate(is_target=target)
    found = list(locked.order_by("pk"))
    seen = (found[0].seen_phase_id if found else None) if read_here else from_phase_id
    if column is not None:
        return next((c for c in found if c.pk == column.pk), None), seen
    if from_phase_id is None:
        return (found[0] if found else None), seen  # only target columns were locked
    return next((c for c in found if c.is_target), None), seen


def _column_phases(column, *, board_id, at_end):
    """The column's phases in order; `at_end`: each with its last card's position on the board and, when the
    column has a WIP limit, its count of cards.

    Read after the column's lock, so no concurrent move changes the count.
    """
    phases = column.phases.in_order()
    if at_end:
        cards = Ticket.objects.filter(board_id=board_id, phase_id=OuterRef("pk")).order_by()
        phases = phases.annotate(last=Subquery(cards.order_by("-position").values("position")[:1]))
        if column.wip_limit is not None:
            count = cards.values("phase_id").annotate(n=Count("pk")).values("n")
            phases = phases.annotate(cards=Coalesce(Subquery(count), 0))
    return list(phases)


def _move(*, ticket, column, phase, actor, previous_id=None, next_id=None, reason="", force=False, transition=False):
    reason = (reason or "").strip()
    # Lock order: columns, then the ticket, then at commit the board row (the event's position, last).
    board = ticket.board
    workflow = board.workflow
    if column is not None and column.workflow_id != workflow.pk:
        raise TransitionRefused(f"Column {column.name} belongs to another workflow than {workflow.name}.")
    asked = phase
    if isinstance(phase, Phase):
        phase = resolve_phase(workflow, phase)
    # A phase named by its key is found among the phases of the column that shows it, read below.
    wanted = _phase_wanted(workflow, phase) if phase is not None else None
    # The columns of the ticket's phase as it is now (the caller's copy may be older), read with the lock.
    where_now = Subquery(Ticket.objects.filter(pk=ticket.pk).order_by().values("phase_id"))
    column, seen_phase_id = _lock_columns(column=column, wanted=wanted, from_phase_id=where_now)
    if seen_phase_id is None:
        # No column shows either phase: read where the ticket is, and lock the columns of the phase it is in.
        seen_phase_id = Ticket.objects.filter(pk=ticket.pk).values_list("phase_id", flat=True).get()
        column, _ = _lock_columns(column=column, wanted=wanted, from_phase_id=seen_phase_id)
    locked = Ticket.objects.select_for_update(of=("self",)).select_related("phase")
    if asked is not None:
        # Whether the workflow lets it into the phase asked for, read with the lock.
        transitions = Phase.allowed_transitions.through.objects.filter(from_phase_id=OuterRef("phase_id"))
        into = {"to_phase_id": phase.pk} if isinstance(phase, Phase) else {"to_phase__key": phase}
        locked = locked.annotate(may_enter=Exists(transitions.filter(**into)))
    ticket = locked.get(pk=ticket.pk)
    if ticket.phase_id != seen_phase_id:
        # Moved by someone else between the read and the lock: the columns locked are no longer its own.
        raise TransitionRefused(f"“{ticket.title}” was moved by someone else meanwhile; look again and retry.")
    ticket.board = board
    from_phase = ticket.phase
    if asked is None:
        # A drop on a column: each of its phases may be tried.
        prefetch_related_objects([from_phase], Prefetch("allowed_transitions", queryset=Phase.objects.in_order()))
    at_end = not (previous_id or next_id)
    column_phases = _column_phases(column, board_id=board.pk, at_end=at_end) if column else None
    if phase is not None and not isinstance(phase, Phase):
        phase = _phase_among(column_phases or [], phase) or resolve_phase(workflow, phase)
    if column is None:
        column_phases = [phase]
    if transition and phase == from_phase:
        raise TransitionRefused(f"The ticket is already in {from_phase.name}.")
    forcing_allowed = _forcing_rule(actor, reason)

    if phase is None:
        if from_phase in column_phases:
            phase = from_phase
        else:
            # A column showing several phases takes the ticket into the first one it may enter.
            phase = next((p for p in column_phases if from_phase.can_transition_to(p)), None)
            if phase is None:
                what = _not_allowed(from_phase, column.name)
                if not force:
                    raise TransitionRefused(f"{what}.")
                forcing_allowed(what)
                phase = column_phases[0]
    elif phase not in column_phases:
        raise TransitionRefused(f"{phase.name} is not shown in column {column.name}.")

    kind = PhaseHistory.Kind.NORMAL
    allowed = ticket.may_enter if asked is not None else from_phase.can_transition_to(phase)
    if phase != from_phase and not allowed:
        what = _not_allowed(from_phase, phase.name)
        if not force:
            raise TransitionRefused(f"{what}.")
        forcing_allowed(what)
        kind = PhaseHistory.Kind.OVERRIDE if actor_user(actor) else PhaseHistory.Kind.JUMP

    entering = from_phase not in column_phases
    if phase == from_phase and not (previous_id or next_id):
        return ticket  # dropped back where it was
    column_phase_ids = [p.pk for p in column_phases]
    # Into a column at its end: its cards' count and last position were read with its phases.
    counted = entering and at_end and column is not None
    wip = (
        _wip_check(
            board_id=ticket.board_id,
            column=column,
            force=force,
            forcing_allowed=forcing_allowed,
            count=sum(p.cards for p in column_phases) if counted and column.wip_limit is not None else None,
        )
        if entering
        else None
    )
    if wip and wip.get("overridden"):
        kind = PhaseHistory.Kind.OVERRIDE if actor_user(actor) else PhaseHistory.Kind.JUMP

    if counted:
        ticket.position = position_after(max((p.last for p in column_phases if p.last is not None), default=None))
    elif entering or previous_id or next_id:
        ticket.position = position_between(
            ticket=ticket, column_phase_ids=column_phase_ids, previous_id=previous_id, next_id=next_id
        )
    ticket.version += 1
    payload = {
        "column": column.key if column else None,
        "position": ticket.position,
        "previous_id": previous_id,
        "next_id": next_id,
        "version": ticket.version,
    }
    if phase == from_phase:
        ticket.save(update_fields=["position", "version", "updated_at"])
        event_emit(board=ticket.board, type=EventType.TICKET_MOVED, entity=ticket, payload=payload, actor=actor)
        return ticket

    ticket.phase = phase
    ticket.save(update_fields=["phase", "position", "version", "updated_at"])
    PhaseHistory.objects.create(
        ticket=ticket,
        from_phase=from_phase,
        to_phase=phase,
        from_key=from_phase.key,
        to_key=phase.key,
        kind=kind,
        reason=reason,
        actor=actor_label(actor),
        user=actor_user(actor),
    )
    payload.update({"from": from_phase.key, "to": phase.key, "kind": kind, "reason": reason})
    if wip:
        payload["wip"] = wip
    event_emit(board=ticket.board, type=EventType.TICKET_TRANSITIONED, entity=ticket, payload=payload, actor=actor)
    return ticket


@transaction.atomic
def ticket_transition(*, ticket, to_phase, actor, reason="", force=False):
    """Move a ticket to another phase of its workflow, at the end of that phase's column.

    This and `ticket_move` are the paths every move takes: an allowed
    transition into a column with room is recorded as `normal`. A transition
    the workflow does not allow, or a drop into a full `block` column, is
    refused with TransitionRefused, unless `force` is given with a written
    reason by a staff user (`override`) or by a `SystemActor` such as the
    orchestrator (`jump`).
    """
    return _move(ticket=ticket, column=None, phase=to_phase, actor=actor, reason=reason, force=force, transition=True)


@transaction.atomic
def ticket_move(*, ticket, column, actor, previous_id=None, next_id=None, phase=None, reason="", force=False):
    """Drop a ticket into `column` between the cards `previous_id` (above) and `next_id` (below).

    Within its own column this reorders; into another column it is a phase
    transition under the same rules as `ticket_transition`, WIP limits
    included. A column showing several phases takes the ticket into the
    first one it may enter, or into `phase` when given.
    """
    return _move(
        ticket=ticket,
        column=column,
        phase=phase,
        actor=actor,
        previous_id=previous_id,
        next_id=next_id,
        reason=reason,
        force=force,
    )


@transaction.atomic
def ticket_comment(*, ticket, body, actor):
    body = clean_text(body, field="body", max_length=20000, required=True)
    comment = TicketComment.objects.create(ticket=ticket, body=body, author=actor_label(actor))
    event_emit(
        board=ticket.board,
        type=EventType.TICKET_COMMENTED,
        entity=ticket,
        payload={"comment": comment.pk, "phase": ticket.phase.key},
        actor=actor,
    )
    return comment
