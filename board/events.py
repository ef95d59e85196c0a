"""Events: their names and payloads, who causes them (users, agents, system actors), and writing them.

Every state change writes one row in the same transaction, broadcast to the
board's pages once the change commits. The names are dotted
(`ticket.transitioned`); the board page gets them from `EventType` through the
template, so the JavaScript that decodes events holds no copy of them.
"""

import asyncio
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from .models import Event

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

# Events read and sent together, at most.
BATCH = 100


class Broadcaster:
    """Sends committed events to their boards' groups, from the server's event loop when there is one.

    Each event is handed over as its transaction commits (`transaction.on_commit`). In the web server, whose
    event loop serves the sockets (`serve_on`), the hand-over is all the request waits for: one task of the
    loop reads the events' positions, given at commit (`Event.seq`), a batch at a time, and sends them in
    position order. Elsewhere (the orchestrator, a management command, a test without a server) the event
    is read and sent at once. A broadcast is only the fast path: a page that misses one gets the event from
    its poll of the log.
    """

    def __init__(self):
        self.loop = None
        self.queue = None

    def serve_on(self, loop):
        """Send from `loop` from now on (called on it, by the server's entry points; cheap when already so)."""
        if self.loop is loop:
            return
        self.queue = asyncio.Queue()
        self.loop = loop
        loop.create_task(self._work(self.queue))

    def send_after_commit(self, event_id):
        loop, waiting = self.loop, self.queue
        if loop is not None and loop.is_running():
            try:
                loop.call_soon_threadsafe(waiting.put_nowait, event_id)
                return
            except RuntimeError:
                pass  # the loop closed meanwhile
        broadcast_now([event_id])

    async def _work(self, waiting):
        while True:
            batch = [await waiting.get()]
            while len(batch) < BATCH and not waiting.empty():
                batch.append(waiting.get_nowait())
            try:
                messages = await database_sync_to_async(_messages)(batch)
            except Exception:
                logger.warning("Could not read %s events to broadcast", len(batch), exc_info=True)
                continue
            layer = get_channel_layer()
            for group, message in messages if layer is not None else ():
                try:
                    await layer.group_send(group, message)
                except Exception:
                    _broadcast_failed(message)
                else:
                    _broadcast_done(message)


BROADCASTER = Broadcaster()


def _messages(event_ids):
    """(group, message) for each of these committed events, in position order; deleted ones are left out."""
    events = sorted(Event.objects.filter(pk__in=event_ids), key=lambda event: (event.seq or 0, event.pk))
    return [(board_group(event.board_id), {"type": "board.event", "event": event.as_message()}) for event in events]


def broadcast_now(event_ids):
    """Read these committed events and send them to their boards' groups, in this thread."""
    layer = get_channel_layer()
    if layer is None:
        return
    for group, message in _messages(event_ids):
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:
            _broadcast_failed(message)
        else:
            _broadcast_done(message)


def _broadcast_failed(message):
    # The row is already committed: open pages get it from their poll of the log, and a page that
    # reconnects replays it.
    global _layer_down
    position = message["event"]["id"]
    if _layer_down:
        logger.debug("Could not broadcast event %s", position, exc_info=True)
    else:
        logger.warning("Could not broadcast event %s; the channel layer is down", position, exc_info=True)
    _layer_down = True


def _broadcast_done(message):
    global _layer_down
    if _layer_down:
        logger.warning("Broadcasting again from event %s", message["event"]["id"])
    _layer_down = False


def event_emit(*, board, type, entity, payload=None, actor=None):
    """Record an event in the current transaction; broadcast it after commit.

    Nothing is locked here: the event's position in its board's log is given
    by the database as the transaction commits, in commit order (see
    `Event.seq`), so writers of one board do not wait for each other. Inside
    `events_together` the row is written as that block ends.
    """
    event = Event(
        board=board,
        type=type,
        entity_type=entity._meta.model_name,
        entity_id=str(entity.pk),
        payload=payload or {},
        actor=actor_label(actor),
    )
    pending = getattr(_together, "events", None)
    if pending is not None:
        pending.append(event)
        return event
    event.save(force_insert=True)
    transaction.on_commit(partial(BROADCASTER.send_after_commit, event.pk))
    return event


_together = threading.local()


@contextmanager
def events_together():
    """Write the events emitted in this block in one INSERT as it ends, in the order they were emitted.

    For a service that emits several events, each of which would otherwise be
    a statement of its own. The block must run inside the transaction of the
    changes the events describe; when it raises, nothing of it is written.
    Nested blocks write with the outermost.
    """
    if getattr(_together, "events", None) is not None:
        yield
        return
    _together.events = []
    try:
        yield
        events = _together.events
    finally:
        _together.events = None
    if events:
        Event.objects.bulk_create(events)
        for event in events:
            transaction.on_commit(partial(BROADCASTER.send_after_commit, event.pk))
