"""Scaling out: two web processes on one database and one channel layer, as in production behind a proxy.

A change made through one process reaches a websocket client of the other.
With Redis (REDIS_URL set) it crosses as a broadcast: here the servers read
their event log only once a minute and do not wake on PostgreSQL's commit
notices, so nothing else could bring it within seconds (and an event written
without a broadcast shows that it does not). With the in-memory channel
layer, whose broadcasts stay inside one process, the other process finds it in
the event log within a couple of poll intervals. The clients speak only the
documented protocol (board/consumers.py): an agent's token in the handshake,
{"type": "event", "event": {...}} frames.
"""

import base64
import contextlib
import hashlib
import json
import os
import socket
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from board.models import Event
from board.services import ticket_create

from .browser import running_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ON_REDIS = settings.CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
# With Redis a broadcast reaches every process, so the poll is made too slow to matter. Without it the poll
# is what carries events between processes, at its usual pace.
POLL_SECONDS = 60 if ON_REDIS else 1
# How long an event may take to reach the other process: a fraction of the poll on Redis; without it, two
# polls and a second to spare for a busy machine.
DEADLINE_SECONDS = 2 if ON_REDIS else 2 * POLL_SECONDS + 1
SOCKET_SECONDS = 10


@pytest.fixture(scope="module")
def web_processes(django_db_setup, tmp_path_factory):
    """Two Daphne processes on the test database and the test run's channel layer: (A, B)."""
    folder = tmp_path_factory.mktemp("web")
    # The live poll's settings are not read from the environment: the project's settings, and these.
    (folder / "scale_out_settings.py").write_text(
        "from omoi_site.settings import *  # noqa: F403\n\n"
        f"OMOI_LIVE_POLL_SECONDS = {POLL_SECONDS}\n"
        # On PostgreSQL a commit can wake the poll (LISTEN); with Redis, only its broadcast is to be measured.
        f"OMOI_LIVE_LISTEN = {not ON_REDIS}\n"
    )
    env = {
        "DJANGO_SETTINGS_MODULE": "scale_out_settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
    }
    with running_server(folder / "a.log", env=env) as a, running_server(folder / "b.log", env=env) as b:
        yield a, b


@pytest.fixture
def web_logs(web_processes):
    """Show what both processes logged during a test when it fails."""
    offsets = [server.log_size() for server in web_processes]
    yield
    for name, server, offset in zip("AB", web_processes, offsets, strict=True):
        print(f"--- web process {name} ({server.log_path}) ---\n{server.log_since(offset)}")


class BoardSocket:
    """A client of a board's live channel, opened as an agent opens it: its token in the handshake.

    The smallest websocket client (RFC 6455) that does: the test process has
    imported Daphne, which commits autobahn's helpers to Twisted, so autobahn's
    asyncio client cannot run here, and no other client library is installed.
    """

    GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, server, slug, token):
        self.address = urlsplit(server.url)
        self.path = f"/ws/boards/{slug}/"
        self.token = token
        self.connection = None
        self.buffer = b""

    def __enter__(self):
        self.connection = socket.create_connection((self.address.hostname, self.address.port), SOCKET_SECONDS)
        key = base64.b64encode(os.urandom(16))
        self.connection.sendall(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.address.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nAuthorization: Bearer {self.token}\r\n\r\n".encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.recv(time.monotonic() + SOCKET_SECONDS)
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        assert status.split()[1] == "101", head
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        accept = base64.b64encode(hashlib.sha1(key + self.GUID).digest()).decode()
        assert headers.get("sec-websocket-accept") == accept, head
        # Frames are served in order, after the handshake's own work: once the pong is back, the socket
        # follows the board (it has joined the channel layer's group and knows where the log stands).
        self.send({"type": "ping"})
        assert self.receive() == {"type": "pong"}
        return self

    def __exit__(self, *exc_info):
        with contextlib.suppress(OSError):
            self.send_frame(0x8, (1000).to_bytes(2, "big"))
        self.connection.close()

    def recv(self, deadline):
        self.connection.settimeout(max(deadline - time.monotonic(), 0.001))
        data = self.connection.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        return data

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = bytes([0x80 | opcode, 0x80 | length])
        else:
            header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.connection.sendall(header + mask + masked)

    def send(self, message):
        self.send_frame(0x1, json.dumps(message).encode())

    def frame(self):
        """(opcode, payload) of the first whole frame in the buffer, taken out of it; None when there is none."""
        if len(self.buffer) < 2:
            return None
        opcode, length, start = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
        assert not self.buffer[1] & 0x80, "a server's frames are not masked"
        if length >= 126:
            size = 2 if length == 126 else 8
            if len(self.buffer) < start + size:
                return None
            length, start = int.from_bytes(self.buffer[start : start + size], "big"), start + size
        if len(self.buffer) < start + length:
            return None
        payload, self.buffer = self.buffer[start : start + length], self.buffer[start + length :]
        return opcode, payload

    def receive(self, timeout=SOCKET_SECONDS):
        """The next JSON frame, or None when none comes within `timeout` seconds. Daphne sends whole frames."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.frame()
            if frame is None:
                try:
                    self.buffer += self.recv(deadline)
                except TimeoutError:
                    return None
                continue
            opcode, payload = frame
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if payload else None
                raise ConnectionError(f"the server closed the socket with {code}")
            if opcode == 0x9:
                self.send_frame(0xA, payload)

    def next_event(self, timeout):
        """The next event frame's event, or None when none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (frame := self.receive(max(deadline - time.monotonic(), 0))) is not None:
            assert frame["type"] in ("event", "pong"), frame
            if frame["type"] == "event":
                return frame["event"]
        return None


def api_post(server, path, body, token):
    request = urllib.request.Request(
        f"{server.url}/api/v1{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=SOCKET_SECONDS) as response:
        assert response.status == 201
        return json.loads(response.read())


def test_a_ticket_created_through_one_process_reaches_a_socket_of_the_other(web_processes, web_logs, board, builder):
    a, b = web_processes
    _, token = builder
    with BoardSocket(b, board.slug, token) as on_b, BoardSocket(a, board.slug, token) as on_a:
        posted = time.monotonic()
        ticket = api_post(a, "/tickets", {"board": board.slug, "title": "Made on A"}, token)
        event = on_b.next_event(DEADLINE_SECONDS)
        took = time.monotonic() - posted

        assert event is not None, f"B's socket got no event within {DEADLINE_SECONDS} s"
        assert event["type"] == "ticket.created"
        assert (event["entity_type"], event["entity_id"]) == ("ticket", str(ticket["id"]))
        assert event["payload"]["title"] == "Made on A"
        assert took < DEADLINE_SECONDS
        # A's own socket gets the same event, from the same log.
        assert on_a.next_event(DEADLINE_SECONDS) == event


@pytest.mark.skipif(not ON_REDIS, reason="without Redis the poll is how events cross processes")
def test_on_redis_an_event_that_was_not_broadcast_waits_for_the_poll(
    web_processes, web_logs, board, builder, alice, no_broadcasts_from_the_test_process
):
    """What makes the test above a test of Redis: here the log alone could not bring the event in time."""
    _, b = web_processes
    _, token = builder
    with BoardSocket(b, board.slug, token) as on_b:
        ticket = ticket_create(board=board, title="Written quietly", actor=alice)
        assert Event.objects.filter(entity_type="ticket", entity_id=ticket.pk, type="ticket.created").exists()

        assert on_b.next_event(DEADLINE_SECONDS) is None
