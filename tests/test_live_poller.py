"""One poller per process: many open board sockets cost one read of the log per interval and a few access queries."""

import asyncio
import contextlib

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import connection

from board import consumers, live
from board.models import Board
from board.services import agent_create, agent_revoke
from omoi_site.asgi import application

from .test_board_consumer import (
    ORIGIN,
    assert_closed_with,
    assert_still_usable,
    browser_login,
    log_quietly,
    poller_stopped,
    poller_tasks,
    receive_events,
    run,
)
from .test_board_consumer_access import change_password, delete_user, log_out, session_of

pytestmark = pytest.mark.django_db(transaction=True)

POLL_SECONDS = 0.1


class Queries:
    """Every statement this thread's connection runs while counting: the poller's, run by database_sync_to_async,
    included (its work runs in the thread that awaits the test's scenario)."""

    def __init__(self):
        self.statements = []
        self.counting = False

    def __call__(self, execute, sql, params, many, context):
        if self.counting:
            self.statements.append(sql)
        return execute(sql, params, many, context)

    @contextlib.contextmanager
    def count(self):
        self.statements, self.counting = [], True
        try:
            yield self.statements
        finally:
            self.counting = False


def reads_of_the_log(statements):
    return [sql for sql in statements if 'FROM "board_event"' in sql]


@pytest.fixture
def queries():
    counter = Queries()
    with connection.execute_wrapper(counter):
        yield counter


@pytest.fixture
def interval_poll(settings):
    """The log is read every 100 ms, on PostgreSQL too (no LISTEN); access is checked once an hour."""
    settings.OMOI_LIVE_POLL_SECONDS = POLL_SECONDS
    settings.OMOI_LIVE_ACCESS_SECONDS = 3600
    settings.OMOI_LIVE_LISTEN = False


@pytest.fixture
def boards(board, alice, bob):
    """Alice's board and two more, each with Bob as a member."""
    others = [
        Board.objects.create(name=f"Board {n}", slug=f"board-{n}", workflow_id=board.workflow_id) for n in range(2)
    ]
    for other in others:
        other.members.add(alice, bob)
    return [board, *others]


def bearer(token):
    return [ORIGIN, (b"authorization", f"Bearer {token}".encode())]


@contextlib.asynccontextmanager
async def sockets(handshakes_and_boards):
    """Open a socket for each (handshake headers, board); yield [(communicator, board)], close them all after."""
    opened = []
    try:
        for handshake, board in handshakes_and_boards:
            communicator = WebsocketCommunicator(application, f"/ws/boards/{board.slug}/", headers=handshake)
            connected, _ = await communicator.connect()
            assert connected
            opened.append((communicator, board))
        yield opened
    finally:
        for communicator, _ in opened:
            await communicator.disconnect()


def crowd_of_fifty(boards, bob, alice):
    """Forty of Bob's tabs and ten agents' sockets, spread over the boards."""
    tabs = [(browser_login(bob)[0], boards[n % len(boards)]) for n in range(40)]
    agents = []
    for n in range(10):
        board = boards[n % len(boards)]
        _, token = agent_create(name=f"agent-{n}", boards=[board], actor=alice)
        agents.append((bearer(token), board))
    return tabs + agents


def test_fifty_sockets_cost_one_read_of_the_log_per_interval_in_all(
    boards, bob, alice, interval_poll, queries, monkeypatch
):
    # Read whether or not anything committed (as without a database file to look at).
    monkeypatch.setattr("board.live.sqlite_files", lambda: None)
    crowd = crowd_of_fifty(boards, bob, alice)

    async def scenario():
        async with sockets(crowd):
            await asyncio.sleep(2 * POLL_SECONDS)
            with queries.count() as statements:
                await asyncio.sleep(10 * POLL_SECONDS)
            # One query an interval, all of it a read of the log: not 50, nor 100 with the access checks.
            assert 5 <= len(statements) <= 11, statements
            assert reads_of_the_log(statements) == statements
            assert len(poller_tasks()) == 1

    run(scenario)


