"""An open board socket keeps checking who listens: removal, logout, deactivation or a new password ends it."""

import asyncio
import datetime
from importlib import import_module

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from board import consumers
from board import live as poller
from board.events import board_group
from board.models import Board

from .test_board_consumer import (
    assert_closed_with,
    assert_still_usable,
    browser_login,
    create,
    live,
    log_quietly,
    receive_events,
    run,
)

# Access is re-checked for all sockets every access interval: here every 50 ms.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_poll")]


def lose_membership(board, user, client):
    board.members.remove(user)


def log_out(board, user, client):
    client.logout()


def deactivate(board, user, client):
    user.is_active = False
    user.save(update_fields=["is_active"])


def change_password(board, user, client):
    user.set_password("a new password")
    user.save(update_fields=["password"])


def let_the_session_expire(board, user, client):
    Session.objects.update(expire_date=timezone.now() - datetime.timedelta(seconds=1))


def delete_user(board, user, client):
    user.delete()


def delete_board(board, user, client):
    board.delete()


def lose_staff_status(board, user, client):
    user.is_staff = False
    user.save(update_fields=["is_staff"])


LOSSES = [
    pytest.param("bob", lose_membership, consumers.CLOSE_NOT_FOUND, id="member removed"),
    pytest.param("bob", log_out, consumers.CLOSE_UNAUTHENTICATED, id="logged out"),
    pytest.param("bob", deactivate, consumers.CLOSE_UNAUTHENTICATED, id="deactivated"),
    pytest.param("bob", change_password, consumers.CLOSE_UNAUTHENTICATED, id="password changed"),
    pytest.param("bob", let_the_session_expire, consumers.CLOSE_UNAUTHENTICATED, id="session expired"),
    pytest.param("bob", delete_user, consumers.CLOSE_UNAUTHENTICATED, id="user deleted"),
    pytest.param("bob", delete_board, consumers.CLOSE_NOT_FOUND, id="board deleted"),
    # Alice sees the board as staff, not as a member.
    pytest.param("alice", lose_staff_status, consumers.CLOSE_NOT_FOUND, id="staff status lost"),
]


@database_sync_to_async
def board_still_exists(board):
    return Board.objects.filter(pk=board.pk).exists()


async def write_and_broadcast(board):
    """An event in the log and on the board's group: whoever may still listen gets it by both ways."""
    (event,) = await log_quietly(board, 1)
    await get_channel_layer().group_send(board_group(board.pk), {"type": "board.event", "event": event})
    return event


@pytest.mark.parametrize(("who", "lose_access", "code"), LOSSES)
def test_a_socket_whose_access_ends_is_closed_on_the_next_poll_and_sent_nothing_more(
    board, alice, request, who, lose_access, code
):
    user = request.getfixturevalue(who)
    if who == "alice":
        board.members.remove(alice)
    handshake, client = browser_login(user)

    async def scenario():
        async with live(handshake) as communicator:
            written = await write_and_broadcast(board)
            assert await receive_events(communicator, 1) == [written]
            await database_sync_to_async(lose_access)(board, user, client)
            await assert_closed_with(communicator, code)
            if await board_still_exists(board):
                await write_and_broadcast(board)
            assert await communicator.receive_nothing(timeout=0.3)

    run(scenario)


class CheckCounter:
    """Counts the access checks made through `module.name`, and waits for them."""

    def __init__(self, monkeypatch, module, name):
        self.calls = 0
        original = getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)

    async def wait_for(self, calls):
        async with asyncio.timeout(5):
            while self.calls < calls:
                await asyncio.sleep(0.01)


def test_a_member_who_keeps_access_stays_connected_through_many_checks(board, bob, monkeypatch):
    checks = CheckCounter(monkeypatch, poller, "users_access")
    handshake, _ = browser_login(bob)

    async def scenario():
        async with live(handshake) as communicator:
            await checks.wait_for(5)
            ticket = await create(board=board, title="Still here", actor=bob)
            (event,) = await receive_events(communicator, 1)
            assert event["entity_id"] == str(ticket.pk)
            await assert_still_usable(communicator)

    run(scenario)


def test_broadcasts_reuse_a_check_younger_than_the_access_interval(board, bob, settings, monkeypatch):
    settings.OMOI_LIVE_POLL_SECONDS = 3600
    settings.OMOI_LIVE_ACCESS_SECONDS = 3600
    checks = CheckCounter(monkeypatch, consumers, "user_access")
    handshake, _ = browser_login(bob)

    async def scenario():
        async with live(handshake) as communicator:
            written = [await write_and_broadcast(board) for _ in range(20)]
            assert await receive_events(communicator, 20) == written
        # A busy board costs no query per event: the check made at connect still holds.
        assert checks.calls == 0

    run(scenario)


