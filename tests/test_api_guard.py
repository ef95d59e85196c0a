"""What guards every agent API call: tokens, the body limit, JSON checks, Idempotency-Key replay, and the docs."""

import json
import re
import threading

import pytest
from django.contrib.staticfiles import finders
from django.db import connection, connections
from django.templatetags.static import static
from django.test import Client

from board.models import IdempotencyRecord, Task
from board.services import agent_create, agent_revoke, task_claim, task_create, ticket_create
from omoi_site.api import api as ninja_api

from .agent_api import API, AgentClient, messages_of, row_counts

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")


@pytest.fixture
def task(ticket, alice):
    return task_create(ticket=ticket, title="Write the code", actor=alice)


# Tokens


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer omoi_wrong",
        "Bearer not-an-omoi-token",
        "Bearer omoi_" + "x" * 500,
        "Basic YWxpY2U6cGFzc3dvcmQ=",
        "Token omoi_x",
    ],
)
def test_a_call_without_a_valid_token_is_refused_with_json(client, builder, authorization, task):
    headers = {"Authorization": authorization} if authorization is not None else {}
    before = row_counts()
    for response in (
        client.get(f"{API}/agents/me", headers=headers),
        client.post(f"{API}/tasks/next", "{}", content_type="application/json", headers=headers),
    ):
        assert response.status_code == 401
        assert response["Content-Type"] == "application/json; charset=utf-8"
        assert response.json() == {"detail": "Unauthorized"}
    assert row_counts() == before


def test_the_scheme_is_case_insensitive(client, builder):
    response = client.get(f"{API}/agents/me", headers={"Authorization": f"bearer {builder[1]}"})
    assert response.status_code == 200


def test_a_revoked_token_stops_working_between_two_calls(api, builder, alice, task):
    assert api.get("/agents/me").status_code == 200
    agent_revoke(agent=builder[0], actor=alice)
    before = row_counts()
    assert api.post("/tasks/next", {}).status_code == 401
    assert api.post("/tasks/next", {}, key="after-revoke").status_code == 401
    assert row_counts() == before
    task.refresh_from_db()
    assert task.status == "pending"


def test_a_users_session_is_no_token(alice_client, task):
    # Staff signed in to the site are not agents: the API answers only bearer tokens.
    response = alice_client.post(f"{API}/tasks/next", "{}", content_type="application/json")
    assert response.status_code == 401


# The body limit


def test_a_body_over_the_limit_is_refused_before_anything_else(api, settings, ticket):
    settings.OMOI_API_MAX_BODY_BYTES = 1024
    body = json.dumps({"ticket_id": ticket.pk, "title": "Big", "description": "x" * 1024})
    before = row_counts()
    response = api.post("/tasks", raw=body)
    assert response.status_code == 413
    assert response.json() == {"detail": f"The request body is {len(body)} bytes; the limit is 1024 bytes."}
    # Size comes first: the same body without a token is refused the same way.
    assert AgentClient(api.client, None).post("/tasks", raw=body).status_code == 413
    assert row_counts() == before


def test_a_body_at_the_limit_is_accepted(api, settings, ticket):
    settings.OMOI_API_MAX_BODY_BYTES = 1024
    body = {"ticket_id": ticket.pk, "title": "Fits", "description": ""}
    body["description"] = "x" * (1024 - len(json.dumps(body)))
    assert len(json.dumps(body)) == 1024
    assert api.post("/tasks", body).status_code == 201


def test_a_body_over_djangos_own_upload_limit_is_413_too(api, settings, ticket):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    response = api.post("/tasks", {"ticket_id": ticket.pk, "title": "Big", "description": "x" * 3000})
    assert response.status_code == 413
    assert "over the limit" in response.json()["detail"]


def test_gets_are_not_limited(api, settings):
    settings.OMOI_API_MAX_BODY_BYTES = 1024
    assert api.get("/phases?board=nowhere&note=" + "x" * 2000).status_code == 404


