"""Ticket results (workflows with `has_result`): an agent submits one, staff accept or reject it, and an accepted
one is applied once, as the workflow's `on_result_found` says."""

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from ..errors import NotFound, Refused
from ..events import EventType, event_emit, task_payload
from ..models import Task, Ticket, TicketResult
from .inputs import clean_text
from .tasks import _agent_free
from .tickets import ticket_transition

SUMMARY_MAX = 20_000
NOTE_MAX = 20_000
ARTIFACTS_MAX = 100
STOP_ALL = "stop_all"
STOP_ALL_REASON = "Result accepted: stop all"


def _result_payload(result, **extra):
    return {"result": result.pk, "status": result.status, "phase": result.ticket.phase.key, **extra}


@transaction.atomic
def ticket_result_submit(*, ticket, agent, summary, artifacts=()):
    """An agent submits the ticket's result for staff to review.

    Refused (409) when the ticket's workflow takes no results or the ticket is
    in a terminal phase (its work is over); the agent must be on the ticket's
    board. The ticket's row is locked, so a result never lands on a ticket
    that has just been moved to its end.
    """
    list(Ticket.objects.select_for_update().filter(pk=ticket.pk).values_list("pk"))
    ticket = Ticket.objects.select_related("board__workflow", "phase").get(pk=ticket.pk)
    if not agent.boards.filter(pk=ticket.board_id).exists():
        raise PermissionDenied(f"Agent {agent.name} is not on board {ticket.board.slug}.")
    workflow = ticket.board.workflow
    if not workflow.has_result:
        raise Refused(f"Workflow {workflow.name} takes no ticket results (has_result is off).")
    if ticket.phase.is_terminal:
        raise Refused(
            f"#{ticket.pk} is in {ticket.phase.name}, a terminal phase: its work is over, so it takes no result."
        )
    summary = clean_text(summary, field="summary", max_length=SUMMARY_MAX, required=True)
    if not isinstance(artifacts, list | tuple):
        raise ValidationError({"artifacts": 'A list of artifacts, such as {"type": "document", "path": ...}.'})
    if len(artifacts) > ARTIFACTS_MAX:
        raise ValidationError({"artifacts": f"At most {ARTIFACTS_MAX} artifacts (this has {len(artifacts)})."})
    result = TicketResult.objects.create(ticket=ticket, summary=summary, artifacts=list(artifacts), submitted_by=agent)
    event_emit(
        board=ticket.board,
        type=EventType.TICKET_RESULT_SUBMITTED,
        entity=ticket,
        payload=_result_payload(result, summary=summary[:200]),
        actor=agent,
    )
    return result


@transaction.atomic
def ticket_result_review(*, result, user, accept, note=""):
    """Staff accept or reject a submitted result; a rejection says why. Each result is reviewed once."""
    if not getattr(user, "is_staff", False):
        raise PermissionDenied("Only staff review ticket results.")
    note = clean_text(note, field="note", max_length=NOTE_MAX)
    if not accept and not note:
        raise ValidationError({"note": "Say why the result is rejected."})
    status = TicketResult.Status.ACCEPTED if accept else TicketResult.Status.REJECTED
    now = timezone.now()
    # Conditional: of two reviewers at once, one decides and the other is told.
    changed = TicketResult.objects.filter(pk=result.pk, status=TicketResult.Status.SUBMITTED).update(
        status=status, reviewed_by=user, reviewed_at=now, review_note=note
    )
    if not changed:
        current = TicketResult.objects.filter(pk=result.pk).values_list("status", flat=True).first()
        if current is None:
            raise NotFound(f"No result {result.pk}.")
        raise Refused(f"This result was already {current}; only a submitted result can be reviewed.")
    result = TicketResult.objects.select_related("ticket__board", "ticket__phase").get(pk=result.pk)
    event_emit(
        board=result.ticket.board,
        type=EventType.TICKET_RESULT_REVIEWED,
        entity=result.ticket,
        payload=_result_payload(result, note=note),
        actor=user,
    )
    return result


def _end_phase(workflow):
    """Where a ticket goes when its work stops: the first terminal phase that does not hold work (not Blocked)."""
    ends = workflow.phases.filter(is_terminal=True).in_order()
    return next((phase for phase in ends if not phase.is_holding), None)


@transaction.atomic
def ticket_result_apply(*, result, actor, now=None):
    """Act once on an accepted result, as its workflow's `on_result_found` says; True when this call applied it.

    `stop_all` moves the ticket to its workflow's end phase (a forced move, so
    `actor` must be a system actor or staff) and cancels its open tasks, each
    with a `task.cancelled` event; `do_nothing` only marks the result applied.
    `applied_at` is set by a conditional update in the same transaction, so
    of two orchestrators only one applies it.
    """
    now = now or timezone.now()
    taken = TicketResult.objects.filter(
        pk=result.pk, status=TicketResult.Status.ACCEPTED, applied_at__isnull=True
    ).update(applied_at=now)
    if not taken:
        return False
    result = TicketResult.objects.select_related("ticket__board__workflow", "ticket__phase").get(pk=result.pk)
    ticket = result.ticket
    workflow = ticket.board.workflow
    if workflow.on_result_found != STOP_ALL:
        return True
    # Lock order as on every path: tasks, then the columns and the ticket (the move), then the board (events).
    open_tasks = list(
        Task.objects.select_for_update(of=("self",))
        .filter(ticket=ticket, status__in=Task.OPEN_STATUSES)
        .select_related("phase", "assigned_agent")
        .order_by("pk")
    )
    end = _end_phase(workflow)
    finished = ticket.phase.is_terminal and not ticket.phase.is_holding
    if end is not None and not finished:
        ticket = ticket_transition(ticket=ticket, to_phase=end, actor=actor, reason=STOP_ALL_REASON, force=True)
    for task in open_tasks:
        cancelled = Task.objects.filter(pk=task.pk, status__in=Task.OPEN_STATUSES).update(
            status=Task.Status.CANCELLED, finished_at=now, updated_at=now
        )
        if not cancelled:
            continue
        task.status = Task.Status.CANCELLED
        event_emit(
            board=ticket.board,
            type=EventType.TASK_CANCELLED,
            entity=task,
            payload=task_payload(task, reason=STOP_ALL_REASON, result=result.pk),
            actor=actor,
        )
        if task.assigned_agent_id:
            _agent_free(task.assigned_agent)
    return True