def test_idle_sockets_on_an_sqlite_file_cost_no_query_until_something_commits(
    boards, bob, alice, interval_poll, queries
):
    if connection.vendor != "sqlite":
        pytest.skip("the database's files are looked at on SQLite")
    crowd = crowd_of_fifty(boards, bob, alice)
    first = boards[0]

    async def scenario():
        async with sockets(crowd) as opened:
            await asyncio.sleep(2 * POLL_SECONDS)
            with queries.count() as statements:
                await asyncio.sleep(10 * POLL_SECONDS)
            assert statements == []
            written = await log_quietly(first, 1)
            for communicator, board in opened:
                if board == first:
                    assert await receive_events(communicator, 1) == written

    run(scenario)


def test_events_from_another_process_reach_every_socket_of_their_board_once_and_in_order(
    boards, bob, alice, interval_poll
):
    crowd = crowd_of_fifty(boards, bob, alice)
    first, second, _ = boards

    async def scenario():
        async with sockets(crowd) as opened:
            written = await log_quietly(first, 3)
            written += await log_quietly(first, 2)
            for communicator, board in opened:
                if board == first:
                    assert await receive_events(communicator, 5) == written
            # Nothing twice, and nothing of the first board on the others.
            for communicator, _ in opened:
                assert await communicator.receive_nothing(timeout=0.05)
            later = await log_quietly(second, 1)
            for communicator, board in opened:
                if board == second:
                    assert await receive_events(communicator, 1) == later
            for communicator, _ in opened:
                assert await communicator.receive_nothing(timeout=0.05)

    run(scenario)


def test_a_long_backlog_is_read_in_batches_and_still_arrives_once_in_order(board, bob, interval_poll, monkeypatch):
    monkeypatch.setattr(live, "READ_LIMIT", 4)
    handshake, _ = browser_login(bob)

    async def scenario():
        async with sockets([(handshake, board)] * 3) as opened:
            written = await log_quietly(board, 11)
            for communicator, _ in opened:
                assert await receive_events(communicator, 11) == written
                assert await communicator.receive_nothing(timeout=0.05)

    run(scenario)


def test_closing_every_socket_stops_the_poller_and_its_queries(boards, bob, alice, interval_poll, queries):
    crowd = crowd_of_fifty(boards, bob, alice)[:10]

    async def scenario():
        async with sockets(crowd):
            assert len(poller_tasks()) == 1
        await poller_stopped()
        with queries.count() as statements:
            await asyncio.sleep(5 * POLL_SECONDS)
        assert statements == []
        # And it starts again with the next socket.
        async with sockets(crowd[:1]) as ((communicator, _),):
            await assert_still_usable(communicator)
            assert len(poller_tasks()) == 1
        await poller_stopped()

    run(scenario)


# Access, checked for all sockets at once


def test_the_batched_check_closes_a_removed_member_and_a_revoked_agent_within_the_interval(
    board, alice, bob, charlie, settings, queries
):
    settings.OMOI_LIVE_POLL_SECONDS = 3600
    settings.OMOI_LIVE_ACCESS_SECONDS = 0.3
    board.members.add(charlie)
    scout, token = agent_create(name="scout", boards=[board], actor=alice)
    _, other_token = agent_create(name="other", boards=[board], actor=alice)
    bob_tabs = [(browser_login(bob)[0], board)] * 3
    charlie_tabs = [(browser_login(charlie)[0], board)] * 3
    scout_sockets = [(bearer(token), board)] * 2
    other_sockets = [(bearer(other_token), board)] * 2

    async def scenario():
        async with sockets(bob_tabs + charlie_tabs + scout_sockets + other_sockets) as opened:
            await asyncio.sleep(0.4)
            # A check of ten sockets of two users and two agents: users, boards, memberships, sessions;
            # agents, their boards.
            with queries.count() as statements:
                await asyncio.sleep(0.35)
            assert 1 <= len(statements) / 6 <= 2, statements
            await database_sync_to_async(board.members.remove)(bob)
            await database_sync_to_async(agent_revoke)(agent=scout, actor=alice)
            async with asyncio.timeout(0.3 + 1):
                for communicator, _ in opened[:3]:
                    await assert_closed_with(communicator, consumers.CLOSE_NOT_FOUND)
                for communicator, _ in opened[6:8]:
                    await assert_closed_with(communicator, consumers.CLOSE_UNAUTHENTICATED)
            for communicator, _ in opened[3:6] + opened[8:]:
                await assert_still_usable(communicator)

    run(scenario)


