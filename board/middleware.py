"""Guards in front of the agent API and the MCP endpoint: a body size limit, and Idempotency-Key replay for POSTs.

`ApiBodyGuard` wraps the whole ASGI application and answers before Django
reads a request body: a declared or streamed body over the limit gets 413
and a write without a valid token gets 401, so nobody can make the server
hold hundreds of megabytes in memory. `ApiGuardMiddleware` is the Django
middleware behind it (checks the JSON itself, replays Idempotency-Keys).
"""

import asyncio
import hashlib
import json
import math

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse

from .events import BROADCASTER
from .services import IdempotencyKeyReused, agent_authenticate, idempotency_key_problem, idempotent_call

API_PREFIX = "/api/"
# Deep enough for any structured result an agent reports, far below Python's recursion limit.
MAX_DEPTH = 64


WRITE_METHODS = ("POST", "PUT", "PATCH")
# Where ApiBodyGuard leaves the agent it authenticated, so the API does not look the token up again.
SCOPE_AGENT = "omoi.agent"


# What the MCP endpoint answers a request refused before it is read: a JSON-RPC "invalid request" error.
RPC_INVALID_REQUEST = -32600
MCP_UNAUTHORIZED = "Unauthorized: send an agent's token as Authorization: Bearer <token>."


def _problem(status, message):
    return JsonResponse({"detail": message}, status=status)


def rpc_refusal(message):
    """The MCP endpoint's answer (a JSON-RPC error) to a request it refuses before reading it."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": RPC_INVALID_REQUEST, "message": message}}


def bearer_challenge(token):
    """The WWW-Authenticate value for a 401: which token was refused, if one was sent (RFC 6750)."""
    return 'Bearer error="invalid_token"' if token else "Bearer"


def bearer_token(authorization):
    """The token of an `Authorization: Bearer <token>` header value (any case of the scheme), or None."""
    if authorization[:7].lower() != "bearer ":
        return None
    return authorization[7:].strip() or None


class ApiBodyGuard:
    """ASGI middleware: refuse an agent API or MCP write that is too big or unauthenticated before its body is read.

    Daphne has received the body by the time the application runs (a
    reverse proxy in front caps it earlier; see deploy/nginx.conf), but Django
    would then read all of it into memory to parse it. This answers from the
    headers, then reads at most the limit before handing the request on.
    The MCP endpoint (`mcp_path`) gets its refusals as JSON-RPC errors.
    """

    def __init__(self, app, *, mcp_path=None):
        self.app = app
        self.mcp_path = mcp_path

    async def __call__(self, scope, receive, send):
        # This loop serves the requests: what they change is broadcast from it, after the answer.
        BROADCASTER.serve_on(asyncio.get_running_loop())
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS:
            return await self.app(scope, receive, send)
        mcp = scope["path"] == self.mcp_path
        if not mcp and not scope["path"].startswith(API_PREFIX):
            return await self.app(scope, receive, send)
        limit = settings.OMOI_API_MAX_BODY_BYTES
        headers = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            message = f"The request body is {int(declared)} bytes; the limit is {limit} bytes."
            return await _answer(send, 413, message, mcp=mcp)
        token = bearer_token(headers.get("authorization", ""))
        agent = await database_sync_to_async(agent_authenticate)(token) if token else None
        if agent is None:
            return await _answer(send, 401, MCP_UNAUTHORIZED if mcp else "Unauthorized", mcp=mcp, token=token)

        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _answer(send, 413, f"The request body is over the limit of {limit} bytes.", mcp=mcp)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app({**scope, SCOPE_AGENT: (token, agent)}, replay, send)


class OriginCheckedUnlessBearer:
    """ASGI middleware for websockets: check the Origin of cookie handshakes only.

    The Origin check stops another site's page from opening a socket with a
    member's cookie. A handshake carrying `Authorization` comes from an agent,
    not a browser (a page cannot set that header on a websocket), and the
    consumer then goes by the token alone, ignoring any cookie: such a
    handshake needs no Origin.
    """

    def __init__(self, app, checked):
        self.app = app
        self.checked = checked

    async def __call__(self, scope, receive, send):
        if any(name.lower() == b"authorization" for name, _ in scope.get("headers", ())):
            return await self.app(scope, receive, send)
        return await self.checked(scope, receive, send)


async def _answer(send, status, message, *, mcp=False, token=None):
    body = json.dumps(rpc_refusal(message) if mcp else {"detail": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", bearer_challenge(token).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def request_agent(request, token):
    """The agent holding `token`: the one ApiBodyGuard found for this request, or looked up now, once a request.

    The Idempotency-Key guard and the API's authentication both ask; where no
    ApiBodyGuard ran (a test client, another server), the first answer is kept
    on the request for the second.
    """
    found = getattr(request, "scope", {}).get(SCOPE_AGENT) or getattr(request, "_omoi_agent", None)
    if found is not None and found[0] == token:
        return found[1]
    agent = agent_authenticate(token)
    request._omoi_agent = (token, agent)
    return agent


class ApiGuardMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self._guard(request)
        if request.path.startswith(API_PREFIX) and response.status_code >= 400 and not _is_json(response):
            # Django's 404 page and ninja's 405 are HTML or text; an agent reads every error as JSON.
            problem = _problem(response.status_code, _plain_reason(request, response))
            if response.has_header("Allow"):
                problem["Allow"] = response["Allow"]
            return problem
        return response

    def _guard(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.GET.items()):
            return _problem(422, "The URL contains a NUL character (%00), which no parameter accepts.")
        if request.method not in ("POST", "PUT", "PATCH"):
            return self.get_response(request)
        too_big = body_too_big(request)
        if too_big:
            return _problem(413, too_big)
        problem = self._body_not_json(request)
        if problem:
            return problem
        key = request.headers.get("Idempotency-Key")
        if key is None or request.method != "POST":
            return self.get_response(request)
        return self._idempotent(request, key)

    def _body_not_json(self, request):
        if not request.body:
            return None
        try:
            data = json.loads(request.body)
        except UnicodeDecodeError:
            return _problem(422, "The request body is not UTF-8 text.")
        except RecursionError:
            return _problem(422, "The request body is nested too deeply.")
        except ValueError as exc:
            return JsonResponse(
                {
                    "detail": [
                        {"loc": ["body"], "msg": f"The request body is not valid JSON: {exc}", "type": "json_invalid"}
                    ]
                },
                status=422,
            )
        if not isinstance(data, dict):
            return _problem(422, "The request body must be a JSON object.")
        problem = json_unstorable(data)
        if problem:
            return _problem(422, problem)
        return None

    def _idempotent(self, request, key):
        problem = idempotency_key_problem(key)
        if problem:
            return _problem(422, problem)
        token = bearer_token(request.headers.get("Authorization", ""))
        agent = request_agent(request, token) if token else None
        if agent is None:
            return self.get_response(request)  # the API answers 401 itself

        def call():
            response = self.get_response(request)
            return response.status_code, _json_or_text(response), response

        try:
            response, record = idempotent_call(
                agent=agent,
                key=key,
                method=request.method,
                path=request.path,
                body_hash=hashlib.sha256(request.body).hexdigest(),
                call=call,
            )
        except IdempotencyKeyReused as exc:
            return _problem(exc.status, str(exc))
        if record is None:
            return response
        if record.status_code == 204:
            response = HttpResponse(status=204)
        else:
            response = JsonResponse(record.response, status=record.status_code, safe=False)
        response["Idempotent-Replayed"] = "true"
        return response


def body_too_big(request):
    """Why the request's body is refused for its size (over OMOI_API_MAX_BODY_BYTES), or None."""
    limit = settings.OMOI_API_MAX_BODY_BYTES
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        return f"The request body is {int(declared)} bytes; the limit is {limit} bytes."
    try:
        size = len(request.body)
    except RequestDataTooBig:
        return f"The request body is over the limit of {limit} bytes."
    if size > limit:
        return f"The request body is {size} bytes; the limit is {limit} bytes."
    return None


