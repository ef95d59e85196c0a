"""The board's live channel: who may listen, and that every event arrives once, in order, from any process."""

import asyncio
import contextlib

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from board import consumers
from board.events import board_group
from board.models import Board, Event
from board.services import ticket_create, ticket_transition
from omoi_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/ws/boards/alices-board/"


ORIGIN = (b"origin", b"http://testserver")


def browser_login(user):
    """A browser that logged in as `user`: (its handshake headers, its test client, to log out with)."""
    client = Client()
    client.force_login(user)
    return [ORIGIN, (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())], client


def browser_headers(user):
    """Handshake headers of a browser logged in as `user` (None: not logged in)."""
    return [ORIGIN] if user is None else browser_login(user)[0]


@pytest.fixture
def headers():
    return browser_headers


@pytest.fixture
def bob_headers(headers, bob):
    return headers(bob)


@pytest.fixture
def broadcasts_only(settings):
    # With the poll an hour away, whatever arrives came through the channel layer.
    settings.OMOI_LIVE_POLL_SECONDS = 3600


def run(coroutine_function):
    async_to_sync(coroutine_function)()


@contextlib.asynccontextmanager
async def live(headers, path=PATH):
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    try:
        yield communicator
    finally:
        await communicator.disconnect()


def poller_tasks():
    return [task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "Poller.run"]


async def poller_stopped():
    """Wait for the process's poller task to end (it is cancelled when the last socket closes)."""
    async with asyncio.timeout(3):
        while poller_tasks():
            await asyncio.sleep(0.01)


async def receive_events(communicator, count):
    messages = [await communicator.receive_json_from(timeout=3) for _ in range(count)]
    assert [message["type"] for message in messages] == ["event"] * count, messages
    return [message["event"] for message in messages]


async def assert_still_usable(communicator):
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}


async def assert_closed_with(communicator, code):
    """The next thing the server does is close the socket with `code`."""
    assert await communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": code}


create = database_sync_to_async(ticket_create)
transition = database_sync_to_async(ticket_transition)


@database_sync_to_async
def log_quietly(board, count):
    """Events written the way another process writes them: into the table, with no broadcast here.

    Each commits on its own, and is read back as a page gets it: with the position given at commit.
    """
    written = [
        Event.objects.create(
            board=board,
            type="ticket.updated",
            entity_type="ticket",
            entity_id=str(n),
            payload={"n": n},
            actor="elsewhere",
        ).pk
        for n in range(count)
    ]
    return [event.as_message() for event in Event.objects.filter(pk__in=written).order_by("seq")]


# Who may listen


def test_a_visitor_who_is_not_logged_in_is_refused_with_4401(board, headers):
    anonymous = headers(None)

    async def scenario():
        communicator = WebsocketCommunicator(application, PATH, headers=anonymous)
        # Accepted, then closed: a code sent before the handshake never reaches the browser.
        assert await communicator.connect() == (True, None)
        assert await communicator.receive_output() == {"type": "websocket.close", "code": 4401}
        await communicator.disconnect()

    run(scenario)


@pytest.mark.parametrize("path", [PATH, "/ws/boards/no-such-board/"])
def test_an_outsider_or_an_unknown_board_is_refused_with_4404(board, charlie, alice, headers, path):
    handshake = headers(alice if "no-such" in path else charlie)

    async def scenario():
        communicator = WebsocketCommunicator(application, path, headers=handshake)
        assert await communicator.connect() == (True, None)
        assert await communicator.receive_output() == {"type": "websocket.close", "code": 4404}
        await communicator.disconnect()

    run(scenario)


def test_a_page_from_another_site_cannot_connect(board, bob_headers):
    foreign = [(b"origin", b"http://evil.example"), *bob_headers[1:]]

    async def scenario():
        communicator = WebsocketCommunicator(application, PATH, headers=foreign)
        connected, _ = await communicator.connect()
        assert not connected

    run(scenario)


@pytest.mark.parametrize("who", ["bob", "alice"])
def test_members_and_staff_are_accepted(board, headers, who, request):
    # Alice is staff and no longer a member: staff see every board.
    board.members.remove(request.getfixturevalue("alice"))
    handshake = headers(request.getfixturevalue(who))

    async def scenario():
        async with live(handshake) as communicator:
            await assert_still_usable(communicator)

    run(scenario)


# Live changes


def test_a_committed_change_reaches_the_page_through_the_group(board, bob, bob_headers, broadcasts_only):
    async def scenario():
        async with live(bob_headers) as communicator:
            assert await communicator.receive_nothing()
            ticket = await create(board=board, title="Live", actor=bob)
            await transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
            created, moved = await receive_events(communicator, 2)
            assert (created["type"], created["entity_id"], created["actor"]) == (
                "ticket.created",
                str(ticket.pk),
                "bob",
            )
            assert (moved["type"], moved["payload"]["to"]) == ("ticket.transitioned", "PHASE_REQUIREMENTS")
            expected = await database_sync_to_async(lambda: [e.as_message() for e in Event.objects.all()])()
            assert [created, moved] == expected
            assert await communicator.receive_nothing()

    run(scenario)


