"""No input makes the agent API answer 500: a schema-driven fuzz of every operation in its OpenAPI schema.

The operations are read from the running app's schema, so an endpoint is
fuzzed as soon as its router is added. Each example is a valid request for
the operation (the agent's token, real ids and keys, a body drawn from the
request schema with boundary values, sometimes an Idempotency-Key, in which
case it is sent twice) with at most one part broken, so the broken part gets
as far into the code as it can:

- path: another board's ids, huge, negative, non-numeric, unicode, `%00`, `%FF`;
- query: wrong types, NUL, unknown parameters;
- token: revoked, another board's agent, malformed, none; or the method, the
  Idempotency-Key or the content type;
- body: a missing or extra key, a wrong type, not an object; a poison (NaN,
  a lone surrogate, NUL, a huge string, deep nesting, an edge number) in the
  free-form fields, where validation lets anything through; any JSON at all;
  bytes that are not JSON.

Every answer must be under 500, JSON unless 204, and an error must be one of
ALLOWED_ERRORS. Each example runs in a savepoint rolled back afterwards, so
every example starts from the same seeded board and a failure replays exactly.
FUZZ_EXAMPLES sets the examples per operation; runs are derandomized under CI.
"""

import json
import logging
import math
import os
import sys
import traceback
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest
from django.core.signals import got_request_exception
from django.db import transaction
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from board.models import Board, IdempotencyRecord, Task
from board.services import agent_create, agent_revoke, task_create, ticket_create
from discoveries.models import Discovery
from omoi_site.api import api

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "75"))
ALLOWED_ERRORS = {400, 401, 403, 404, 405, 409, 413, 422}
HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def schema_operations(schema):
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


SCHEMA = api.get_openapi_schema()
COMPONENTS = SCHEMA.get("components", {}).get("schemas", {})

# Edge values, used wherever a value of the kind is expected.
EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]
EDGE_FLOATS = [0.0, -0.0, 1e-320, 1e308, -1e308, 2.0**53, 0.1]
EDGE_STRINGS = [
    "",
    " ",
    "\t\n",
    "é",
    "𝄞 emoji 🎉",
    "\u202eright-to-left",
    "null",
    "0",
    "../../etc/passwd",
    "'; DROP TABLE board_task; --",
    "<script>alert(1)</script>",
    "%00",
    "a\x00b",
    "\ud800",
    "x" * 201,
    "x" * 20_001,
]
DEPTHS = [33, 65, 250, 900, 5_000, 50_000]
# Inserted into a URL as they are, not quoted: NUL, bytes that are not UTF-8, slashes and dots.
RAW_URL_FRAGMENTS = ["%00", "a%00b", "%FF", "%C3%A9", "%2F", "..", ".", "%20", "1%2F2", "-1", "1.5", "1e3", "0x10"]

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(EDGE_INTS)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(EDGE_STRINGS)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)

RAW_BODIES = [
    b"",
    b"{",
    b"}",
    b"NaN",
    b'{"result": NaN, "score": Infinity}',
    b"\xff\xfe\x00",
    b"\xef\xbb\xbf{}",
    "{}".encode("utf-16"),
    b"[" * 100_000,
    b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
    b'{"a": 1, "a": 2}',
    b"null",
    b"0",
    b'"text"',
    b"[]",
    b'{"title": "\\ud800", "description": "\\udfff"}',
    b'{"\\u0000": 1}',
    b" " * 300_000,
]
CONTENT_TYPES = [
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "",
]