class FakeSocket:
    """What the batched check reads of a socket."""

    def __init__(self, board_id, *, user=None, session=None, agent_id=None):
        self.board_id, self.user_id, self.agent_id = board_id, user and user.pk, agent_id
        self.scope = {"session": session}


def single_check(socket):
    if socket.agent_id is not None:
        return consumers.agent_access(board_id=socket.board_id, agent_id=socket.agent_id)
    return consumers.user_access(board_id=socket.board_id, user_id=socket.user_id, session=socket.scope["session"])


def test_the_batched_check_answers_as_each_socket_s_own_check_does(board, alice, bob, charlie):
    """The rules of user_access and agent_access, on every kind of loss at once, in a fixed number of queries."""
    other = Board.objects.create(name="Other", slug="other", workflow_id=board.workflow_id)
    other.members.add(charlie)
    board.members.remove(alice)  # staff: sees the board without being a member
    dave, erin, frank = (get_user_model().objects.create_user(name, password="x") for name in ("dave", "erin", "frank"))
    board.members.add(dave, erin, frank)
    sessions = {}
    for user in (alice, bob, charlie, dave, erin, frank):
        _, client = browser_login(user)
        sessions[user.username] = (client, session_of(client))
    gone = Board.objects.create(name="Gone", slug="gone", workflow_id=board.workflow_id)
    gone.members.add(bob)
    log_out(board, bob, sessions["bob"][0])
    _, bob_again = browser_login(bob)
    sessions["bob"] = (bob_again, session_of(bob_again))
    log_out(board, dave, sessions["dave"][0])
    change_password(board, erin, None)
    scout, _ = agent_create(name="scout", boards=[board], actor=alice)
    revoked, _ = agent_create(name="revoked", boards=[board], actor=alice)
    agent_revoke(agent=revoked, actor=alice)
    elsewhere, _ = agent_create(name="elsewhere", boards=[other], actor=alice)
    sockets = [
        FakeSocket(board.pk, user=alice, session=sessions["alice"][1]),
        FakeSocket(board.pk, user=bob, session=sessions["bob"][1]),
        FakeSocket(gone.pk, user=bob, session=sessions["bob"][1]),
        FakeSocket(board.pk, user=charlie, session=sessions["charlie"][1]),
        FakeSocket(other.pk, user=charlie, session=sessions["charlie"][1]),
        FakeSocket(board.pk, user=dave, session=sessions["dave"][1]),
        FakeSocket(board.pk, user=erin, session=sessions["erin"][1]),
        FakeSocket(board.pk, user=frank, session=sessions["frank"][1]),
        FakeSocket(board.pk, agent_id=scout.pk),
        FakeSocket(board.pk, agent_id=revoked.pk),
        FakeSocket(other.pk, agent_id=scout.pk),
        FakeSocket(other.pk, agent_id=elsewhere.pk),
        FakeSocket(board.pk, agent_id=elsewhere.pk),
    ]
    gone.delete()
    delete_user(board, frank, None)
    single = [single_check(socket) for socket in sockets]
    assert single == [None, None, 4404, 4404, None, 4401, 4401, 4401, None, 4401, 4404, None, 4404]
    queries = Queries()
    with connection.execute_wrapper(queries), queries.count() as statements:
        batched = live.sockets_access(sockets)
    assert [batched[socket] for socket in sockets] == single
    assert len(statements) == 6


