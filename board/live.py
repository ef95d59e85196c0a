"""One poller per server process for every open board socket: it reads the event log and checks access for all of them.

A board socket (board/consumers.py) gets most events from its board's group
broadcast; the poll of the log is what makes delivery complete (events of
another process, broadcasts lost on the way) and the access check is what
closes a socket whose user or agent may no longer listen. Done per socket,
N open pages would cost 2N queries a second. Here the sockets of a process
(of its event loop) register with one `Poller`, whose task:

- reads the log of every board with sockets in one query
  (`boards_events_after`, each board from the position of its furthest
  behind socket) at most once per poll interval (OMOI_LIVE_POLL_SECONDS),
  and hands each socket the events it lacks;
- checks the access of every socket in a fixed number of queries (users,
  their boards, memberships and sessions; agents and their boards) once per
  access interval (OMOI_LIVE_ACCESS_SECONDS), and within a poll interval of
  a change that may decide it (on PostgreSQL the tables that decide access
  notify `omoi_access`; on SQLite any commit counts), and closes the sockets
  that lost it;
- on PostgreSQL, LISTENs on `omoi_events` (the commit trigger notifies the
  board's id, board/migrations/0006_event_log_positions.py) on a connection
  of its own, and then reads the log only after a commit on a board it
  serves, plus a safety read every OMOI_LIVE_SAFETY_POLL_SECONDS; idle
  sockets then cost no event query at all. Without that connection (SQLite,
  or PostgreSQL unreachable for it) the log is read every poll interval,
  except that an SQLite database in a file is first looked at from outside:
  every commit, by any process, changes its write-ahead log, and while the
  files are as they were at the last read (and not so recently written that
  a commit could hide in the same clock tick) the read is skipped, up to the
  safety interval.

The task starts with the first socket and ends with the last: no sockets, no
task, no queries.
"""

import asyncio
import contextlib
import logging
import os
import time
import weakref
from collections import defaultdict
from time import monotonic

import psycopg
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.contrib.sessions.backends.signed_cookies import SessionStore as SignedCookieSessionStore
from django.db import connections
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from .models import Agent, Board
from .selectors.events import boards_events_after

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404

# The channel the commit trigger notifies with a board's id (board/migrations/0006_event_log_positions.py).
CHANNEL = "omoi_events"
# The channel notified when a row that decides who may listen changes: a membership or an agent's place on a
# board removed, a board deleted, a user or an agent changed, a session deleted
# (board/migrations/0007_access_notifications.py).
ACCESS_CHANNEL = "omoi_access"
# Events read in one query, at most; a board with more is read again at once.
READ_LIMIT = 500
# A poll interval below this would turn the poll into a busy loop.
MIN_POLL_SECONDS = 0.01
# A lost access closes a socket within this long. Checking costs a fixed handful of queries for all the
# sockets of the process, so the interval is a trade between those queries and how long someone removed
# from a board (or logged out, or revoked) still sees its events: 10 s keeps the checks of 1,000 idle pages
# at about 0.5 queries a second, while a removal that takes effect "within seconds" is what people expect
# of a page they cannot reload on their own. A broadcast or replay to a socket whose check is older still
# checks first, so nothing is sent on a stale check.
ACCESS_SECONDS = 10.0
# With LISTEN, the log is read anyway this often, in case a notification was lost (the connection broke
# and came back between a commit and our LISTEN, or a writer with the trigger disabled).
SAFETY_POLL_SECONDS = 30.0
# A LISTEN connection that fails is tried again after this long, then twice as long each time, up to the maximum.
LISTEN_RETRY_SECONDS = 1.0
LISTEN_RETRY_MAX_SECONDS = 60.0
# Files written this recently may be written again within the same tick of the file system's clock,
# with the same size: their look says nothing yet.
RACY_SECONDS = 0.05


def poll_seconds():
    return max(float(getattr(settings, "OMOI_LIVE_POLL_SECONDS", 1.0)), MIN_POLL_SECONDS)


