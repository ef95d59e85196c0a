"""How an app gives agents MCP tools: a Toolbox of functions of the calling agent, installed on the site's server.

A tool is the API's operation by another road. Its function takes the agent
(from its bearer token, never from an argument) and the arguments, checked
by a pydantic model built on the API's own input schemas; it calls the same
agent-scoped lookups and services; its answer is encoded by the API's output
schema (`answer_json`), so the JSON is the API's. A refusal becomes an MCP
tool error (`isError: true`) carrying the API's message; bad arguments too,
never a protocol error or a 500.

Writes take an optional `idempotency_key` argument, kept in the same store
as the API's Idempotency-Key header: a retry gets the first answer again.
"""

import hashlib
import inspect
import json
from dataclasses import dataclass
from typing import Any

from django.http import JsonResponse
from django_mcpz.server import ToolError
from pydantic import BaseModel, ValidationError

from ..api.errors import REFUSALS, refusal_answer
from ..api.schemas import answer_json, answer_schema
from ..middleware import (
    MCP_UNAUTHORIZED,
    bearer_challenge,
    bearer_token,
    body_too_big,
    json_unstorable,
    request_agent,
    rpc_refusal,
)
from ..services import IdempotencyKeyReused, idempotency_key_problem, idempotent_call
from ..services.idempotency import KEY_MAX

KEY_ARGUMENT = "idempotency_key"
KEY_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": KEY_MAX,
    "description": "Makes a retry safe: the same key and arguments get the first answer again (for 24 hours); "
    "the same key with other arguments is refused. The same store as the API's Idempotency-Key header.",
}
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    function: Any
    arguments: type[BaseModel] | None
    answer: Any
    read_only: bool
    destructive: bool
    idempotent: bool
    empty: str

    @property
    def writes(self):
        return not self.read_only


class Toolbox:
    """The tools one app gives agents; `install` puts them on the site's MCP server.

    Register with `@toolbox.tool(arguments=Model, answer=Schema, ...)` on a
    function `(agent, arguments)` whose docstring is the tool's description.
    `answer` is the API's output schema for what it returns (or None when it
    returns JSON ready to send); a function that returns None answers `empty`.
    """

    def __init__(self):
        self.tools = []

    def tool(
        self,
        *,
        title,
        arguments=None,
        answer=None,
        read_only=False,
        destructive=False,
        idempotent=False,
        empty="",
    ):
        def register(function):
            self.tools.append(
                Tool(
                    name=function.__name__,
                    title=title,
                    description=inspect.getdoc(function),
                    function=function,
                    arguments=arguments,
                    answer=answer,
                    read_only=read_only,
                    destructive=destructive,
                    idempotent=idempotent,
                    empty=empty,
                )
            )
            return function

        return register

    def install(self, server):
        for tool in self.tools:
            server.tool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=input_schema(tool),
                output_schema=output_schema(tool),
                read_only=tool.read_only,
                # The hints about what a write does mean nothing for a read.
                destructive=None if tool.read_only else tool.destructive,
                idempotent=None if tool.read_only else tool.idempotent,
                open_world=False,
            )(_view(tool))


def input_schema(tool):
    schema = tool.arguments.model_json_schema() if tool.arguments else dict(NO_ARGUMENTS)
    schema = {**schema, "properties": dict(schema.get("properties", {})), "additionalProperties": False}
    if tool.writes:
        schema["properties"][KEY_ARGUMENT] = KEY_SCHEMA
    return schema


def output_schema(tool):
    # Only an answer that is always an object of one schema can be declared: clients check each answer against it.
    if tool.empty or not (isinstance(tool.answer, type) and issubclass(tool.answer, BaseModel)):
        return None
    return answer_schema(tool.answer)


def _view(tool):
    def call(request, arguments):
        return run_tool(tool, request.agent, arguments)

    call.__name__ = tool.name
    return call


def run_tool(tool, agent, arguments):
    """The tool's answer for `agent`, or a ToolError with the message the API would give."""
    arguments = dict(arguments)
    key = arguments.pop(KEY_ARGUMENT, None) if tool.writes else None
    problem = json_unstorable(arguments)
    if problem:
        raise ToolError(problem)
    checked = _checked(tool, arguments)
    if key is None:
        status, answer = _answer(tool, agent, checked)
    else:
        status, answer = _answer_once(tool, agent, checked, key, arguments)
    if status >= 400:
        raise ToolError(detail_text(answer["detail"]))
    return tool.empty if answer is None else answer


def _checked(tool, arguments):
    if tool.arguments is None:
        if arguments:
            raise ToolError(f"Invalid arguments: {tool.name} takes none, not {', '.join(sorted(arguments))}.")
        return None
    try:
        return tool.arguments.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors()
        )
        raise ToolError(f"Invalid arguments: {problems}") from None


def _answer(tool, agent, checked):
    """(status, JSON answer) as the API would answer: 200 with the answer, 204 for none, a refusal with its detail."""
    try:
        result = tool.function(agent, checked)
    except REFUSALS as exc:
        status, detail = refusal_answer(exc)
        return status, {"detail": detail}
    if result is None:
        return 204, None
    return 200, result if tool.answer is None else answer_json(tool.answer, result)


def _answer_once(tool, agent, checked, key, arguments):
    problem = idempotency_key_problem(key, name=KEY_ARGUMENT)
    if problem:
        raise ToolError(problem)

    def call():
        status, answer = _answer(tool, agent, checked)
        return status, answer, (status, answer)

    # Arguments in a fixed order: a retry that sends them in another order is the same request.
    body = json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        first, record = idempotent_call(
            agent=agent,
            key=key,
            method="MCP",
            path=tool.name,
            body_hash=hashlib.sha256(body.encode()).hexdigest(),
            call=call,
        )
    except IdempotencyKeyReused as exc:
        raise ToolError(str(exc)) from None
    return first if record is None else (record.status_code, record.response)


def detail_text(detail):
    """The API's error detail as one message: a sentence, or each problem with its field."""
    if not isinstance(detail, list):
        return str(detail)
    return "; ".join(
        ": ".join(filter(None, [".".join(str(part) for part in error["loc"] if part != "body"), error["msg"]]))
        for error in detail
    )


def authenticate(request):
    """django-mcpz's auth hook: the agent of the bearer token on `request.agent`, or the refusal, on every request.

    A body over the API's limit is refused before it is parsed (413), and a
    missing, unknown or revoked token at once (401, with the
    WWW-Authenticate challenge the MCP specification asks for).
    """
    problem = body_too_big(request)
    if problem:
        return _refusal(413, problem)
    token = bearer_token(request.headers.get("Authorization", ""))
    agent = request_agent(request, token) if token else None
    if agent is None:
        response = _refusal(401, MCP_UNAUTHORIZED)
        response["WWW-Authenticate"] = bearer_challenge(token)
        return response
    request.agent = request.auth = agent
    return None


def _refusal(status, message):
    return JsonResponse(rpc_refusal(message), status=status)
