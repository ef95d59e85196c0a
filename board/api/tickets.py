"""Ticket endpoints: create, read with tasks, history and comments, move, comment, the phase gate, the result."""

from django.db.models import Prefetch
from ninja import Router
from ninja.responses import Status

from ..models import PhaseHistory, Task
from ..selectors import agent_board, agent_ticket, ticket_gate
from ..services import ticket_comment, ticket_create, ticket_result_submit, ticket_transition
from .schemas import (
    CommentIn,
    CommentOut,
    GateOut,
    ResultIn,
    ResultOut,
    TaskOut,
    TicketCreateIn,
    TicketDetailOut,
    TicketOut,
    TransitionIn,
    ticket_out,
)

router = Router(tags=["tickets"])


@router.post("", response={201: TicketOut}, summary="Create a ticket")
def create_ticket(request, payload: TicketCreateIn):
    board = agent_board(request.auth, payload.board)
    ticket = ticket_create(
        board=board,
        title=payload.title,
        description=payload.description,
        priority=payload.priority,
        phase=payload.phase,
        actor=request.auth,
    )
    return Status(201, ticket_out(ticket))


@router.get("/{int:ticket_id}", response=TicketDetailOut, summary="A ticket with its tasks, history and comments")
def get_ticket(request, ticket_id: int):
    return ticket_detail(request.auth, ticket_id)


def ticket_detail(agent, ticket_id):
    """The ticket on the agent's boards with its tasks, history and comments, as TicketDetailOut answers it."""
    ticket = agent_ticket(agent, ticket_id)
    task_list = list(
        ticket.tasks.select_related("phase", "assigned_agent")
        .prefetch_related(Prefetch("dependencies", queryset=Task.objects.only("pk").order_by("pk")))
        .order_by("created_at", "id")
    )
    for task in task_list:
        task.ticket = ticket
    history = PhaseHistory.objects.filter(ticket=ticket).order_by("created_at", "id")
    return {
        **ticket_out(ticket),
        "tasks": [TaskOut.from_task(task, [dep.pk for dep in task.dependencies.all()]) for task in task_list],
        "history": [
            {
                "from_phase": entry.from_key,
                "to_phase": entry.to_key,
                "kind": entry.kind,
                "reason": entry.reason,
                "actor": entry.actor,
                "at": entry.created_at,
            }
            for entry in history
        ],
        "comments": list(ticket.comments.order_by("created_at", "id")),
    }


@router.post("/{int:ticket_id}/transition", response=TicketOut, summary="Move a ticket to another phase")
def transition_ticket(request, ticket_id: int, payload: TransitionIn):
    return ticket_transitioned(request.auth, ticket_id, payload)


def ticket_transitioned(agent, ticket_id, payload):
    """The ticket on the agent's boards moved to TransitionIn's phase, as TicketOut answers it."""
    ticket = agent_ticket(agent, ticket_id)
    return ticket_out(ticket_transition(ticket=ticket, to_phase=payload.to_phase, actor=agent, reason=payload.reason))


@router.post("/{int:ticket_id}/comments", response={201: CommentOut}, summary="Comment on a ticket")
def comment_on_ticket(request, ticket_id: int, payload: CommentIn):
    return Status(201, ticket_commented(request.auth, ticket_id, payload))


def ticket_commented(agent, ticket_id, payload):
    """The comment (CommentIn) added to the ticket on the agent's boards."""
    return ticket_comment(ticket=agent_ticket(agent, ticket_id), body=payload.body, actor=agent)


@router.get(
    "/{int:ticket_id}/gate",
    response=GateOut,
    summary="The ticket's phase gate: what is met, what is missing, where it goes next and what holds it",
)
def get_gate(request, ticket_id: int):
    return ticket_gate_out(request.auth, ticket_id)


def ticket_gate_out(agent, ticket_id):
    """The gate of the ticket on the agent's boards, as GateOut answers it."""
    return GateOut.from_gate(ticket_gate(agent_ticket(agent, ticket_id)))


@router.post("/{int:ticket_id}/result", response={201: ResultOut}, summary="Submit the ticket's result for review")
def submit_result(request, ticket_id: int, payload: ResultIn):
    result = ticket_result_submit(
        ticket=agent_ticket(request.auth, ticket_id),
        agent=request.auth,
        summary=payload.summary,
        artifacts=payload.artifacts,
    )
    return Status(201, ResultOut.from_result(result))