def access_seconds():
    return max(float(getattr(settings, "OMOI_LIVE_ACCESS_SECONDS", ACCESS_SECONDS)), MIN_POLL_SECONDS)


def safety_poll_seconds():
    return max(float(getattr(settings, "OMOI_LIVE_SAFETY_POLL_SECONDS", SAFETY_POLL_SECONDS)), poll_seconds())


# Who may listen: the rules, once, for a single socket's check (board/consumers.py) and for the batch here.


def user_verdict(user, *, session, session_alive, board_exists, member):
    """None while `user` (None: deleted) may follow the board with `session`, else the close code that ends it."""
    if user is None or not session_alive:
        return CLOSE_UNAUTHENTICATED
    # The hash loaded with the session at the handshake is still the stored one: Django gives a
    # session a new key whenever it stores a new hash (login, update_session_auth_hash).
    if not user.is_active or not password_unchanged(user, session.get(HASH_SESSION_KEY)):
        return CLOSE_UNAUTHENTICATED
    # The rule of BoardQuerySet.visible_to, read from the rows just loaded.
    if not board_exists or not (user.is_staff or member):
        return CLOSE_NOT_FOUND
    return None


def agent_verdict(agent, *, on_board):
    """None while the agent (a row with `revoked_at`, None: deleted) may follow the board, else the close code."""
    if agent is None or agent["revoked_at"] is not None:
        return CLOSE_UNAUTHENTICATED
    if not on_board:
        return CLOSE_NOT_FOUND
    return None


def session_in_database(session):
    return isinstance(session, DatabaseSessionStore)


def session_exists(session):
    """Whether a session kept outside the database is still there (logging out deletes it)."""
    if isinstance(session, SignedCookieSessionStore):
        # The cookie is the session: nothing on the server can be deleted, but it can be too old.
        return bool(SignedCookieSessionStore(session.session_key).load())
    return session.exists(session.session_key)


def password_unchanged(user, session_hash):
    """Whether the session was made with the user's current password, as django.contrib.auth.get_user decides."""
    if not session_hash:
        return False
    hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(session_hash, expected) for expected in hashes)


def users_access(checks):
    """Close codes (None: may go on) for (board id, user id, session) triples, in four queries however many.

    The users, the boards that still exist, the memberships among them and the
    sessions kept in the database that have not expired.
    """
    if not checks:
        return []
    user_ids = {user_id for _, user_id, _ in checks}
    board_ids = {board_id for board_id, _, _ in checks}
    users = get_user_model().objects.in_bulk(user_ids)
    boards = set(Board.objects.filter(pk__in=board_ids).values_list("pk", flat=True))
    members = set(Board.objects.filter(pk__in=board_ids, members__in=user_ids).values_list("pk", "members"))
    in_database = defaultdict(set)
    for _, _, session in checks:
        if session_in_database(session):
            in_database[session.get_model_class()].add(session.session_key)
    alive = set()
    now = timezone.now()
    for model, keys in in_database.items():
        alive.update(
            model.objects.filter(session_key__in=keys, expire_date__gt=now).values_list("session_key", flat=True)
        )
    return [
        user_verdict(
            users.get(user_id),
            session=session,
            session_alive=session.session_key in alive if session_in_database(session) else session_exists(session),
            board_exists=board_id in boards,
            member=(board_id, user_id) in members,
        )
        for board_id, user_id, session in checks
    ]


def agents_access(checks):
    """Close codes (None: may go on) for (board id, agent id) pairs, in two queries however many."""
    if not checks:
        return []
    agent_ids = {agent_id for _, agent_id in checks}
    board_ids = {board_id for board_id, _ in checks}
    agents = {row["pk"]: row for row in Agent.objects.filter(pk__in=agent_ids).values("pk", "revoked_at")}
    on_board = set(Board.objects.filter(pk__in=board_ids, agents__in=agent_ids).values_list("pk", "agents"))
    return [
        agent_verdict(agents.get(agent_id), on_board=(board_id, agent_id) in on_board) for board_id, agent_id in checks
    ]


