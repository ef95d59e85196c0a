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

Who may listen: a logged-in member of the board (staff: any board), through
the session cookie; or an agent on the board, through its API token in the
handshake header `Authorization: Bearer <token>` (the header, when present,
decides alone, whatever cookie comes with it). A cookie handshake must carry
an `Origin` header naming this site (ALLOWED_HOSTS); an agent's needs none
(board.middleware.OriginCheckedUnlessBearer).

A refused connection is accepted and then closed with 4401 (not logged in,
or a bad or revoked token) or 4404 (no such board, or not a member, or an
agent not on it): a
socket closed before the handshake completes reaches the browser as a bare
1006, and the page must tell "log in again" from "stop retrying".

Access is checked again for all the sockets of the process at once every
access interval (OMOI_LIVE_ACCESS_SECONDS, 10 s by default; board/live.py),
within a poll interval of a change to what decides it (a membership, a
board, a user, an agent or a session; board/migrations/0007), and, before a
broadcast or a replay is sent, whenever the socket's last check is older
than the access interval. An open socket whose access has ended is closed
the same way (a session that simply expires, within the access interval)
and sent nothing more: 4401 once the session is gone or expired, the user is
inactive or deleted, the password has changed, or the agent is revoked;
4404 once the member or agent has left the board, or the board is gone.

A page asks for what it missed once per connection (with `?after=`, or one
resume), so resumes are rate-limited per socket: three at once, then one
every 10 seconds (RESUME_BURST, RESUME_REFILL_SECONDS). One over the limit
gets an error saying how long to wait, and is otherwise ignored.

The event table is the source of truth. Group broadcasts make delivery
fast; a poll of the table makes it complete, since the in-memory channel
layer does not reach across processes and a broadcast may be lost, and
while the channel layer (Redis) is unreachable the poll alone delivers.
The poll is not the socket's: every socket of the process registers with
one poller (board/live.py), which reads the log of all their boards in one
query at most once per poll interval (OMOI_LIVE_POLL_SECONDS; on
PostgreSQL only after a commit on one of those boards, which it hears with
LISTEN, plus a slow safety read) and hands each socket what it lacks.

Each socket keeps its own position (`last_sent`) and sends under its own
lock, whoever brings the event (its group, the poller, a replay): nothing
at or below the position is sent again, and an event whose board's
previous event the socket has not sent (`follows_on`) comes after the
missing ones, read from the log.
"""

import asyncio
import contextlib
import logging
import math
import re
from time import monotonic
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef
from django.utils import timezone

from .events import BROADCASTER, board_group
from .live import (
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    Poller,
    access_seconds,
    agent_verdict,
    session_exists,
    session_in_database,
    user_verdict,
)
from .middleware import bearer_token
from .models import Agent, Board
from .selectors.events import events_after, last_event_id, missed_more_than, newest_event_id
from .services import agent_authenticate

logger = logging.getLogger(__name__)

# Events fetched and sent per query, so a long replay never holds thousands of rows at once.
BATCH_SIZE = 500
# Beyond this many missed events, re-rendering the page is cheaper than replaying them.
MAX_REPLAY = 5000
# Ids are bigints; a larger number cannot name an event.
MAX_EVENT_ID = 2**63 - 1
_EVENT_ID = re.compile(r"[0-9]{1,19}")
# A page resumes once per reconnect; a client asking again and again only makes the server send history again.
RESUME_BURST = 3
RESUME_REFILL_SECONDS = 10
# The handshake waits this long for the channel layer before going on with the poll alone.
LAYER_TIMEOUT_SECONDS = 5
# A failed channel layer is tried again after this long, then twice as long each time, up to the maximum.
LAYER_RETRY_SECONDS = 1
LAYER_RETRY_MAX_SECONDS = 30


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


def follows_on(event, last_sent):
    """Whether a broadcast event comes right after position `last_sent`, with nothing of its board between.

    An event carries the position of its board's event before it (`previous`): positions are shared by
    all boards, so the gap between two events of one board says nothing by itself. Without it, only the
    next position is known to follow on.
    """
    previous = event.get("previous")
    if isinstance(previous, int) and not isinstance(previous, bool):
        return previous <= last_sent
    return event.get("id") == last_sent + 1


class TokenBucket:
    """`capacity` actions at once, then one more every `refill_seconds`."""

    def __init__(self, capacity, refill_seconds, now):
        self.capacity = capacity
        self.refill_seconds = refill_seconds
        self.tokens = capacity
        self.updated = now

    def take(self, now):
        """0 when an action may go ahead now (and it is counted), else the seconds until one may."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) / self.refill_seconds)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0
        return (1 - self.tokens) * self.refill_seconds


