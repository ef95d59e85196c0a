"""Moving what a removed phase held when a workflow reload remaps it: tickets as board moves, tasks and agents along."""

from itertools import groupby

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from phases.models import BoardColumn

from ..errors import TransitionRefused
from ..events import WORKFLOW_RELOAD, EventType, actor_label, actor_user, event_emit
from ..models import Agent, PhaseHistory, Task, Ticket
from .ordering import POSITION_GAP, position_after_last


def _reason(old_phase, new_phase):
    return (
        f"workflow reload: phase {old_phase.key} was removed and remapped to {new_phase.key}; "
        "moved by the system without checking transitions or WIP limits"
    )


def _lock_columns(old_phase, new_phase):
    """Lock the columns showing either phase, in id order; return the new phase's column (None if none shows it).

    The same order as every other move (columns, then tickets, then the board
    rows as events are written), so a reload and a drag never wait on each other
    in a circle.
    """

    def showing(phase):
        return Exists(BoardColumn.phases.through.objects.filter(boardcolumn_id=OuterRef("pk"), phase_id=phase.pk))

    locked = list(
        BoardColumn.objects.select_for_update().filter(Q(showing(old_phase)) | Q(showing(new_phase))).order_by("pk")
    )
    return next((column for column in locked if column.phases.filter(pk=new_phase.pk).exists()), None)


@transaction.atomic
def tickets_remap_phase(*, old_phase, new_phase, actor=WORKFLOW_RELOAD, reason=None):
    """Move every ticket in `old_phase` to `new_phase` of the same workflow, at the end of its column.

    A jump by the system, as a reload decides it: neither the workflow's
    transitions nor WIP limits are checked (the history's reason says so).
    Each ticket gets its history row, a new version and a `ticket.transitioned`
    event, so open boards redraw it. Cards keep their relative order. Returns
    the tickets moved.
    """
    if old_phase.workflow_id != new_phase.workflow_id:
        raise TransitionRefused(f"Phase {new_phase.key} belongs to another workflow than {old_phase.key}.")
    if old_phase.pk == new_phase.pk:
        raise TransitionRefused(f"Tickets in {old_phase.key} are already there.")
    reason = reason or _reason(old_phase, new_phase)
    column = _lock_columns(old_phase, new_phase)
    column_phase_ids = list(column.phases.values_list("pk", flat=True)) if column else [new_phase.pk]
    # Board by board in id order: at commit each event locks its board's row, in the order the events were
    # written, and several boards are always locked in id order.
    tickets = list(
        Ticket.objects.select_for_update()
        .filter(phase=old_phase)
        .select_related("board")
        .order_by("board_id", "position", "pk")
    )
    moved, now = [], timezone.now()
    for board_id, cards in groupby(tickets, key=lambda ticket: ticket.board_id):
        position = position_after_last(board_id=board_id, column_phase_ids=column_phase_ids)
        for ticket in cards:
            ticket.phase = new_phase
            ticket.position = position
            ticket.version += 1
            ticket.updated_at = now
            position += POSITION_GAP
            moved.append(ticket)
    # A few statements for all the cards, not one each: a reload may move thousands. (bulk_update skips auto_now.)
    Ticket.objects.bulk_update(moved, ["phase", "position", "version", "updated_at"])
    PhaseHistory.objects.bulk_create(
        PhaseHistory(
            ticket=ticket,
            from_phase=old_phase,
            to_phase=new_phase,
            from_key=old_phase.key,
            to_key=new_phase.key,
            kind=PhaseHistory.Kind.JUMP,
            reason=reason,
            actor=actor_label(actor),
            user=actor_user(actor),
        )
        for ticket in moved
    )
    for ticket in moved:
        event_emit(
            board=ticket.board,
            type=EventType.TICKET_TRANSITIONED,
            entity=ticket,
            payload={
                "column": column.key if column else None,
                "position": ticket.position,
                "previous_id": None,
                "next_id": None,
                "version": ticket.version,
                "from": old_phase.key,
                "to": new_phase.key,
                "kind": PhaseHistory.Kind.JUMP,
                "reason": reason,
            },
            actor=actor,
        )
    return moved


@transaction.atomic
def phase_remap(*, old_phase, new_phase, actor=WORKFLOW_RELOAD):
    """Everything of the board app in `old_phase` goes to `new_phase`: the workflow reload's mover.

    Tickets move through `tickets_remap_phase`. Tasks and specialist agents
    are not cards on the board: a plain update re-points them, with no event
    of their own (their tickets' events are the news).
    """
    tickets = tickets_remap_phase(old_phase=old_phase, new_phase=new_phase, actor=actor)
    Task.objects.filter(phase=old_phase).update(phase=new_phase)
    Agent.objects.filter(phase=old_phase).update(phase=new_phase)
    return tickets