def _is_json(response):
    return response.get("Content-Type", "").startswith("application/json")


def _plain_reason(request, response):
    if response.status_code == 404:
        return f"No API endpoint at {request.path}."
    if response.status_code == 405:
        return f"{request.method} is not allowed here; allowed: {response.get('Allow', 'none')}."
    return f"{response.reason_phrase}."


def _json_or_text(response):
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        return response.content.decode(errors="replace")


def json_unstorable(data):
    """Why a JSON field could not store `data`, or None.

    json.loads accepts NaN, Infinity, numbers that overflow to infinity, lone
    surrogates (\\ud800) and nesting up to Python's recursion limit; a JSON
    column refuses the first three (PostgreSQL jsonb at once, SQLite by its
    JSON_VALID check) and deep nesting overflows the encoder when it is saved.
    PostgreSQL text cannot hold NUL characters either, in any field.
    """
    stack = [(data, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"The request body is nested more than {MAX_DEPTH} levels deep."
        if isinstance(item, float) and not math.isfinite(item):
            return "The request body contains NaN or an infinite number, which JSON cannot store."
        if isinstance(item, str):
            if "\x00" in item:
                return "The request body contains a NUL character (\\u0000), which no field accepts."
            try:
                item.encode()
            except UnicodeEncodeError:
                return "The request body contains an unpaired surrogate (\\ud800-\\udfff), which is not Unicode text."
        elif isinstance(item, dict):
            stack.extend((key, depth) for key in item)
            stack.extend((value, depth + 1) for value in item.values())
        elif isinstance(item, list):
            stack.extend((value, depth + 1) for value in item)
    return None