def test_a_batched_check_costs_the_same_queries_for_three_sockets_or_sixty(board, alice, bob):
    def queries_of_a_check(sockets):
        queries = Queries()
        with connection.execute_wrapper(queries), queries.count() as statements:
            codes = live.sockets_access(sockets)
        assert set(codes.values()) == {None}
        return len(statements)

    def crowd(size):
        users = [get_user_model().objects.create_user(f"user-{size}-{n}", password="x") for n in range(size)]
        board.members.add(*users)
        agents = [agent_create(name=f"agent-{size}-{n}", boards=[board], actor=alice)[0] for n in range(size)]
        return [FakeSocket(board.pk, user=user, session=session_of(browser_login(user)[1])) for user in users] + [
            FakeSocket(board.pk, agent_id=agent.pk) for agent in agents
        ]

    assert queries_of_a_check(crowd(2)) == queries_of_a_check(crowd(30)) == 6


# PostgreSQL: LISTEN


@pytest.mark.postgres
def test_on_postgresql_idle_sockets_cost_no_read_and_a_commit_elsewhere_is_heard(board, bob, settings, queries):
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    settings.OMOI_LIVE_POLL_SECONDS = POLL_SECONDS
    settings.OMOI_LIVE_SAFETY_POLL_SECONDS = 3600
    settings.OMOI_LIVE_ACCESS_SECONDS = 3600
    tabs = [(browser_login(bob)[0], board)] * 20

    async def scenario():
        async with sockets(tabs) as opened:
            poller = live.Poller.of_running_loop()
            async with asyncio.timeout(5):
                while not poller.listening:
                    await asyncio.sleep(0.01)
            # The read that follows LISTEN (for what committed before it), then nothing.
            await asyncio.sleep(3 * POLL_SECONDS)
            with queries.count() as statements:
                await asyncio.sleep(10 * POLL_SECONDS)
            assert statements == []
            with queries.count() as statements:
                written = await log_quietly(board, 2)
                for communicator, _ in opened:
                    assert await receive_events(communicator, 2) == written
            assert len(reads_of_the_log(statements)) <= 2, statements

    run(scenario)


def test_an_sqlite_files_look_changes_with_every_commit_and_is_not_trusted_while_fresh(tmp_path, monkeypatch):
    import os
    import sqlite3

    from board import live

    path = tmp_path / "omoi.sqlite3"
    database = sqlite3.connect(path)
    database.execute("PRAGMA journal_mode=WAL")
    database.execute("CREATE TABLE log (n INTEGER)")
    database.commit()
    paths = (str(path), f"{path}-wal")
    monkeypatch.setattr(live, "RACY_SECONDS", 0)

    before = live.files_look(paths)
    database.execute("INSERT INTO log VALUES (1)")
    database.commit()
    after = live.files_look(paths)
    assert before is not None and after is not None and before != after
    assert live.files_look(paths) == after  # nothing committed: the same look

    monkeypatch.setattr(live, "RACY_SECONDS", 60)
    assert live.files_look(paths) is None  # written within the last minute: says nothing
    os.utime(paths[1], ns=(0, 0))
    os.utime(paths[0], ns=(0, 0))
    assert live.files_look(paths) is not None
    database.close()


def test_a_change_of_who_may_listen_is_checked_at_once_not_at_the_next_access_interval(
    board, alice, bob, charlie, settings
):
    """A member taken off the board straight in the database (as the admin does), and a revoked agent."""
    settings.OMOI_LIVE_POLL_SECONDS = 0.2
    settings.OMOI_LIVE_ACCESS_SECONDS = 3600
    board.members.add(charlie)
    scout, token = agent_create(name="scout", boards=[board], actor=alice)
    tabs = [(browser_login(bob)[0], board), (browser_login(charlie)[0], board), (bearer(token), board)]

    async def scenario():
        async with sockets(tabs) as opened:
            (bobs, _), (charlies, _), (scouts, _) = opened
            await asyncio.sleep(0.5)  # the poller is up (and listening, on PostgreSQL)
            await database_sync_to_async(board.members.remove)(bob)
            async with asyncio.timeout(3):
                await assert_closed_with(bobs, consumers.CLOSE_NOT_FOUND)
            await database_sync_to_async(agent_revoke)(agent=scout, actor=alice)
            async with asyncio.timeout(3):
                await assert_closed_with(scouts, consumers.CLOSE_UNAUTHENTICATED)
            await assert_still_usable(charlies)

    run(scenario)