def test_an_event_written_by_another_process_arrives_through_the_poll(board, bob_headers, fast_poll):
    async def scenario():
        async with live(bob_headers) as communicator:
            written = await log_quietly(board, 2)
            assert await receive_events(communicator, 2) == written
            assert await communicator.receive_nothing(timeout=0.3)
        # The poller ends with the last connection.
        await poller_stopped()

    run(scenario)


def test_an_event_both_broadcast_and_polled_is_sent_once(board, bob, bob_headers, fast_poll):
    async def scenario():
        async with live(bob_headers) as communicator:
            await create(board=board, title="Once", actor=bob)
            (event,) = await receive_events(communicator, 1)
            # The same broadcast again, as a second delivery or a retry would bring it.
            await get_channel_layer().group_send(board_group(board.pk), {"type": "board.event", "event": event})
            assert await communicator.receive_nothing(timeout=0.3)
            await assert_still_usable(communicator)

    run(scenario)


def test_a_gap_before_a_broadcast_is_filled_from_the_log_in_order(board, bob_headers, broadcasts_only):
    async def scenario():
        async with live(bob_headers) as communicator:
            written = await log_quietly(board, 3)
            # Only the newest is broadcast: the first two were lost or came from elsewhere.
            await get_channel_layer().group_send(board_group(board.pk), {"type": "board.event", "event": written[-1]})
            assert await receive_events(communicator, 3) == written
            # Their own broadcasts, arriving late, are dropped.
            for event in written[:2]:
                await get_channel_layer().group_send(board_group(board.pk), {"type": "board.event", "event": event})
            assert await communicator.receive_nothing()

    run(scenario)


def test_events_of_another_board_are_never_sent(board, bob, alice, bob_headers, fast_poll):
    async def scenario():
        other = await database_sync_to_async(Board.objects.create)(
            name="Other", slug="other", workflow_id=board.workflow_id
        )
        await database_sync_to_async(other.members.add)(bob)
        async with live(bob_headers) as communicator:
            await create(board=other, title="Elsewhere", actor=alice)
            await log_quietly(other, 2)
            assert await communicator.receive_nothing(timeout=0.3)
            ticket = await create(board=board, title="Here", actor=alice)
            (event,) = await receive_events(communicator, 1)
            assert event["entity_id"] == str(ticket.pk)
        # Nor replayed: the other board's events lie between this board's.
        async with live(bob_headers, f"{PATH}?after=0") as communicator:
            (replayed,) = await receive_events(communicator, 1)
            assert replayed == event
            assert await communicator.receive_nothing()

    run(scenario)


# Replay after a reconnect


def test_a_page_that_gives_no_position_gets_no_replay(board, bob_headers, broadcasts_only):
    async def scenario():
        await log_quietly(board, 2)
        async with live(bob_headers) as communicator:
            assert await communicator.receive_nothing()
            written = await log_quietly(board, 1)
            await get_channel_layer().group_send(board_group(board.pk), {"type": "board.event", "event": written[0]})
            # Only the new one: the two before were on the page already.
            assert await receive_events(communicator, 1) == written

    run(scenario)


def test_a_reconnecting_page_gets_exactly_what_it_missed_in_order(board, bob_headers, broadcasts_only):
    async def scenario():
        seen, *missed = await log_quietly(board, 4)
        async with live(bob_headers, f"{PATH}?after={seen['id']}") as communicator:
            assert await receive_events(communicator, 3) == missed
            assert await communicator.receive_nothing()

    run(scenario)


def test_a_long_replay_is_sent_in_batches(board, bob_headers, broadcasts_only, monkeypatch):
    monkeypatch.setattr(consumers, "BATCH_SIZE", 2)

    async def scenario():
        written = await log_quietly(board, 5)
        async with live(bob_headers, f"{PATH}?after=0") as communicator:
            assert await receive_events(communicator, 5) == written
            assert await communicator.receive_nothing()

    run(scenario)


def test_resume_replays_from_the_position_the_page_gives(board, bob_headers, broadcasts_only):
    async def scenario():
        seen, *missed = await log_quietly(board, 3)
        async with live(bob_headers) as communicator:
            assert await communicator.receive_nothing()
            await communicator.send_json_to({"type": "resume", "after": seen["id"]})
            assert await receive_events(communicator, 2) == missed
            await communicator.send_json_to({"type": "resume", "after": str(missed[-1]["id"])})
            assert await communicator.receive_nothing()

    run(scenario)


def test_resumes_beyond_the_limit_get_an_error_and_replay_nothing(board, bob_headers, broadcasts_only):
    async def scenario():
        written = await log_quietly(board, 2)
        async with live(bob_headers) as communicator:
            for _ in range(consumers.RESUME_BURST):
                await communicator.send_json_to({"type": "resume", "after": 0})
                assert await receive_events(communicator, 2) == written
            await communicator.send_json_to({"type": "resume", "after": 0})
            message = await communicator.receive_json_from()
            assert message["type"] == "error"
            assert f"wait {consumers.RESUME_REFILL_SECONDS} s" in message["message"]
            assert await communicator.receive_nothing()
            # The connection goes on: pings, and live events.
            await assert_still_usable(communicator)
            (event,) = await log_quietly(board, 1)
            await get_channel_layer().group_send(board_group(board.pk), {"type": "board.event", "event": event})
            assert await receive_events(communicator, 1) == [event]

    run(scenario)


