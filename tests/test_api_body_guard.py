"""The ASGI guard of the agent API: oversized or unauthenticated writes are answered before their body is read.

These drive the site's ASGI application the way Daphne does, with a body
that arrives in chunks and never ends, and count how much of it was read.
"""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync

from board import middleware
from board.middleware import ApiBodyGuard
from board.models import Ticket
from board.services import agent_authenticate, agent_revoke
from omoi_site.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

CHUNK = 8192


class EndlessBody:
    """An ASGI `receive` that hands out 8 KiB chunks of a body that never ends (or `body` at once), counting."""

    def __init__(self, body=None):
        self.taken = 0
        self.body = body

    async def __call__(self):
        if self.body == b"":
            await asyncio.Future()  # the whole body was sent; the client waits for the answer
        if self.body is not None:
            body, self.body = self.body, b""
            self.taken += len(body)
            return {"type": "http.request", "body": body, "more_body": False}
        self.taken += CHUNK
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": True}


def call(app, path, *, headers=(), receive=None, method="POST", answer_headers=None):
    """Run one request through `app`; return (status, JSON body, how much of the body was read).

    The answer's headers are added to `answer_headers`, a dict, when one is given.
    """
    receive = receive or EndlessBody()
    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *((k.encode(), v.encode()) for k, v in headers)],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
    }
    async_to_sync(app)(scope, receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    if answer_headers is not None:
        answer_headers.update((name.decode(), value.decode()) for name, value in start["headers"])
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], (json.loads(body) if body else None), receive.taken


def never_called(scope, receive, send):
    raise AssertionError("the request reached the application")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic YWxpY2U6cGFzc3dvcmQ=", "Bearer omoi_not-a-real-token", "Bearer nonsense"],
)
def test_a_write_without_a_valid_token_is_refused_before_its_body_is_read(builder, authorization):
    headers = [("authorization", authorization)] if authorization else []
    status, body, taken = call(ApiBodyGuard(never_called), "/api/v1/tickets", headers=headers)
    assert (status, body, taken) == (401, {"detail": "Unauthorized"}, 0)


@pytest.mark.parametrize("authorization", [None, "Bearer omoi_not-a-real-token"])
def test_an_mcp_write_without_a_valid_token_is_refused_before_its_body_is_read(builder, authorization):
    headers = [("authorization", authorization)] if authorization else []
    answer_headers = {}
    status, body, taken = call(
        ApiBodyGuard(never_called, mcp_path="/mcp"), "/mcp", headers=headers, answer_headers=answer_headers
    )
    assert (status, taken) == (401, 0)
    assert body == {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": middleware.MCP_UNAUTHORIZED}}
    assert answer_headers["www-authenticate"] == ('Bearer error="invalid_token"' if authorization else "Bearer")


def test_an_endless_mcp_body_is_cut_at_the_limit(builder, settings):
    headers = [("authorization", f"Bearer {builder[1]}")]
    status, body, taken = call(application, "/mcp", headers=headers)
    assert status == 413 and body["error"]["message"].startswith("The request body is over the limit")
    assert taken <= settings.OMOI_API_MAX_BODY_BYTES + CHUNK


def test_a_revoked_token_is_refused_before_the_body_is_read(builder, alice):
    agent, token = builder
    agent_revoke(agent=agent, actor=alice)
    status, _, taken = call(ApiBodyGuard(never_called), "/api/v1/tasks", headers=[("authorization", f"Bearer {token}")])
    assert (status, taken) == (401, 0)


def test_a_declared_length_over_the_limit_is_refused_from_the_headers(settings):
    headers = [("content-length", str(300 * 1024 * 1024))]
    status, body, taken = call(ApiBodyGuard(never_called), "/api/v1/tasks", headers=headers)
    assert (status, taken) == (413, 0)
    assert body == {"detail": "The request body is 314572800 bytes; the limit is 262144 bytes."}


def test_an_endless_body_from_a_valid_agent_is_cut_at_the_limit(builder, settings):
    headers = [("authorization", f"Bearer {builder[1]}")]
    status, body, taken = call(ApiBodyGuard(never_called), "/api/v1/tasks", headers=headers)
    assert status == 413
    assert body == {"detail": f"The request body is over the limit of {settings.OMOI_API_MAX_BODY_BYTES} bytes."}
    assert taken <= settings.OMOI_API_MAX_BODY_BYTES + CHUNK


def test_reads_and_pages_are_not_held_up(builder):
    seen = []

    def app(scope, receive, send):
        seen.append(scope["path"])

        async def answer():
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        return answer()

    guard = ApiBodyGuard(app)
    assert call(guard, "/api/v1/health", method="GET")[0] == 204
    assert call(guard, "/accounts/login/", receive=EndlessBody(b"username=x"))[0] == 204
    assert seen == ["/api/v1/health", "/accounts/login/"]


def test_a_valid_write_reaches_the_api_whole_and_the_token_is_looked_up_once(builder, board, monkeypatch):
    lookups = []

    def counted(token):
        lookups.append(token)
        return agent_authenticate(token)

    monkeypatch.setattr(middleware, "agent_authenticate", counted)
    headers = [("authorization", f"Bearer {builder[1]}"), ("content-type", "application/json")]
    payload = json.dumps({"board": board.slug, "title": "Through the guard", "description": "é" * 5000}).encode()
    receive = EndlessBody(payload)
    status, body, taken = call(application, "/api/v1/tickets", headers=headers, receive=receive)
    assert status == 201, body
    assert body["title"] == "Through the guard" and body["description"] == "é" * 5000
    assert taken == len(payload)
    assert Ticket.objects.filter(title="Through the guard").exists()
    assert lookups == [builder[1]]  # the guard's lookup is reused by the API's authentication