def deref(schema):
    while isinstance(schema, dict) and "$ref" in schema:
        schema = COMPONENTS[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def deep(depth, container):
    """A placeholder for a value nested `depth` levels deep, swapped in by `encode` (json.dumps would overflow)."""
    return f"__deep_{container}_{depth}__"


def encode(value):
    text = json.dumps(value)
    for container, opening, closing in (("list", "[", "]"), ("dict", '{"a": ', "}")):
        for depth in DEPTHS:
            text = text.replace(f'"{deep(depth, container)}"', opening * depth + "1" + closing * depth)
    return text.encode(errors="surrogatepass")


@dataclass
class World:
    """The seeded board's tokens, and the values a parameter or field of a given name can take.

    Each kind of object maps to (the agent's own ids, ids it must not reach:
    another board's); strings likewise to (real values, near misses).
    """

    token: str
    revoked_token: str
    other_token: str
    ids: dict
    strings: dict

    def kind_of(self, name):
        name = (name or "").lower()
        for kind in ("discovery", "ticket", "task", "board", "phase"):
            if kind in name:
                return kind
        return {"dependencies": "task", "id": "task", "slug": "board", "key": "phase"}.get(name)

    def ids_for(self, name, *, own=True):
        own_ids, foreign = self.ids.get(self.kind_of(name), (sum((ids[0] for ids in self.ids.values()), []), []))
        return own_ids if own else foreign or own_ids

    def strings_for(self, name, *, own=True):
        real, near = self.strings.get(self.kind_of(name), ([], []))
        return real if own else near


@pytest.fixture
def world(board, alice):
    """Alice's board with tickets, tasks in every state and discoveries; another board with its own agent."""
    other_board = Board.objects.create(name="Other board", slug="other-board", workflow=board.workflow)
    agent, token = agent_create(name="fuzzer", boards=[board], actor=alice, capabilities=["python"])
    revoked, revoked_token = agent_create(name="revoked", boards=[board], actor=alice)
    agent_revoke(agent=revoked, actor=alice)
    stranger, other_token = agent_create(name="stranger", boards=[other_board], actor=alice)

    ticket = ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")
    backlog = ticket_create(board=board, title="Audit log", actor=alice)
    # The first id is the one Hypothesis tries first and shrinks towards: a task the agent holds.
    states = ["assigned", "running", "pending", "pending", "assigned", "running", "completed", "failed"]
    tasks = []
    for number, state in enumerate(states):
        task = task_create(ticket=ticket, title=f"Task {number}", actor=alice, required_capabilities=["python"])
        holder = agent if state in ("assigned", "running", "completed", "failed") else None
        Task.objects.filter(pk=task.pk).update(status=state, assigned_agent=holder)
        tasks.append(task)
    tasks.append(task_create(ticket=backlog, title="Needs Rust", actor=alice, required_capabilities=["rust"]))
    tasks[3].dependencies.add(tasks[2])

    other_ticket = ticket_create(board=other_board, title="Elsewhere", actor=alice)
    other_task = task_create(ticket=other_ticket, title="Not yours", actor=alice)
    Task.objects.filter(pk=other_task.pk).update(status="running", assigned_agent=stranger)

    discoveries = [
        Discovery.objects.create(
            source_task=tasks[4], discovery_type="bug", description="Off by one", discovered_by="x"
        ),
        Discovery.objects.create(
            source_task=tasks[4],
            discovery_type="optimization",
            description="Done already",
            discovered_by="x",
            resolution_status="resolved",
        ),
    ]
    other_discovery = Discovery.objects.create(
        source_task=other_task, discovery_type="bug", description="Theirs", discovered_by="x"
    )
    # A key already used for another request: reusing it must be refused, not crash.
    IdempotencyRecord.objects.create(
        agent=agent, key="seeded", method="POST", path="/api/v1/tasks/next", body_hash="0" * 64, status_code=204
    )
    return World(
        token=token,
        revoked_token=revoked_token,
        other_token=other_token,
        ids={
            "task": ([task.pk for task in tasks], [other_task.pk]),
            "ticket": ([ticket.pk, backlog.pk], [other_ticket.pk]),
            "discovery": ([discovery.pk for discovery in discoveries], [other_discovery.pk]),
        },
        strings={
            "board": ([board.slug], [other_board.slug, "no-such-board", board.slug.upper()]),
            "phase": (list(board.workflow.phases.values_list("key", flat=True)), ["PHASE_NOPE", "phase_backlog"]),
        },
    )


# Values shaped by a JSON schema


def value_for(schema, name, world):
    """Values a field described by `schema` accepts, favouring real ids and keys and the bounds of its range."""
    schema = deref(schema)
    for combiner in ("anyOf", "oneOf"):
        if combiner in schema:
            return st.one_of([value_for(option, name, world) for option in schema[combiner]])
    if "allOf" in schema:
        return value_for(schema["allOf"][0], name, world)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        choices = [st.text(min_size=low, max_size=max(low, min(high or 40, 40)))]
        choices.append(st.sampled_from(["x" * low, "x" * high] if high is not None else ["x" * max(low, 1)]))
        # Valid for the schema, so they get past validation to the services and the database.
        choices.append(st.sampled_from([text for text in EDGE_STRINGS if low <= len(text) <= (high or len(text))]))
        if schema.get("format") == "date-time":
            choices.append(st.datetimes().map(lambda moment: moment.isoformat()))
        real = world.strings_for(name)
        if real:
            choices = [st.sampled_from(real)] * 3 + [st.sampled_from(world.strings_for(name, own=False))] + choices
        return st.one_of(choices)
    if kind == "integer":
        low = schema.get("minimum", schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else None)
        high = schema.get("maximum", schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else None)
        edges = [value for value in EDGE_INTS if (low is None or value >= low) and (high is None or value <= high)]
        choices = [st.integers(min_value=low, max_value=high), st.sampled_from(edges + [v for v in (low, high) if v])]
        if name and (name.endswith("_id") or name in {"dependencies", "ticket", "after"}):
            choices = (
                [st.sampled_from(world.ids_for(name))] * 3 + [st.sampled_from(world.ids_for(name, own=False))] + choices
            )
        return st.one_of(choices)
    if kind == "number":
        low, high = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
        edges = [value for value in EDGE_FLOATS if low <= value <= high]
        return st.floats(min_value=low, max_value=high, allow_nan=False, allow_infinity=False) | st.sampled_from(edges)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        items = value_for(schema.get("items", {}), name, world)
        return st.lists(items, min_size=low, max_size=max(low, min(high or 5, 5)))
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = {key: value_for(sub, key, world) for key, sub in properties.items() if key in required}
        optional = {key: value_for(sub, key, world) for key, sub in properties.items() if key not in required}
        shaped = st.fixed_dictionaries(fixed, optional=optional)
        extra = schema.get("additionalProperties")
        if extra:
            more = st.dictionaries(st.text(max_size=12), value_for(extra if extra is not True else {}, None, world))
            shaped = st.tuples(shaped, more).map(lambda pair: {**pair[1], **pair[0]})
        return shaped
    return JSON_VALUES  # no type: any JSON


# Values that pass a loose schema (Any, a free-form object or list) and must still not reach the database.
POISONS = {
    "huge_string": lambda data: "x" * data.draw(st.sampled_from([65, 201, 20_001, 100_000, 300_000]), label="length"),
    "deep_nesting": lambda data: deep(
        data.draw(st.sampled_from(DEPTHS), label="depth"), data.draw(st.sampled_from(["list", "dict"]), label="kind")
    ),
    "nul": lambda data: "before\x00after",
    "surrogate": lambda data: data.draw(st.sampled_from(["\ud800", "a\udfffb"]), label="surrogate"),
    "edge_number": lambda data: data.draw(st.sampled_from(EDGE_INTS + EDGE_FLOATS), label="number"),
    "nan": lambda data: data.draw(st.sampled_from([math.nan, math.inf, -math.inf]), label="nan"),
}
STRUCTURAL = ["drop_required", "wrong_type", "extra_key", "nul_in_key", "not_an_object"]


def accepts_anything(schema):
    """Whether a field takes any JSON value somewhere inside it (`Any`, `dict[str, Any]`, `list[Any]`)."""
    schema = deref(schema)
    kind = schema.get("type")
    if kind is None:
        return not any(word in schema for word in ("anyOf", "oneOf", "allOf", "enum", "const"))
    if kind == "object":
        extra = schema.get("additionalProperties")
        return extra is True or (isinstance(extra, dict) and accepts_anything(extra))
    return kind == "array" and accepts_anything(schema.get("items", {}))


def placed(value, schema):
    """`value` inside the container the field expects, so only the value itself is wrong."""
    kind = deref(schema).get("type")
    return {"key": value} if kind == "object" else [value] if kind == "array" else value


def mutate(data, body, schema, *, poison):
    """`body` with one thing broken the way a careless or hostile client would break it."""
    schema = deref(schema)
    properties = schema.get("properties", {})
    body = dict(body) if isinstance(body, dict) else {}
    key = data.draw(st.sampled_from(list(properties)) if properties else st.text(max_size=8), label="key")
    mutation = data.draw(st.sampled_from(list(POISONS) if poison else STRUCTURAL), label="mutation")
    if mutation in POISONS:
        poison = POISONS[mutation](data)
        loose = [name for name, field in properties.items() if accepts_anything(field)]
        # Into every free-form field at once (the rest stays valid, so the request gets to the database), or one field.
        for name in loose if loose and data.draw(st.integers(0, 2), label="free-form") else [key]:
            body[name] = placed(poison, properties.get(name, {}))
    elif mutation == "drop_required":
        for name in schema.get("required", []) or list(properties)[:1]:
            body.pop(name, None)
    elif mutation == "wrong_type":
        body[key] = data.draw(JSON_VALUES, label="wrong value")
    elif mutation == "extra_key":
        body[data.draw(st.text(max_size=20), label="extra key")] = data.draw(JSON_VALUES, label="extra value")
    elif mutation == "nul_in_key":
        body[key + "\x00"] = "value"
    elif mutation == "not_an_object":
        return data.draw(st.sampled_from([[body], list(body), json.dumps(body), 1]), label="not an object")
    return body


# What one example breaks; everything else in the request is valid, so the broken part gets as far as it can.
TARGETS = [
    "nothing",
    "nothing",
    "path",
    "query",
    "token",
    "method",
    "idempotency_key",
    "content_type",
    "body_structure",
    "body_poison",
    "body_poison",
    "body_poison",
    "body_any_json",
    "body_raw",
]


def draw_body(data, operation, world, target):
    """Bytes to send as the body (or None for no body), drawn from the request schema and beyond it."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = content.get("schema")
    if target == "body_raw":
        return data.draw(st.sampled_from(RAW_BODIES) | st.binary(max_size=64), label="raw body")
    if target == "body_any_json":
        return encode(data.draw(JSON_VALUES, label="any json"))
    if schema is None:
        return None
    value = data.draw(value_for(schema, None, world), label="body")
    if target in ("body_structure", "body_poison"):
        value = mutate(data, value, schema, poison=target == "body_poison")
    return encode(value)


def draw_path(data, path, operation, world, hostile):
    parameters = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "path"}
    for name, parameter in parameters.items():
        integer = deref(parameter["schema"]).get("type") == "integer"
        if not hostile:
            values = st.sampled_from(world.ids_for(name) if integer else world.strings_for(name) or ["x"])
        elif data.draw(st.booleans(), label=f"raw {name}"):
            values = st.sampled_from(RAW_URL_FRAGMENTS).map(lambda fragment: (fragment,))
        elif integer:
            values = st.sampled_from(world.ids_for(name, own=False)) | st.sampled_from(EDGE_INTS) | st.integers()
        else:
            values = st.sampled_from(world.strings_for(name, own=False) or ["x"]) | st.sampled_from(EDGE_STRINGS)
            values |= st.text()
        value = data.draw(values, label=name)
        # A raw fragment (a 1-tuple) goes in as it is; anything else is percent-encoded.
        fragment = value[0] if isinstance(value, tuple) else quote(str(value), safe="", errors="surrogatepass")
        path = path.replace("{" + name + "}", fragment)
    return path


def draw_query(data, operation, world, hostile):
    pairs = []
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "query" or not data.draw(st.booleans(), label=f"send {parameter['name']}"):
            continue
        name = parameter["name"]
        values = value_for(parameter["schema"], name, world)
        if hostile:
            values = st.sampled_from(EDGE_STRINGS) | st.integers() | st.text() | values
        value = data.draw(values, label=name)
        pairs.append((name, "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)))
    if hostile and data.draw(st.booleans(), label="extra parameter"):
        pairs.append((data.draw(st.text(max_size=10), label="extra name"), data.draw(st.text(), label="extra value")))
    query = urlencode(pairs, errors="surrogatepass")
    if hostile and data.draw(st.booleans(), label="raw query"):
        query += ("&" if query else "") + data.draw(st.sampled_from(["board=%00", "limit=%FF", "after", "&&=&"]))
    return query


def draw_headers(data, world, target):
    headers = {"Authorization": f"Bearer {world.token}"}
    if target == "token":
        auth = data.draw(st.sampled_from(["revoked", "other board's", "none", "garbage"]), label="token")
        if auth == "garbage":
            headers["Authorization"] = data.draw(
                st.sampled_from(["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer omoi_" + "x" * 300, "Bearer é"])
                | st.text(max_size=40).map(lambda text: "Bearer " + text),
                label="garbage token",
            )
        elif auth == "none":
            del headers["Authorization"]
        else:
            headers["Authorization"] = f"Bearer {world.revoked_token if auth == 'revoked' else world.other_token}"
    if target == "idempotency_key":
        headers["Idempotency-Key"] = data.draw(
            st.sampled_from(["seeded", "", " ", "x" * 201, "é", "a\tb", "a\nb"]) | st.text(max_size=20),
            label="idempotency key",
        )
    elif data.draw(st.integers(0, 3), label="retry") == 3:
        headers["Idempotency-Key"] = f"retry-{data.draw(st.integers(0, 2**32), label='key')}"
    return headers


def draw_request(data, method, path, operation, world):
    """(method, url, body, content type, headers) with at most one part broken."""
    target = data.draw(st.sampled_from(TARGETS), label="target")
    if target == "method":
        method = data.draw(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]), label="method")
    url = draw_path(data, path, operation, world, hostile=target == "path")
    query = draw_query(data, operation, world, hostile=target == "query")
    if query:
        url += "?" + query
    body = draw_body(data, operation, world, target)
    content_type = "application/json"
    if target == "content_type":
        content_type = data.draw(st.sampled_from(CONTENT_TYPES), label="content type")
    return method, url, body, content_type, draw_headers(data, world, target)


# The run


class Recorder:
    """Exceptions raised while handling a request, which the test client turns into a bare 500."""

    def __init__(self):
        self.exceptions = []

    def __call__(self, sender, **kwargs):
        self.exceptions.append("".join(traceback.format_exception(*sys.exc_info())))


def problems_with(response, exceptions):
    status = response.status_code
    problems = []
    if status >= 500:
        problems.append(f"answered {status}")
    elif status >= 400 and status not in ALLOWED_ERRORS:
        problems.append(f"answered {status}, not one of {sorted(ALLOWED_ERRORS)}")
    if status != 204:
        try:
            json.loads(response.content)
        except ValueError:
            problems.append(f"answered {status} with a body that is not JSON: {response.content[:200]!r}")
    if exceptions:
        problems.append("raised:\n" + exceptions[-1])
    return problems


def fuzz(method, path, operation, world, client, recorder, stats):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=bool(os.environ.get("CI")),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )
    @given(data=st.data())
    def run(data):
        method_sent, url, body, content_type, headers = draw_request(data, method, path, operation, world)
        sends = 2 if "Idempotency-Key" in headers else 1  # the retry gets the first answer, or a refusal
        with transaction.atomic():
            for attempt in range(sends):
                recorder.exceptions.clear()
                response = client.generic(method_sent, url, body or b"", content_type=content_type, headers=headers)
                stats.append(response.status_code)
                problems = problems_with(response, recorder.exceptions)
                what = "the retry of " if attempt else ""
                assert not problems, f"{what}{method_sent} {url[:300]} " + "; ".join(problems)
            transaction.set_rollback(True)

    run()


def explain(exc):
    if isinstance(exc, BaseExceptionGroup):  # Hypothesis found several distinct failures
        return "\n".join(explain(inner) for inner in exc.exceptions)
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


def test_no_input_makes_any_endpoint_answer_500(world, caplog):
    # Thousands of 4xx answers would each log a warning; 500s still log at ERROR.
    caplog.set_level(logging.ERROR, logger="django.request")
    operations = schema_operations(SCHEMA)
    client = Client(raise_request_exception=False)
    recorder = Recorder()
    got_request_exception.connect(recorder)
    failures, statuses = [], {}
    try:
        for method, path, operation in operations:
            stats = statuses.setdefault(f"{method} {path}", [])
            try:
                fuzz(method, path, operation, world, client, recorder, stats)
            except Exception as exc:  # report every operation's failure, not only the first
                failures.append(f"{method} {path}: {explain(exc)}")
    finally:
        got_request_exception.disconnect(recorder)

    for name, codes in statuses.items():  # shown with -s, or when a check below fails
        print(f"{name:55} {len(codes):4} requests  " + " ".join(f"{c}×{codes.count(c)}" for c in sorted(set(codes))))
    assert not failures, f"{len(failures)} operations failed:\n\n" + "\n\n".join(failures)
    # Not vacuous: every operation in the schema was fuzzed, each with its examples, and the fuzzer got past
    # authentication and validation into the endpoints.
    assert len(statuses) >= len(schema_operations(api.get_openapi_schema())) >= 20
    assert all(len(codes) >= EXAMPLES for codes in statuses.values())
    reached = [name for name, codes in statuses.items() if any(200 <= code < 300 for code in codes)]
    assert len(reached) >= 0.8 * len(statuses), {
        name: sorted(set(codes)) for name, codes in statuses.items() if name not in reached
    }