def test_a_resume_is_served_again_once_the_wait_is_over(board, bob_headers, broadcasts_only, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(consumers, "monotonic", lambda: clock[0])

    async def scenario():
        written = await log_quietly(board, 1)
        async with live(bob_headers) as communicator:
            for _ in range(consumers.RESUME_BURST):
                await communicator.send_json_to({"type": "resume", "after": 0})
                assert await receive_events(communicator, 1) == written
            clock[0] += consumers.RESUME_REFILL_SECONDS / 2
            await communicator.send_json_to({"type": "resume", "after": 0})
            assert (await communicator.receive_json_from())["type"] == "error"
            clock[0] += consumers.RESUME_REFILL_SECONDS / 2
            await communicator.send_json_to({"type": "resume", "after": 0})
            assert await receive_events(communicator, 1) == written
            # One earned, one spent.
            await communicator.send_json_to({"type": "resume", "after": 0})
            assert (await communicator.receive_json_from())["type"] == "error"

    run(scenario)


def test_the_resume_allowance_refills_one_at_a_time_up_to_the_burst():
    bucket = consumers.TokenBucket(3, 10, now=0)
    assert [bucket.take(0) for _ in range(4)] == [0, 0, 0, 10]
    assert bucket.take(4) == pytest.approx(6)
    assert bucket.take(10) == 0
    assert bucket.take(10) == pytest.approx(10)
    # A long quiet spell earns the burst again, no more.
    assert [bucket.take(1000) for _ in range(4)] == [0, 0, 0, pytest.approx(10)]


def test_too_many_missed_events_ask_the_page_to_reload(board, bob, bob_headers, broadcasts_only, monkeypatch):
    monkeypatch.setattr(consumers, "MAX_REPLAY", 2)

    async def scenario():
        await log_quietly(board, 3)
        async with live(bob_headers, f"{PATH}?after=0") as communicator:
            assert await communicator.receive_json_from() == {"type": "reload", "reason": "too many missed events"}
            assert await communicator.receive_nothing()
            # Live updates go on from where the log is now.
            ticket = await create(board=board, title="After the reload", actor=bob)
            (event,) = await receive_events(communicator, 1)
            assert event["entity_id"] == str(ticket.pk)

    run(scenario)


def test_a_position_the_log_never_reached_asks_the_page_to_reload(board, bob, bob_headers, broadcasts_only):
    async def scenario():
        (newest,) = await log_quietly(board, 1)
        # A page from before the database was reset.
        async with live(bob_headers, f"{PATH}?after={newest['id'] + 1000}") as communicator:
            assert await communicator.receive_json_from() == {"type": "reload", "reason": "unknown event id"}
            ticket = await create(board=board, title="New database", actor=bob)
            (event,) = await receive_events(communicator, 1)
            assert event["entity_id"] == str(ticket.pk)

    run(scenario)


# Bad input


def test_a_malformed_position_is_reported_and_replays_nothing(board, bob_headers, broadcasts_only):
    async def scenario():
        await log_quietly(board, 2)
        for after in ["abc", "-1", "1.5", "99999999999999999999", "%2B3", "1e3"]:
            async with live(bob_headers, f"{PATH}?after={after}") as communicator:
                message = await communicator.receive_json_from()
                assert message == {"type": "error", "message": "after must be an event id (a non-negative integer)."}
                assert await communicator.receive_nothing(), after
                await assert_still_usable(communicator)

    run(scenario)


def test_bad_messages_get_an_error_and_the_connection_stays_usable(board, bob_headers, broadcasts_only):
    bad = [
        ({"text_data": "{not json"}, "Malformed JSON."),
        ({"text_data": "[" * 100_000}, "Malformed JSON."),
        ({"bytes_data": b"\x00\x01"}, "Messages must be JSON text frames."),
        ({"text_data": '{"type": "subscribe"}'}, "unknown message type 'subscribe'"),
        ({"text_data": '["ping"]'}, "unknown message type 'None'"),
        ({"text_data": '{"type": "resume"}'}, "resume needs after"),
        ({"text_data": '{"type": "resume", "after": -4}'}, "resume needs after"),
        ({"text_data": '{"type": "resume", "after": true}'}, "resume needs after"),
        ({"text_data": '{"type": "resume", "after": 1e3}'}, "resume needs after"),
    ]

    async def scenario():
        async with live(bob_headers) as communicator:
            for frame, error in bad:
                await communicator.send_to(**frame)
                message = await communicator.receive_json_from()
                assert message["type"] == "error", frame
                assert error in message["message"], frame
            await assert_still_usable(communicator)
            # And still live.
            written = await log_quietly(board, 1)
            await get_channel_layer().group_send(board_group(board.pk), {"type": "board.event", "event": written[0]})
            assert await receive_events(communicator, 1) == written

    run(scenario)