def test_a_broadcast_after_an_old_check_checks_again_and_is_not_sent_to_a_removed_member(
    board, bob, settings, monkeypatch
):
    settings.OMOI_LIVE_POLL_SECONDS = 3600
    settings.OMOI_LIVE_ACCESS_SECONDS = 3600
    handshake, _ = browser_login(bob)

    async def scenario():
        async with live(handshake) as communicator:
            await database_sync_to_async(board.members.remove)(bob)
            # Two hours later, with the poller still asleep: only the broadcast can notice.
            later = consumers.monotonic() + 7200
            monkeypatch.setattr(consumers, "monotonic", lambda: later)
            await write_and_broadcast(board)
            await assert_closed_with(communicator, consumers.CLOSE_NOT_FOUND)
            assert await communicator.receive_nothing(timeout=0.3)

    run(scenario)


def test_a_resume_after_losing_access_replays_nothing(board, bob, settings, monkeypatch):
    settings.OMOI_LIVE_POLL_SECONDS = 3600
    settings.OMOI_LIVE_ACCESS_SECONDS = 3600
    handshake, _ = browser_login(bob)

    async def scenario():
        await log_quietly(board, 2)
        async with live(handshake) as communicator:
            await database_sync_to_async(board.members.remove)(bob)
            later = consumers.monotonic() + 7200
            monkeypatch.setattr(consumers, "monotonic", lambda: later)
            await communicator.send_json_to({"type": "resume", "after": 0})
            await assert_closed_with(communicator, consumers.CLOSE_NOT_FOUND)
            assert await communicator.receive_nothing(timeout=0.3)

    run(scenario)


# Other session engines


@pytest.mark.parametrize(
    "engine", ["django.contrib.sessions.backends.cache", "django.contrib.sessions.backends.signed_cookies"]
)
def test_with_another_session_engine_a_member_stays_connected_until_the_password_changes(
    board, bob, settings, monkeypatch, engine
):
    settings.SESSION_ENGINE = engine
    checks = CheckCounter(monkeypatch, poller, "users_access")
    handshake, _ = browser_login(bob)

    async def scenario():
        async with live(handshake) as communicator:
            await checks.wait_for(5)
            written = await write_and_broadcast(board)
            assert await receive_events(communicator, 1) == [written]
            await database_sync_to_async(change_password)(board, bob, None)
            await assert_closed_with(communicator, consumers.CLOSE_UNAUTHENTICATED)

    run(scenario)


def test_with_cached_sessions_logging_out_closes_the_socket(board, bob, settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    handshake, client = browser_login(bob)

    async def scenario():
        async with live(handshake) as communicator:
            await assert_still_usable(communicator)
            await database_sync_to_async(client.logout)()
            await assert_closed_with(communicator, consumers.CLOSE_UNAUTHENTICATED)

    run(scenario)


# The cost of a check


def session_of(client):
    """The session a socket holds, loaded as the handshake loads it."""
    session = import_module(django_settings.SESSION_ENGINE).SessionStore(client.cookies["sessionid"].value)
    session.load()
    session.get("_auth_user_hash")
    return session


def queries_of_a_check(board, user, session):
    with CaptureQueriesContext(connection) as queries:
        code = consumers.user_access(board_id=board.pk, user_id=user.pk, session=session)
    return code, len(queries)


def crowd(board, size):
    """Other members, other boards and other sessions, none of which a check should read."""
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"member{n}-{size}", password="x") for n in range(size)
    )
    board.members.add(*users)
    for n in range(size):
        other = Board.objects.create(name=f"Other {n}", slug=f"other-{size}-{n}", workflow_id=board.workflow_id)
        other.members.add(*users[:3])
    for user in users[:size]:
        browser_login(user)


def test_an_access_check_is_one_query_whatever_the_size_of_the_board(board, bob, alice, charlie):
    _, client = browser_login(bob)
    session = session_of(client)
    crowd(board, 3)
    small = queries_of_a_check(board, bob, session)
    crowd(board, 40)
    large = queries_of_a_check(board, bob, session)
    assert small == large == (None, 1)


@pytest.mark.parametrize(
    ("who", "change", "code"),
    [
        ("bob", None, None),
        ("alice", None, None),
        ("charlie", None, consumers.CLOSE_NOT_FOUND),
        ("bob", log_out, consumers.CLOSE_UNAUTHENTICATED),
        ("bob", change_password, consumers.CLOSE_UNAUTHENTICATED),
        ("bob", delete_user, consumers.CLOSE_UNAUTHENTICATED),
        ("bob", delete_board, consumers.CLOSE_NOT_FOUND),
    ],
)
def test_an_access_check_answers_in_one_query(board, request, who, change, code):
    user = request.getfixturevalue(who)
    _, client = browser_login(user)
    session = session_of(client)
    if change is not None:
        change(board, user, client)
    assert queries_of_a_check(board, user, session) == (code, 1)


def test_with_cached_sessions_a_check_is_still_one_query(board, bob, settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"
    _, client = browser_login(bob)
    session = session_of(client)
    assert queries_of_a_check(board, bob, session) == (None, 1)
    client.logout()
    assert queries_of_a_check(board, bob, session) == (consumers.CLOSE_UNAUTHENTICATED, 1)