def sockets_access(sockets):
    """{socket: close code or None} for these sockets, users' and agents' alike, in at most six queries."""
    users = [socket for socket in sockets if socket.agent_id is None]
    agents = [socket for socket in sockets if socket.agent_id is not None]
    codes = users_access([(socket.board_id, socket.user_id, socket.scope["session"]) for socket in users])
    codes += agents_access([(socket.board_id, socket.agent_id) for socket in agents])
    return dict(zip(users + agents, codes, strict=True))


def listen_parameters():
    """Connection parameters of the default database for a LISTEN connection, or None when it is not PostgreSQL."""
    database = connections["default"]
    if database.vendor != "postgresql" or not getattr(settings, "OMOI_LIVE_LISTEN", True):
        return None
    given = database.settings_dict
    parameters = {
        "dbname": given.get("NAME"),
        "user": given.get("USER"),
        "password": given.get("PASSWORD"),
        "host": given.get("HOST"),
        "port": given.get("PORT"),
    }
    # libpq options (sslmode, ...) pass through; Django's own (a pool, the isolation level) do not apply here.
    django_only = {"pool", "isolation_level", "server_side_binding", "assume_role", "cursor_factory", "context"}
    parameters.update({key: value for key, value in given.get("OPTIONS", {}).items() if key not in django_only})
    return {key: value for key, value in parameters.items() if value not in (None, "")}


def sqlite_files():
    """The files of the default database when it is SQLite in a file (the database and its log), else None."""
    database = connections["default"]
    name = str(database.settings_dict.get("NAME") or "")
    if database.vendor != "sqlite" or not name or name == ":memory:" or "mode=memory" in name:
        return None
    return (name, name + "-wal")