# One socket's access check, one query: a broadcast or replay on a stale check makes it. The rules are
# board/live.py's, which also checks all the sockets of the process at once (`sockets_access`).


def user_access(*, board_id, user_id, session):
    """None while the user of `session` may follow the board, else the close code that ends the socket."""
    board = Board.objects.filter(pk=board_id)
    users = (
        get_user_model()
        .objects.filter(pk=user_id)
        .annotate(board_exists=Exists(board), member=Exists(board.filter(members=OuterRef("pk"))))
    )
    in_database = session_in_database(session)
    if in_database:
        rows = session.get_model_class().objects.filter(session_key=session.session_key, expire_date__gt=timezone.now())
        users = users.annotate(session_exists=Exists(rows))
    user = users.first()
    if user is None:
        return user_verdict(None, session=session, session_alive=False, board_exists=False, member=False)
    return user_verdict(
        user,
        session=session,
        session_alive=user.session_exists if in_database else session_exists(session),
        board_exists=user.board_exists,
        member=user.member,
    )


def agent_access(*, board_id, agent_id):
    """None while the agent may follow the board, else the close code that ends the socket."""
    agent = (
        Agent.objects.filter(pk=agent_id)
        .annotate(on_board=Exists(Board.objects.filter(pk=board_id, agents=OuterRef("pk"))))
        .values("revoked_at", "on_board")
        .first()
    )
    return agent_verdict(agent, on_board=agent is not None and agent["on_board"])