# Bodies that are not JSON, or not storable


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("title=x&board=y", "The request body is not valid JSON"),
        ("{'title': 'x'}", "The request body is not valid JSON"),
        ('{"title": "x",}', "The request body is not valid JSON"),
        (b"\xff\xfe{}", "The request body is not valid JSON"),  # read as UTF-16, which it is not either
        (b"\xc3\x28", "The request body is not UTF-8 text."),
        ("[" * 100_000 + "]" * 100_000, "The request body is nested too deeply."),
        ("[]", "The request body must be a JSON object."),
        ("null", "The request body must be a JSON object."),
        ('"alices-board"', "The request body must be a JSON object."),
        ("1", "The request body must be a JSON object."),
        ('{"board": "a\\u0000b", "title": "x"}', "The request body contains a NUL character"),
        ('{"board": "alices-board", "title": "x", "description": "\\u0000"}', "contains a NUL character"),
        ('{"\\u0000": 1, "board": "alices-board", "title": "x"}', "contains a NUL character"),
        ('{"board": "alices-board", "title": "x", "description": "\\ud800"}', "an unpaired surrogate"),
        ('{"board": "alices-board", "title": "x", "x": NaN}', "NaN or an infinite number"),
        ('{"board": "alices-board", "title": "x", "x": [-Infinity]}', "NaN or an infinite number"),
        ('{"board": "alices-board", "title": "x", "x": 1e400}', "NaN or an infinite number"),
        ('{"board": "alices-board", "title": "x", "x": ' + "[" * 70 + "]" * 70 + "}", "nested more than 64 levels"),
    ],
)
def test_a_body_that_is_not_storable_json_is_refused(api, raw, message):
    before = row_counts()
    response = api.post("/tickets", raw=raw)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response)), response.json()
    assert row_counts() == before


def test_an_empty_body_is_left_to_the_endpoint(api):
    # The guard passes an empty body on; the endpoint then says which body it needs.
    response = api.post("/tickets", raw="")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "payload"]


def test_a_nul_character_in_the_url_is_refused(api):
    for path in ("/phases/PHASE_%00", "/phases?board=a%00b", "/boards/x%00"):
        response = api.get(path)
        assert response.status_code == 422
        assert "NUL character" in response.json()["detail"]


def test_results_stay_storable_up_to_the_depth_limit(api, task, builder):
    task_claim(agent=builder[0])
    result = "leaf"
    for _ in range(61):  # with the body and "result" itself: 63 levels
        result = [result]
    response = api.post(f"/tasks/{task.pk}/complete", {"result": {"tree": result}})
    assert response.status_code == 200
    task.refresh_from_db()
    assert task.result == {"tree": result}


def test_a_surrogate_pair_is_text_like_any_other(api, task, builder):
    task_claim(agent=builder[0])
    response = api.post(f"/tasks/{task.pk}/complete", raw='{"result": "\\ud83d\\ude00"}')
    assert response.status_code == 200
    assert response.json()["result"] == "😀"


# Idempotency-Key


def test_a_retry_with_the_same_key_replays_the_first_answer_and_changes_nothing(api, ticket):
    body = {"ticket_id": ticket.pk, "title": "Once only"}
    first = api.post("/tasks", body, key="create-1")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    after_first = row_counts()
    assert after_first["Task"] == 1 and after_first["Event"] > 0

    again = api.post("/tasks", body, key="create-1")
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert row_counts() == after_first


def test_a_claim_retried_with_its_key_returns_the_same_task_without_claiming_another(api, ticket, alice):
    first_task = task_create(ticket=ticket, title="First", actor=alice)
    task_create(ticket=ticket, title="Second", actor=alice)
    assert api.post("/tasks/next", {}, key="claim-1").json()["id"] == first_task.pk
    before = row_counts()
    again = api.post("/tasks/next", {}, key="claim-1")
    assert (again.status_code, again.json()["id"], again["Idempotent-Replayed"]) == (200, first_task.pk, "true")
    assert row_counts() == before
    assert Task.objects.filter(status="pending").count() == 1


def test_an_empty_queue_answer_is_replayed_too(api, ticket, alice):
    assert api.post("/tasks/next", {}, key="claim-empty").status_code == 204
    task_create(ticket=ticket, title="Arrives later", actor=alice)
    again = api.post("/tasks/next", {}, key="claim-empty")
    assert (again.status_code, again.content, again["Idempotent-Replayed"]) == (204, b"", "true")
    assert Task.objects.get().status == "pending"  # the retry did not claim it
    assert api.post("/tasks/next", {}, key="claim-new").status_code == 200


def test_a_refusal_is_replayed_even_when_the_call_would_now_succeed(api, task, builder):
    refused = api.post(f"/tasks/{task.pk}/complete", {"result": 1}, key="complete-1")
    assert refused.status_code == 409
    task_claim(agent=builder[0])
    again = api.post(f"/tasks/{task.pk}/complete", {"result": 1}, key="complete-1")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (409, refused.json(), "true")
    task.refresh_from_db()
    assert task.status == "assigned"
    assert api.post(f"/tasks/{task.pk}/complete", {"result": 1}, key="complete-2").status_code == 200


