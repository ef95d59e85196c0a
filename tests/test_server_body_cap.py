"""The web server caps request bodies as they arrive: a huge upload is refused without being read, on any page.

These run the server as `make run` does (python -m omoi_site.server) and
talk to it over a socket.
"""

import http.client
import json
import socket
import time
from urllib.parse import urlsplit

import pytest

from board.services import agent_create

from .browser import running_server

pytestmark = pytest.mark.django_db(transaction=True)

MEGABYTE = 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_setup, django_db_blocker):
    with running_server(tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running


def connect(server):
    parts = urlsplit(server.url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def send_chunked(server, path, megabytes, headers=None):
    """POST `megabytes` in 1 MiB chunks without a Content-Length; (status, JSON, MiB sent before the answer)."""
    connection = connect(server)
    connection.putrequest("POST", path)
    for name, value in {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **(headers or {})}.items():
        connection.putheader(name, value)
    connection.endheaders()
    block = b" " * MEGABYTE
    sent = 0
    try:
        for _ in range(megabytes):
            connection.send(b"%x\r\n%s\r\n" % (len(block), block))
            sent += 1
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server stopped reading: what these tests want
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"null"), sent


def test_a_chunked_upload_past_the_cap_is_refused_before_it_ends(server, settings):
    started = time.monotonic()
    status, body, sent = send_chunked(server, "/api/v1/tasks", 200)
    assert status == 413
    assert body == {"detail": f"The request body is over the limit of {settings.OMOI_MAX_REQUEST_BYTES} bytes."}
    assert sent < 200  # the refusal came while the client was still sending
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/accounts/login/", "/admin/phases/workflow/import/"])
def test_a_declared_length_past_the_cap_is_refused_from_the_headers_on_any_page(server, settings, path):
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        declared = 300 * MEGABYTE
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"100 Continue" not in head  # the client is told at once, and never sends the body
    limit = settings.OMOI_MAX_REQUEST_BYTES
    assert json.loads(body) == {"detail": f"The request body is {declared} bytes; the limit is {limit} bytes."}


def test_under_the_cap_the_api_guard_answers_and_the_server_keeps_serving(server, board, alice, settings):
    _, token = agent_create(name="uploader", boards=[board], actor=alice)
    assert send_chunked(server, "/api/v1/tasks", 2)[:2] == (401, {"detail": "Unauthorized"})
    status, body, _ = send_chunked(server, "/api/v1/tasks", 2, {"Authorization": f"Bearer {token}"})
    assert (status, body) == (
        413,
        {"detail": f"The request body is over the limit of {settings.OMOI_API_MAX_BODY_BYTES} bytes."},
    )
    connection = connect(server)
    connection.request("GET", "/api/v1/health")
    assert connection.getresponse().status == 200