class BoardConsumer(AsyncJsonWebsocketConsumer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.board_id = None
        self.user_id = None
        self.agent_id = None
        # The id of the last event this client has; nothing at or below it is ever sent again.
        self.last_sent = 0
        # The poller, group messages and replays all send events: one at a time keeps them in order.
        self.lock = asyncio.Lock()
        self.poller = None
        self.checked_at = None
        self.resumes = None
        self.accepted = False
        # Set once the socket is refused or closed for lost access: from then on nothing is sent.
        self.ended = False
        self.group = None
        self.joined = False
        self.listening = False
        self.listener = None
        self.layer_warned = False

    async def __call__(self, scope, receive, send):
        """Serve one socket: frames from the client and messages from the channel layer, one at a time.

        Channels' own loop ends the connection as soon as the channel layer
        fails to receive; here an unreachable layer costs only the broadcasts,
        and the poll of the log goes on delivering every event.
        """
        self.scope = scope
        self.base_send = send
        BROADCASTER.serve_on(asyncio.get_running_loop())
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = None
        if self.channel_layer is not None:
            try:
                self.channel_name = await self.channel_layer.new_channel()
            except Exception:
                self.layer_failed()
                self.channel_layer = None
        frames = asyncio.ensure_future(receive())
        try:
            while True:
                if self.listening and self.listener is None:
                    self.listener = asyncio.ensure_future(self.next_layer_message())
                listener = self.listener
                waiting = [frames] if listener is None else [frames, listener]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if frames in done:
                    message, frames = frames.result(), asyncio.ensure_future(receive())
                    await self.dispatch(message)
                if listener in done and not listener.cancelled():
                    if self.listener is listener:
                        self.listener = None
                    await self.dispatch_layer_message(listener.result())
        except StopConsumer:
            pass
        finally:
            await self.stop()
            frames.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await frames

    async def connect(self):
        started = monotonic()
        slug = self.scope["url_route"]["kwargs"]["slug"]
        token = self.bearer_token()
        if token is not None:
            self.agent_id, self.board_id = await self.find_agent_board(token, slug)
            if self.agent_id is None:
                await self.end(CLOSE_UNAUTHENTICATED)
                return
        else:
            user = self.scope.get("user")
            if user is None or not user.is_authenticated:
                await self.end(CLOSE_UNAUTHENTICATED)
                return
            self.user_id = user.pk
            self.board_id = await self.find_board(user, slug)
        if self.board_id is None:
            await self.end(CLOSE_NOT_FOUND)
            return
        self.checked_at = started
        self.resumes = TokenBucket(RESUME_BURST, RESUME_REFILL_SECONDS, started)

        # Join before reading the log: an event committed in between is then
        # both read and broadcast (and sent once), never neither.
        self.group = board_group(self.board_id)
        if self.channel_layer is not None:
            try:
                await asyncio.wait_for(
                    self.channel_layer.group_add(self.group, self.channel_name), LAYER_TIMEOUT_SECONDS
                )
                self.joined = True
            except Exception:
                # The poll still delivers every event; joining is tried again in the background.
                self.layer_failed()
            self.listening = True
        await self.accept()
        self.accepted = True

        after, given = self.after_from_query_string()
        async with self.lock:
            if after is None:
                # No position (or a bad one): the page just rendered is current.
                self.last_sent = await self.newest_event_id()
                if given:
                    await self.send_error("after must be an event id (a non-negative integer).")
            else:
                await self.replay(after)
        if not self.ended:
            # From here on the poller reads the log for this socket, from `last_sent`.
            self.poller = Poller.of_running_loop()
            self.poller.add(self)

    async def end(self, code):
        """Close the socket with `code` and send nothing more; a refused handshake is accepted first."""
        self.ended = True
        if not self.accepted:
            await self.accept()
            self.accepted = True
        await self.close(code=code)
        await self.leave_group()

    async def disconnect(self, code):
        await self.stop()

    async def stop(self):
        """Leave the poller and the group; safe to call more than once."""
        if self.poller is not None:
            self.poller.discard(self)
            self.poller = None
        await self.stop_listening()

    def bearer_token(self):
        """The token of an `Authorization` header ("" when it is not a bearer token), or None without one."""
        for name, value in self.scope.get("headers", []):
            if name.lower() == b"authorization":
                return bearer_token(value.decode("latin-1")) or ""
        return None

    def after_from_query_string(self):
        """The `after` of the query string: (event id or None, whether one was given)."""
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        values = query.get("after")
        if not values:
            return None, False
        return parse_event_id(values[-1]), True

    # Who may listen

    async def allowed(self):
        """Whether this socket may still be sent the board's events; closes it when not. Call with the lock held.

        A check younger than the access interval (the poller's, or this
        socket's own) is reused, so a busy board does not cost a query per event.
        """
        if self.ended:
            return False
        if monotonic() - self.checked_at < access_seconds():
            return True
        started = monotonic()
        code = await self.access_lost()
        self.checked_at = started
        if code is None:
            return True
        await self.end(code)
        return False

    async def access_checked(self, started, code):
        """The poller's check of all sockets, begun at `started`, found `code` (None: still allowed) for this one."""
        if code is None:
            self.checked_at = max(self.checked_at, started)
            return
        async with self.lock:
            if not self.ended:
                await self.end(code)

    @database_sync_to_async
    def access_lost(self):
        if self.agent_id is not None:
            return agent_access(board_id=self.board_id, agent_id=self.agent_id)
        return user_access(board_id=self.board_id, user_id=self.user_id, session=self.scope["session"])

    # Messages from the client

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # The base class lets bad JSON raise, which would drop the connection;
        # a page with a bug should hear about it and keep its live updates.
        if self.ended:
            return  # refused or closed: nothing more is sent
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
            wait = self.resumes.take(monotonic())
            if wait:
                await self.send_error(
                    f"Too many resumes: wait {math.ceil(wait)} s before the next one (live events keep coming)."
                )
                return
            await self.resume(after)
        else:
            await self.send_error(f"unknown message type {str(kind)[:64]!r}; expected resume or ping.")

    async def resume(self, after):
        try:
            async with self.lock:
                if await self.allowed():
                    await self.replay(after)
        except Exception:
            # A database hiccup must not end the connection: the page may resume again, and the poll goes on.
            logger.warning("Board %s: could not replay events", self.board_id, exc_info=True)
            if not self.ended:
                await self.send_error("Could not read the event log; resume again shortly.")

    # Messages from the board's group

    async def dispatch_layer_message(self, message):
        # Only broadcasts are expected here; anything else must not reach a handler, nor end the socket.
        if isinstance(message, dict) and message.get("type") == "board.event":
            await self.dispatch(message)
        else:
            logger.warning("Board %s: ignored a channel layer message that is not a board event", self.board_id)

    async def board_event(self, message):
        event = message.get("event") or {}
        event_id = event.get("id")
        if not isinstance(event_id, int):
            logger.warning("Board %s: dropped a broadcast without an event id", self.board_id)
            return
        async with self.lock:
            if event_id <= self.last_sent:
                return  # already sent, by the poll or an earlier copy of this broadcast
            try:
                if not await self.allowed():
                    return
                if not follows_on(event, self.last_sent):
                    # Earlier events of this board are missing here: the log has them, and they go first.
                    await self.send_events_after(before=event_id)
            except Exception:
                # Sending this one now could skip missing ones or reach a socket that lost access;
                # the poll catches up, in order, after its own check.
                logger.warning("Board %s: could not check a broadcast against the log", self.board_id, exc_info=True)
                return
            if event_id > self.last_sent:
                await self.send_event(event)

    # The channel layer

    async def next_layer_message(self):
        """The next message for this socket from the channel layer; while the layer is unreachable, keep trying."""
        delay = LAYER_RETRY_SECONDS
        while True:
            try:
                if not self.joined and not self.ended:
                    await self.channel_layer.group_add(self.group, self.channel_name)
                    self.joined = True
                return await self.channel_layer.receive(self.channel_name)
            except Exception:
                self.layer_failed()
            await asyncio.sleep(delay)
            delay = min(delay * 2, LAYER_RETRY_MAX_SECONDS)

    async def stop_listening(self):
        self.listening = False
        if self.listener is not None:
            self.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.listener
            self.listener = None
        await self.leave_group()

    async def leave_group(self):
        if not self.joined:
            return
        self.joined = False
        try:
            await asyncio.wait_for(
                self.channel_layer.group_discard(self.group, self.channel_name), LAYER_TIMEOUT_SECONDS
            )
        except Exception:
            # The membership expires on its own; a socket that is ending has nothing left to lose.
            self.layer_failed()

    def layer_failed(self):
        """Report a channel layer failure: a warning once per socket, since a layer that is down fails at every try."""
        path = self.scope.get("path")
        if self.layer_warned:
            logger.debug("Socket %s: the channel layer failed again", path, exc_info=True)
            return
        self.layer_warned = True
        logger.warning(
            "Socket %s: the channel layer is unreachable; events come from the poll alone until it is back",
            path,
            exc_info=True,
        )

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

    async def deliver(self, events):
        """Send what the poller read from the log (the board's events after a position at or below `last_sent`).

        What no broadcast brought: events written by another process, or broadcasts lost on the way.
        """
        async with self.lock:
            if self.ended or events[-1]["id"] <= self.last_sent:
                return
            try:
                if not await self.allowed():
                    return
                for event in events:
                    if event["id"] <= self.last_sent:
                        continue
                    if not follows_on(event, self.last_sent):
                        # The socket is behind what was read (it moved back meanwhile): the log fills the gap.
                        await self.send_events_after(before=event["id"])
                    if event["id"] > self.last_sent:
                        await self.send_event(event)
            except Exception:
                # A database hiccup must not end live updates; the next poll reads from last_sent again.
                logger.warning("Board %s: could not send polled events", self.board_id, exc_info=True)

    async def send_event(self, event):
        await self.send_json({"type": "event", "event": event})
        self.last_sent = event["id"]

    async def send_error(self, message):
        await self.send_json({"type": "error", "message": message})

    @database_sync_to_async
    def find_board(self, user, slug):
        return Board.objects.visible_to(user).filter(slug=slug).values_list("pk", flat=True).first()

    @database_sync_to_async
    def find_agent_board(self, token, slug):
        """(agent id, board id) for the agent holding `token`: (None, None) for a bad token, no board when not on it."""
        agent = agent_authenticate(token)
        if agent is None:
            return None, None
        return agent.pk, agent.boards.filter(slug=slug).values_list("pk", flat=True).first()

    @database_sync_to_async
    def newest_event_id(self):
        return self._newest_event_id()

    def _newest_event_id(self):
        return last_event_id(self.board_id)

    @database_sync_to_async
    def replay_check(self, after, limit):
        """(newest event id of the board, whether the log has reached `after`, whether more than `limit` are missed)."""
        return self._newest_event_id(), after <= newest_event_id(), missed_more_than(self.board_id, after, limit)

    @database_sync_to_async
    def events_after(self, after, *, before=None):
        return events_after(self.board_id, after, before=before, limit=BATCH_SIZE)
