"""With the channel layer (Redis) unreachable, board sockets still open, stay open and get every event from the poll."""

import asyncio
import logging
import socket

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.testing import WebsocketCommunicator

from board import consumers
from board.events import board_group
from omoi_site.asgi import application

from .test_board_consumer import (
    PATH,
    assert_closed_with,
    assert_still_usable,
    browser_headers,
    create,
    log_quietly,
    receive_events,
    run,
)

pytestmark = pytest.mark.django_db(transaction=True)


class UnreachableLayer(InMemoryChannelLayer):
    """A channel layer whose server is down: every call that would reach it fails."""

    async def group_add(self, group, channel):
        raise ConnectionError("the channel layer is down")

    async def group_discard(self, group, channel):
        raise ConnectionError("the channel layer is down")

    async def group_send(self, group, message):
        raise ConnectionError("the channel layer is down")

    async def send(self, channel, message):
        raise ConnectionError("the channel layer is down")

    async def receive(self, channel):
        raise ConnectionError("the channel layer is down")


class LayerLostAfterJoining(InMemoryChannelLayer):
    """A channel layer that goes down once the socket has joined its group."""

    async def receive(self, channel):
        raise ConnectionError("the channel layer is down")

    async def group_discard(self, group, channel):
        raise ConnectionError("the channel layer is down")


class LayerThatComesBack(InMemoryChannelLayer):
    """A channel layer that is down until a test says otherwise."""

    down = True

    async def group_add(self, group, channel):
        if self.down:
            raise ConnectionError("the channel layer is down")
        await super().group_add(group, channel)


def closed_port():
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def layer_settings(name):
    if name == "redis":
        address = f"redis://127.0.0.1:{closed_port()}/0"
        return {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [{"address": address}]}}
    return {"BACKEND": f"{__name__}.{name}"}


@pytest.fixture
def layer_failures(monkeypatch):
    """Counts the socket's channel layer failures, with retries close together so that several happen."""
    monkeypatch.setattr(consumers, "LAYER_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(consumers, "LAYER_RETRY_MAX_SECONDS", 0.05)
    failures = []
    original = consumers.BoardConsumer.layer_failed

    def counted(consumer):
        failures.append(consumer)
        original(consumer)

    monkeypatch.setattr(consumers.BoardConsumer, "layer_failed", counted)
    return failures


async def wait_until(condition):
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.01)


def layer_warnings(caplog):
    return [
        record
        for record in caplog.records
        if record.name == "board.consumers" and record.levelno >= logging.WARNING and "channel layer" in record.message
    ]


@pytest.mark.parametrize("layer", ["redis", "UnreachableLayer", "LayerLostAfterJoining"])
def test_with_the_channel_layer_down_a_socket_opens_gets_events_from_the_poll_and_stays_usable(
    board, bob, settings, caplog, layer_failures, layer
):
    settings.CHANNEL_LAYERS = {"default": layer_settings(layer)}
    settings.OMOI_LIVE_POLL_SECONDS = 0.05
    headers = browser_headers(bob)

    async def scenario():
        communicator = WebsocketCommunicator(application, PATH, headers=headers)
        assert await communicator.connect(timeout=5) == (True, None)
        # Written by a service, whose broadcast fails too: only the poll can bring it.
        ticket = await create(board=board, title="Through the poll", actor=bob)
        (event,) = await receive_events(communicator, 1)
        assert (event["type"], event["entity_id"]) == ("ticket.created", str(ticket.pk))
        await assert_still_usable(communicator)
        # The layer keeps failing in the background, and the socket keeps going.
        await wait_until(lambda: len(layer_failures) >= 5)
        written = await log_quietly(board, 2)
        assert await receive_events(communicator, 2) == written
        await assert_still_usable(communicator)
        # Leaving the group fails too, and the socket still ends cleanly.
        await communicator.disconnect()
        await communicator.wait()

    with caplog.at_level(logging.DEBUG, logger="board.consumers"):
        run(scenario)
    # Once per socket, not once per failure.
    assert len(layer_warnings(caplog)) == 1


@pytest.mark.parametrize("layer", ["redis", "UnreachableLayer"])
def test_with_the_channel_layer_down_a_refused_socket_still_gets_its_close_code(board, charlie, settings, layer):
    settings.CHANNEL_LAYERS = {"default": layer_settings(layer)}
    refusals = [
        (browser_headers(None), consumers.CLOSE_UNAUTHENTICATED),
        (browser_headers(charlie), consumers.CLOSE_NOT_FOUND),
    ]

    async def scenario():
        for headers, code in refusals:
            communicator = WebsocketCommunicator(application, PATH, headers=headers)
            assert await communicator.connect(timeout=5) == (True, None)
            await assert_closed_with(communicator, code)
            await communicator.disconnect()

    run(scenario)


def test_a_socket_joins_its_group_once_the_channel_layer_is_back(board, bob, settings, monkeypatch, layer_failures):
    settings.CHANNEL_LAYERS = {"default": layer_settings("LayerThatComesBack")}
    # With the poll an hour away, whatever arrives came through the channel layer.
    settings.OMOI_LIVE_POLL_SECONDS = 3600
    headers = browser_headers(bob)

    async def scenario():
        layer = get_channel_layer()
        communicator = WebsocketCommunicator(application, PATH, headers=headers)
        assert await communicator.connect(timeout=5) == (True, None)
        await wait_until(lambda: len(layer_failures) >= 2)
        monkeypatch.setattr(LayerThatComesBack, "down", False)
        await wait_until(lambda: board_group(board.pk) in layer.groups)
        (event,) = await log_quietly(board, 1)
        await layer.group_send(board_group(board.pk), {"type": "board.event", "event": event})
        assert await receive_events(communicator, 1) == [event]
        await communicator.disconnect()
        # And leaves it when the socket ends.
        assert board_group(board.pk) not in layer.groups

    run(scenario)


def test_a_message_on_the_layer_that_is_not_a_board_event_is_ignored(board, bob, settings):
    settings.OMOI_LIVE_POLL_SECONDS = 3600
    headers = browser_headers(bob)

    async def scenario():
        communicator = WebsocketCommunicator(application, PATH, headers=headers)
        assert await communicator.connect() == (True, None)
        layer = get_channel_layer()
        for message in [{"type": "websocket.disconnect", "code": 1000}, {"type": "no.such.handler"}]:
            await layer.group_send(board_group(board.pk), message)
        (event,) = await log_quietly(board, 1)
        await layer.group_send(board_group(board.pk), {"type": "board.event", "event": event})
        assert await receive_events(communicator, 1) == [event]
        await assert_still_usable(communicator)
        await communicator.disconnect()

    run(scenario)


class BroadcastsFailWhileDown(InMemoryChannelLayer):
    """A channel layer whose sends fail until a test brings it back."""

    down = True

    async def group_send(self, group, message):
        if self.down:
            raise ConnectionError("the channel layer is down")
        await super().group_send(group, message)


def test_writes_while_the_layer_is_down_log_one_warning_not_one_per_event(board, alice, settings, caplog, monkeypatch):
    from board import events
    from board.services import ticket_create

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": f"{__name__}.BroadcastsFailWhileDown"}}
    monkeypatch.setattr(events, "_layer_down", False)
    with caplog.at_level(logging.DEBUG, logger="board.events"):
        for number in range(3):
            ticket_create(board=board, title=f"While down {number}", actor=alice)
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].endswith("the channel layer is down")
        get_channel_layer().down = False
        ticket_create(board=board, title="Back", actor=alice)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2 and warnings[1].startswith("Broadcasting again from event")
