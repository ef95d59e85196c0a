"""Events: their names and payloads, who causes them (users, agents, system actors), and writing them.

Every state change writes one row in the same transaction, broadcast to the
board's pages once the change commits. The names are dotted
(`ticket.transitioned`); the board page gets them from `EventType` through the
template, so the JavaScript that decodes events holds no copy of them.
"""

import logging
from dataclasses import dataclass
from enum import StrEnum

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from .models import Board, Event

logger = logging.getLogger(__name__)


class EventType(StrEnum):
    TICKET_CREATED = "ticket.created"
    TICKET_UPDATED = "ticket.updated"
    TICKET_MOVED = "ticket.moved"
    TICKET_TRANSITIONED = "ticket.transitioned"
    TICKET_COMMENTED = "ticket.commented"
    AGENT_REGISTERED = "agent.registered"
    AGENT_UPDATED = "agent.updated"
    TASK_CREATED = "task.created"
    TASK_ASSIGNED = "task.assigned"
    TASK_STARTED = "task.started"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_RELEASED = "task.released"
    DISCOVERY_RECORDED = "discovery.recorded"
    DISCOVERY_BRANCH_CREATED = "discovery.branch_created"
    DISCOVERY_RESOLVED = "discovery.resolved"
    PHASE_GATE_EVALUATED = "phase_gate.evaluated"
    TICKET_RESULT_SUBMITTED = "ticket.result_submitted"
    TICKET_RESULT_REVIEWED = "ticket.result_reviewed"
    TASK_CANCELLED = "task.cancelled"
    AGENT_OFFLINE = "agent.offline"
    AGENT_ONLINE = "agent.online"
    BOARD_CREATED = "board.created"
    BOARD_MEMBER_ADDED = "board.member_added"
    BOARD_MEMBER_UPDATED = "board.member_updated"
    BOARD_MEMBER_REMOVED = "board.member_removed"


@dataclass(frozen=True)
class SystemActor:
    """A process acting on its own authority, such as the orchestrator: it may force a move, with a reason."""

    name: str

    @property
    def actor_label(self):
        return self.name

    def __str__(self):
        return self.name


ORCHESTRATOR = SystemActor("orchestrator")
WORKFLOW_RELOAD = SystemActor("workflow reload")


def task_payload(task, **extra):
    """What every task event says about the task: enough to redraw its card and its node in the graph."""
    return {
        "ticket": task.ticket_id,
        "phase": task.phase.key,
        "status": task.status,
        "title": task.title,
        "agent": task.assigned_agent.name if task.assigned_agent_id else None,
        **extra,
    }


def board_group(board_id):
    """The channel-layer group that every open page of a board listens to."""
    return f"board-{board_id}"


def actor_label(actor):
    """A readable name for whoever caused a change: a user, an agent or a system process."""
    if actor is None:
        return "system"
    if isinstance(actor, AbstractBaseUser):
        return actor.get_username()
    label = getattr(actor, "actor_label", None)
    return str(label) if label is not None else str(actor)


def actor_user(actor):
    return actor if isinstance(actor, AbstractBaseUser) else None


# Whether the last broadcast failed: while the channel layer is down, one warning says so, not one per event.
_layer_down = False


def _broadcast(event):
    global _layer_down
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            board_group(event.board_id), {"type": "board.event", "event": event.as_message()}
        )
    except Exception:
        # The row is already committed: open pages get it from their poll of
        # the log, and a page that reconnects replays it.
        if _layer_down:
            logger.debug("Could not broadcast event %s", event.pk, exc_info=True)
        else:
            logger.warning("Could not broadcast event %s; the channel layer is down", event.pk, exc_info=True)
        _layer_down = True
    else:
        if _layer_down:
            logger.warning("Broadcasting again from event %s", event.pk)
        _layer_down = False


def event_emit(*, board, type, entity, payload=None, actor=None):
    """Record an event in the current transaction; broadcast it after commit.

    The board row is locked first, until the transaction ends: ids are handed
    out at insert but transactions commit in any order, and a reader that
    resumes "after id N" must never find N+1 committing later than N+2.
    """
    list(Board.objects.select_for_update().filter(pk=board.pk).values_list("pk"))
    event = Event.objects.create(
        board=board,
        type=type,
        entity_type=entity._meta.model_name,
        entity_id=str(entity.pk),
        payload=payload or {},
        actor=actor_label(actor),
    )
    transaction.on_commit(lambda: _broadcast(event))
    return event