def test_a_bad_body_is_replayed_as_the_same_422(api, ticket):
    first = api.post("/tasks", {"ticket_id": ticket.pk}, key="bad-1")
    assert first.status_code == 422
    again = api.post("/tasks", {"ticket_id": ticket.pk}, key="bad-1")
    assert (again.status_code, again.json(), again["Idempotent-Replayed"]) == (422, first.json(), "true")


def test_the_same_key_with_another_body_or_path_is_refused(api, ticket):
    api.post("/tasks", {"ticket_id": ticket.pk, "title": "First"}, key="reused")
    before = row_counts()
    for path, body in (
        ("/tasks", {"ticket_id": ticket.pk, "title": "Second"}),
        ("/tickets", {"board": "alices-board", "title": "First"}),
    ):
        response = api.post(path, body, key="reused")
        assert response.status_code == 422
        assert response.json() == {
            "detail": "Idempotency-Key 'reused' was first used for another request (POST /api/v1/tasks); "
            "use a new key for a new request."
        }
        assert "Idempotent-Replayed" not in response
    assert row_counts() == before


def test_agents_use_the_same_key_independently(client, board, alice, ticket):
    first = AgentClient(client, agent_create(name="first", boards=[board], actor=alice)[1])
    second = AgentClient(Client(), agent_create(name="second", boards=[board], actor=alice)[1])
    one = first.post("/tasks", {"ticket_id": ticket.pk, "title": "Mine"}, key="shared-key")
    two = second.post("/tasks", {"ticket_id": ticket.pk, "title": "Mine"}, key="shared-key")
    assert (one.status_code, two.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in two and one.json()["id"] != two.json()["id"]
    assert Task.objects.count() == 2 and IdempotencyRecord.objects.count() == 2


@pytest.mark.parametrize("key", ["", "   ", "k" * 201, "tab\there", "new\nline"])
def test_a_malformed_key_is_refused(api, ticket, key):
    before = row_counts()
    response = api.post("/tasks", {"ticket_id": ticket.pk, "title": "x"}, key=key)
    assert response.status_code == 422
    assert response.json() == {"detail": "Idempotency-Key must be 1 to 200 printable characters."}
    assert row_counts() == before


def test_a_key_without_a_valid_token_is_not_remembered(client, builder, ticket):
    response = AgentClient(client, "omoi_wrong").post("/tasks", {"ticket_id": ticket.pk, "title": "x"}, key="k")
    assert response.status_code == 401
    assert not IdempotencyRecord.objects.exists()


def test_a_key_on_a_get_is_ignored(api):
    first = api.get("/agents/me", **{"Idempotency-Key": "read"})
    assert first.status_code == 200 and "Idempotent-Replayed" not in first
    assert not IdempotencyRecord.objects.exists()


def test_a_call_that_crashed_is_not_remembered_and_may_be_retried(api, task, monkeypatch):
    def crash(**kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr("board.api.tasks.task_claim", crash)
    api.client.raise_request_exception = False
    assert api.post("/tasks/next", {}, key="crashy").status_code == 500
    assert not IdempotencyRecord.objects.exists()
    monkeypatch.undo()
    response = api.post("/tasks/next", {}, key="crashy")
    assert response.status_code == 200 and "Idempotent-Replayed" not in response
    assert response.json()["id"] == task.pk


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_simultaneous_retries_with_one_key_claim_once(board, alice):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")
    ticket = ticket_create(board=board, title="Work", actor=alice)
    for n in range(3):
        task_create(ticket=ticket, title=f"Task {n}", actor=alice)
    _, token = agent_create(name="retrier", boards=[board], actor=alice)
    answers, errors = [], []
    start = threading.Barrier(6)

    def retry():
        try:
            start.wait()
            response = AgentClient(Client(), token).post("/tasks/next", {}, key="one-claim")
            answers.append((response.status_code, response.json()["id"], response.get("Idempotent-Replayed")))
        except Exception as exc:  # reported below, in the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert {(status, pk) for status, pk, _ in answers} == {(200, answers[0][1])}
    assert sorted(replayed or "" for _, _, replayed in answers) == [""] + ["true"] * 5
    assert Task.objects.filter(status="assigned").count() == 1


# No input answers 500

ODD_VALUES = [
    None,
    True,
    -1,
    0,
    2**31,
    2**63,
    2**70,
    -(2**70),
    1.5,
    1e308,
    "",
    " ",
    "x" * 30_000,
    "PHASE_DONE",
    "alices-board",
    "\u202e\u200b",
    "' OR 1=1 --",
    "%00",
    [],
    [None],
    [2**70],
    ["x" * 100],
    {},
    {"a": [1, {"b": None}]},
]
POST_FIELDS = {
    "/agents/me": ["status", "capabilities", "agent_type"],
    "/agents/me/heartbeat": ["status"],
    "/tasks/next": ["board"],
    "/tasks": [
        "ticket_id",
        "title",
        "phase",
        "description",
        "task_type",
        "priority",
        "score",
        "dependencies",
        "required_capabilities",
        "parent_task_id",
        "max_retries",
        "timeout_seconds",
    ],
    "/tasks/{task}/start": [],
    "/tasks/{task}/complete": ["result", "artifacts", "completed_criteria"],
    "/tasks/{task}/fail": ["error", "retryable"],
    "/tickets": ["board", "title", "description", "priority", "phase"],
    "/tickets/{ticket}/transition": ["to_phase", "reason"],
    "/tickets/{ticket}/comments": ["body"],
    "/phases/PHASE_DESIGN/validate-done": ["completed_criteria"],
}
VALID = {
    "board": "alices-board",
    "title": "Fine",
    "error": "Broken",
    "to_phase": "PHASE_TESTING",
    "body": "Hello",
    "ticket_id": None,  # the ticket's id, filled in below
}


@pytest.mark.parametrize("path", list(POST_FIELDS))
def test_no_odd_value_in_any_field_answers_500(api, ticket, builder, alice, path):
    # The test client raises any exception a view lets out, so reaching the end means no 500.
    url = path.format(ticket=ticket.pk, task="{task}")
    base = {name: (ticket.pk if name == "ticket_id" else VALID[name]) for name in POST_FIELDS[path] if name in VALID}
    task_id = ""
    for name in POST_FIELDS[path] or ["unknown"]:
        for value in ODD_VALUES:
            if "{task}" in url and not Task.objects.filter(pk=task_id or 0, status="assigned").exists():
                # A task in hand, so that each call reaches the service.
                Task.objects.update(status="cancelled")
                task_id = task_create(ticket=ticket, title="Target", actor=alice).pk
                task_claim(agent=builder[0])
            response = api.post(url.format(task=task_id), {**base, name: value})
            assert response.status_code < 500, (name, value)
            assert response["Content-Type"].startswith("application/json") or response.status_code == 204


@pytest.mark.parametrize(
    "path",
    [
        "/phases/{odd}",
        "/phases/{odd}/instructions",
        "/phases?board={odd}",
        "/boards/{odd}",
        "/tasks/{odd}",
        "/tickets/{odd}",
    ],
)
def test_no_odd_value_in_a_url_answers_500(api, path):
    for odd in ("%ff%fe", "x" * 5000, "..", "%2e%2e%2f", "%E2%80%AE", "0", "-1", "99999999999999999999999999", "a b"):
        response = api.get(path.format(odd=odd))
        assert response.status_code in (200, 404, 409, 422), (path, odd)


# The schema and the docs


BOARD_PATHS = (
    "/agents/me",
    "/agents/me/heartbeat",
    "/tasks/next",
    "/tasks",
    "/tasks/{task_id}",
    "/tasks/{task_id}/start",
    "/tasks/{task_id}/complete",
    "/tasks/{task_id}/fail",
    "/tickets",
    "/tickets/{ticket_id}",
    "/tickets/{ticket_id}/transition",
    "/tickets/{ticket_id}/comments",
    "/phases",
    "/phases/{key}",
    "/phases/{key}/instructions",
    "/phases/{key}/validate-done",
    "/boards",
    "/boards/{slug}",
)


def test_the_openapi_schema_lists_every_path(client):
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Omoi agent API"
    routes = {str(pattern.pattern) for pattern in ninja_api.urls[0]} - {"", "openapi.json", "docs"}
    expected = {f"{API}/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route) for route in routes}
    assert expected <= set(schema["paths"])
    for path in BOARD_PATHS:
        assert API + path in schema["paths"], path
        for operation in schema["paths"][API + path].values():
            assert operation["security"] == [{"AgentAuth": []}], path
    assert set(schema["paths"][f"{API}/agents/me"]) == {"get", "post"}


def test_the_docs_page_works_offline(client, settings):
    settings.WHITENOISE_USE_FINDERS = True  # serve from the apps' static folders, as `runserver` would
    response = client.get(f"{API}/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "cdn" not in html.lower()
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html)
    assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", html)
    assert any(asset.endswith("swagger-ui-bundle.js") for asset in assets)
    prefix = static("")
    for asset in assets:
        assert asset.startswith(prefix), asset
        assert finders.find(asset.removeprefix(prefix)), asset
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert b"".join(served.streaming_content if served.streaming else [served.content])


def test_the_schema_and_docs_need_no_token_and_show_no_data(client, builder, board):
    # They describe the contract only: no token, board or ticket appears in them.
    text = client.get(f"{API}/openapi.json").content.decode() + client.get(f"{API}/docs").content.decode()
    assert board.slug not in text and builder[1] not in text and builder[0].token_prefix not in text


def request_schemas(schema):
    """(operation, body schema) of every operation with a JSON body, components resolved."""
    components = schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                # An optional body (start's) is "that schema or nothing".
                body = next(option for option in body.get("anyOf", [body]) if "$ref" in option)
                yield f"{method.upper()} {path}", components[body["$ref"].rsplit("/", 1)[-1]], components


def string_fields(properties, components, prefix=""):
    """(name, string schema) of every string a body may carry, items of lists included."""
    for name, field in properties.items():
        for option in field.get("anyOf", [field]):
            if "$ref" in option:
                continue
            if option.get("type") == "string" and "enum" not in option and option.get("format") != "date-time":
                yield prefix + name, option
            if option.get("type") == "array" and option.get("items", {}).get("type") == "string":
                yield f"{prefix}{name}[]", option["items"]


def test_every_operation_documents_its_errors_with_their_body(client):
    schema = client.get(f"{API}/openapi.json").json()
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if path == f"{API}/health":
                continue
            expected = {"401", "404", "422"} | ({"403", "409", "413"} if method == "post" else set())
            assert expected <= set(operation["responses"]), (method, path, sorted(operation["responses"]))
            for code in expected:
                answer = operation["responses"][code]
                assert answer["description"], (method, path, code)
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            if method == "post":
                assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"]), path


def blank_is_refused(operation, name):
    """Whether the services refuse a value of only spaces for this field (others store it, or use a default)."""
    if name in {"error", "body", "required_capabilities[]", "board", "phase", "to_phase"}:
        return True
    return (
        (name == "title" and "branch" not in operation)
        or (name == "reason" and "resolve" in operation)
        or (name == "description" and "discoveries" in operation)
        or (name == "summary" and operation.endswith("/result"))
    )


def test_the_schema_states_what_the_server_refuses_so_a_valid_request_is_not_refused(client):
    schema = client.get(f"{API}/openapi.json").json()
    checked = 0
    for operation, body, components in request_schemas(schema):
        for name, field in string_fields(body.get("properties", {}), components):
            where = (operation, name)
            pattern = field.get("pattern")
            assert pattern and re.search(pattern, "fine") and not re.search(pattern, "a\x00b"), where
            assert bool(re.search(pattern, "   ")) is not blank_is_refused(operation, name), where
            if name in {"phase", "to_phase"}:
                assert not re.search(pattern, "not a key") and field["maxLength"] == 64, where
                assert "phase" in field.get("description", "").lower(), where
            if name == "board":
                assert not re.search(pattern, "not a slug") and field["maxLength"] == 100, where
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/tasks", {"title": "   "}, "title"),
        ("/tasks", {"title": "ok", "required_capabilities": ["  "]}, "required_capabilities"),
        ("/tasks", {"title": "ok", "phase": "not a key"}, "phase"),
        ("/tickets/{ticket}/comments", {"body": " \n "}, "body"),
    ],
)
def test_what_the_schema_refuses_the_server_refuses_with_the_services_words(api, ticket, path, body, field):
    if path == "/tasks":
        body = {"ticket_id": ticket.pk, **body}
    response = api.post(path.format(ticket=ticket.pk), body)
    assert response.status_code == 422
    problem = response.json()["detail"][0]
    assert field in problem["loc"]
    assert "pattern" not in problem["msg"]  # said in words, not as a regular expression