def files_look(paths):
    """How `paths` look (inode, size, modification time), or None when one was written too recently to tell."""
    look = []
    for path in paths:
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            look.append(None)
            continue
        if time.time_ns() - stat.st_mtime_ns < RACY_SECONDS * 1e9:
            return None
        look.append((stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(look)


class Poller:
    """The open board sockets of one event loop, and the one task that polls the log and checks access for them.

    A socket is anything with `board_id`, `user_id`, `agent_id`, `scope`,
    `last_sent` and `ended`, and two coroutines: `deliver(events)` (send those
    it has not had, in order) and `access_checked(started, code)`.
    """

    _by_loop = weakref.WeakKeyDictionary()

    @classmethod
    def of_running_loop(cls):
        loop = asyncio.get_running_loop()
        poller = cls._by_loop.get(loop)
        if poller is None:
            poller = cls._by_loop[loop] = cls()
        return poller

    def __init__(self):
        self.boards = defaultdict(set)
        self.task = None
        # Set by a notification of a board with sockets, or by the listener (re)connecting.
        self.wake = asyncio.Event()
        self.changed = False
        # Set when something that decides who may listen may have changed (see ACCESS_CHANNEL).
        self.access_changed = False
        self.listening = False
        self.read_at = self.checked_at = monotonic()
        self.failing = False
        # An SQLite database's files, and how they looked before the last read of the log that queried it.
        self.files = sqlite_files()
        self.files_read = None
        self.full_read_at = monotonic()

    def add(self, socket):
        self.boards[socket.board_id].add(socket)
        if self.task is None or self.task.done():
            # The socket has just read the log and checked its access: both wait a full interval.
            self.read_at = self.checked_at = monotonic()
            self.task = asyncio.get_running_loop().create_task(self.run())

    def discard(self, socket):
        sockets = self.boards.get(socket.board_id)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self.boards[socket.board_id]
        if not self.boards and self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()
            self.task = None

    def sockets(self):
        return [socket for sockets in self.boards.values() for socket in sockets if not socket.ended]

    async def run(self):
        parameters = listen_parameters()
        listener = asyncio.create_task(self.listen(parameters)) if parameters is not None else None
        try:
            while self.boards:
                now = monotonic()
                if now >= self.next_check_at():
                    await self.check_access()
                elif now >= self.next_read_at():
                    await self.read()
                else:
                    self.wake.clear()
                    wait = min(self.next_check_at(), self.next_read_at()) - now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), wait)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    def next_check_at(self):
        if self.access_changed:
            # Whatever decides access changed (a member removed, an agent revoked, a logout): check within an
            # interval, however busy, so someone taken off a board stops getting its events at once.
            return self.checked_at + min(poll_seconds(), access_seconds())
        return self.checked_at + access_seconds()

    def next_read_at(self):
        if not self.listening:
            return self.read_at + poll_seconds()
        if self.changed:
            # At most once per poll interval however busy the boards: broadcasts are the fast path.
            return self.read_at + poll_seconds()
        return self.read_at + safety_poll_seconds()

    # The log

    async def read(self):
        """Read the log of every board with sockets, once (again while a board may have more), and hand it out."""
        self.changed = False
        look = files_look(self.files) if self.files is not None else None
        if look is not None and look == self.files_read and monotonic() < self.full_read_at + safety_poll_seconds():
            self.read_at = monotonic()  # nothing has committed since the last read: no query
            return
        if self.files is not None and look != self.files_read:
            # Something committed: it may have been a change of who may listen (SQLite notifies nobody).
            self.access_may_have_changed()
        self.files_read, self.full_read_at = look, monotonic()
        while True:
            self.read_at = monotonic()
            cursors = {}
            for board_id, sockets in self.boards.items():
                positions = [socket.last_sent for socket in sockets if not socket.ended]
                if positions:
                    cursors[board_id] = min(positions)
            try:
                found = await database_sync_to_async(boards_events_after)(cursors, limit=READ_LIMIT)
            except Exception:
                # A database hiccup must not end live updates: the next poll reads from the same positions.
                self.failed("Live poll of the event log failed")
                self.files_read = None
                return
            self.failing = False
            deliveries = [
                socket.deliver(events)
                for board_id, events in found.items()
                if events
                for socket in list(self.boards.get(board_id, ()))
            ]
            await asyncio.gather(*deliveries, return_exceptions=True)
            if sum(len(events) for events in found.values()) < READ_LIMIT:
                return

    def failed(self, what):
        """Warn once per run of failures, since a database that is down fails at every try."""
        if self.failing:
            logger.debug(what, exc_info=True)
        else:
            logger.warning(what, exc_info=True)
        self.failing = True

    # Access

    async def check_access(self):
        self.checked_at = started = monotonic()
        self.access_changed = False
        sockets = self.sockets()
        if not sockets:
            return
        try:
            codes = await database_sync_to_async(sockets_access)(sockets)
        except Exception:
            # Each socket checks for itself before it is sent anything on a check older than the interval.
            self.failed("Live access check failed")
            return
        await asyncio.gather(
            *(socket.access_checked(started, code) for socket, code in codes.items()), return_exceptions=True
        )

    # Notifications (PostgreSQL)

    async def listen(self, parameters):
        """Keep a LISTEN connection open, and wake the poller when a board it serves commits an event."""
        delay = LISTEN_RETRY_SECONDS
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**parameters, autocommit=True) as listening:
                    await listening.execute(f"LISTEN {CHANNEL}")
                    await listening.execute(f"LISTEN {ACCESS_CHANNEL}")
                    self.listening = True
                    delay = LISTEN_RETRY_SECONDS
                    # Whatever committed before LISTEN took effect was notified to no one: read once now.
                    self.notified()
                    async for notification in listening.notifies():
                        if notification.channel == ACCESS_CHANNEL:
                            self.access_may_have_changed()
                        elif notification.payload.isdigit() and int(notification.payload) in self.boards:
                            self.notified()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Cannot LISTEN for events; polling the log every interval until it can", exc_info=True)
            if self.listening:
                self.listening = False
                self.wake.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, LISTEN_RETRY_MAX_SECONDS)

    def notified(self):
        self.changed = True
        self.wake.set()

    def access_may_have_changed(self):
        self.access_changed = True
        self.wake.set()
