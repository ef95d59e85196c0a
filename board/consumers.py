"""The live channel of a board: every open page gets each event of its board once, in order, even after a reconnect.

Protocol (JSON text frames over `/ws/boards/<slug>/[?after=<event id>]`):

server → client
    {"type": "event", "event": {"id", "type", "entity_type", "entity_id", "payload", "actor", "created_at"}}
    {"type": "reload", "reason": "..."}   the page should re-render instead of replaying
    {"type": "pong"}
    {"type": "error", "message": "..."}   the connection stays open
client → server
    {"type": "resume", "after": <event id>}   "I have applied everything up to this id"
    {"type": "ping"}

A refused connection is accepted and then closed with 4401 (not logged in)
or 4404 (no such board, or not a member): a socket closed before the
handshake completes reaches the browser as a bare 1006, and the page must
tell "log in again" from "stop retrying".

The event table is the source of truth. Group broadcasts make delivery
fast; a poll of the table makes it complete, since the in-memory channel
layer does not reach across processes and a broadcast may be lost.
"""

import asyncio
import contextlib
import logging
import re
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from .events import board_group
from .models import Board, Event

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

# Events fetched and sent per query, so a long replay never holds thousands of rows at once.
BATCH_SIZE = 500
# Beyond this many missed events, re-rendering the page is cheaper than replaying them.
MAX_REPLAY = 5000
# Ids are bigints; a larger number cannot name an event.
MAX_EVENT_ID = 2**63 - 1
_EVENT_ID = re.compile(r"[0-9]{1,19}")
# A poll interval below this would turn the poll into a busy loop.
MIN_POLL_SECONDS = 0.01


def parse_event_id(value):
    """An event id sent by a client (a JSON integer or a string of digits), or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_EVENT_ID else None
    if isinstance(value, str) and _EVENT_ID.fullmatch(value):
        number = int(value)
        return number if number <= MAX_EVENT_ID else None
    return None


class BoardConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.board_id = None
        # The id of the last event this client has; nothing at or below it is ever sent again.
        self.last_sent = 0
        # The poll task and group messages both send events: one at a time keeps them in order.
        self.lock = asyncio.Lock()
        self.poll_task = None

        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        self.board_id = await self.find_board(user, self.scope["url_route"]["kwargs"]["slug"])
        if self.board_id is None:
            await self.refuse(CLOSE_NOT_FOUND)
            return

        # Join before reading the log: an event committed in between is then
        # both read and broadcast (and sent once), never neither.
        group = board_group(self.board_id)
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups.append(group)
        await self.accept()

        after, given = self.after_from_query_string()
        async with self.lock:
            if after is None:
                # No position (or a bad one): the page just rendered is current.
                self.last_sent = await self.newest_event_id()
                if given:
                    await self.send_error("after must be an event id (a non-negative integer).")
            else:
                await self.replay(after)
        self.poll_task = asyncio.create_task(self.poll())

    async def refuse(self, code):
        await self.accept()
        await self.close(code=code)

    async def disconnect(self, code):
        if self.poll_task is not None:
            self.poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.poll_task

    def after_from_query_string(self):
        """The `after` of the query string: (event id or None, whether one was given)."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get("after")
        if not values:
            return None, False
        return parse_event_id(values[-1]), True

    # Messages from the client

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # The base class lets bad JSON raise, which would drop the connection;
        # a page with a bug should hear about it and keep its live updates.
        if self.board_id is None:
            return  # refused: the socket is closing
        if text_data is None:
            await self.send_error("Messages must be JSON text frames.")
            return
        try:
            content = await self.decode_json(text_data)
        except (ValueError, RecursionError):
            await self.send_error("Malformed JSON.")
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content, **kwargs):
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "ping":
            await self.send_json({"type": "pong"})
        elif kind == "resume":
            after = parse_event_id(content.get("after"))
            if after is None:
                await self.send_error("resume needs after: an event id (a non-negative integer).")
                return
            async with self.lock:
                await self.replay(after)
        else:
            await self.send_error(f"unknown message type {str(kind)[:64]!r}; expected resume or ping.")

    # Messages from the board's group

    async def board_event(self, message):
        event = message.get("event") or {}
        event_id = event.get("id")
        if not isinstance(event_id, int):
            logger.warning("Board %s: dropped a broadcast without an event id", self.board_id)
            return
        async with self.lock:
            if event_id <= self.last_sent:
                return  # already sent, by the poll or an earlier copy of this broadcast
            if event_id > self.last_sent + 1:
                # Ids are shared by all boards, so a jump may be a gap or nothing:
                # the log says which. Earlier events of this board go first.
                try:
                    await self.send_events_after(before=event_id)
                except Exception:
                    # Sending this one now would skip the missing ones; the poll catches up in order.
                    logger.warning("Board %s: could not read missed events", self.board_id, exc_info=True)
                    return
            if event_id > self.last_sent:
                await self.send_event(event)

    # Reading the log

    async def replay(self, after):
        """Send every event of the board after `after`, or ask the page to reload when that would be too many."""
        newest, known, too_many = await self.replay_check(after, MAX_REPLAY)
        if not known:
            # An id the log never gave out: a page from before a database reset.
            # Waiting for ids above it would silently drop every new event.
            self.last_sent = newest
            await self.send_json({"type": "reload", "reason": "unknown event id"})
        elif too_many:
            self.last_sent = newest
            await self.send_json({"type": "reload", "reason": "too many missed events"})
        else:
            self.last_sent = after
            await self.send_events_after()

    async def send_events_after(self, *, before=None):
        """Send the board's events after `last_sent` (and before `before`), oldest first. Call with the lock held."""
        while True:
            events = await self.events_after(self.last_sent, before=before)
            for event in events:
                await self.send_event(event)
            if len(events) < BATCH_SIZE:
                return

    async def poll(self):
        """Deliver what no broadcast brought: events written by another process, or broadcasts lost on the way."""
        while True:
            await asyncio.sleep(max(float(getattr(settings, "OMOI_LIVE_POLL_SECONDS", 1.0)), MIN_POLL_SECONDS))
            try:
                async with self.lock:
                    await self.send_events_after()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database hiccup must not end live updates; the next poll retries from last_sent.
                logger.warning("Board %s: live poll failed", self.board_id, exc_info=True)

    async def send_event(self, event):
        await self.send_json({"type": "event", "event": event})
        self.last_sent = event["id"]

    async def send_error(self, message):
        await self.send_json({"type": "error", "message": message})

    @database_sync_to_async
    def find_board(self, user, slug):
        return Board.objects.visible_to(user).filter(slug=slug).values_list("pk", flat=True).first()

    @database_sync_to_async
    def newest_event_id(self):
        return self._newest_event_id()

    def _newest_event_id(self):
        return Event.objects.filter(board_id=self.board_id).order_by("-id").values_list("id", flat=True).first() or 0

    @database_sync_to_async
    def replay_check(self, after, limit):
        """(newest event id of the board, whether the log has reached `after`, whether more than `limit` are missed)."""
        newest_anywhere = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
        missed = Event.objects.filter(board_id=self.board_id, id__gt=after).order_by("id").values_list("id", flat=True)
        return self._newest_event_id(), after <= newest_anywhere, bool(missed[limit : limit + 1])

    @database_sync_to_async
    def events_after(self, after, *, before=None):
        # One query on the (board, id) index.
        events = Event.objects.filter(board_id=self.board_id, id__gt=after)
        if before is not None:
            events = events.filter(id__lt=before)
        return [event.as_message() for event in events.order_by("id")[:BATCH_SIZE]]
