"""Writing events: one row per state change, broadcast once the change commits."""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from .models import Board, Event

logger = logging.getLogger(__name__)


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
