"""board.runner.client: errors with the API's message, idempotent retries, keep-alive; then for real against Daphne.

The pure parts talk to a tiny local HTTP server that answers what each test
scripts; the last tests talk to the project served by Daphne on the test
database, with a real agent token.
"""

import http.server
import json
import socket
import threading

import pytest

from board.models import Task
from board.runner import client as client_module
from board.runner.client import ApiError, Omoi
from board.services import agent_revoke, task_create, ticket_create

from .browser import running_server


class FakeApi:
    """An HTTP/1.1 server on a free local port answering from a script: a list of (status, JSON or bytes)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests = []
        self.connections = set()
        self.close_after_each = False
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.answer()

            def do_POST(self):
                self.answer()

            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.connections.add(self.client_address)
                fake.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, content = fake.answers.pop(0) if len(fake.answers) > 1 else fake.answers[0]
                data = content if isinstance(content, bytes) else json.dumps(content).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                # Close without saying so, as a server that drops idle connections does.
                self.close_connection = fake.close_after_each

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def bodies(self):
        return [json.loads(request["body"]) if request["body"] else None for request in self.requests]


@pytest.fixture
def sleeps(monkeypatch):
    """The back-off waits, recorded instead of slept."""
    waited = []
    monkeypatch.setattr(client_module.time, "sleep", waited.append)
    return waited


def omoi_for(fake, **options):
    return Omoi(fake.url, "omoi_test", **options)


def test_an_error_answer_becomes_an_api_error_with_the_apis_message(sleeps):
    answer = (409, {"detail": "Task 5 is held by nobody, not by builder."})
    with FakeApi([answer]) as fake, pytest.raises(ApiError) as refused:
        omoi_for(fake).complete(5)

    assert refused.value.status == 409
    assert refused.value.detail == "Task 5 is held by nobody, not by builder."
    assert str(refused.value) == "409: Task 5 is held by nobody, not by builder."
    assert len(fake.requests) == 1  # a refusal is an answer: asking again would not change it
    assert sleeps == []


def test_a_422_names_each_problem_with_its_place():
    problems = [
        {"loc": ["body", "payload", "error"], "msg": "Field required", "type": "missing"},
        {"loc": ["body", "retryable"], "msg": "Input should be a valid boolean", "type": "bool_parsing"},
    ]
    with FakeApi([(422, {"detail": problems})]) as fake, pytest.raises(ApiError) as refused:
        omoi_for(fake).fail(5, "")

    assert refused.value.detail == problems
    assert str(refused.value) == (
        "422: body.payload.error: Field required; body.retryable: Input should be a valid boolean"
    )


def test_an_error_page_that_is_not_json_is_kept_as_text():
    with FakeApi([(404, b"<h1>Not Found</h1>")]) as fake, pytest.raises(ApiError) as refused:
        omoi_for(fake).me()

    assert refused.value.status == 404
    assert refused.value.detail == "<h1>Not Found</h1>"


def test_a_write_is_retried_after_a_5xx_with_the_same_idempotency_key(sleeps):
    claimed = {"id": 7, "title": "Write the spec"}
    with FakeApi([(503, {"detail": "busy"}), (502, b"bad gateway"), (200, claimed)]) as fake:
        task = omoi_for(fake).claim("demo")

    assert task == claimed
    keys = [request["headers"]["Idempotency-Key"] for request in fake.requests]
    assert len(keys) == 3 and len(set(keys)) == 1 and keys[0]
    assert fake.bodies() == [{"board": "demo"}] * 3
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1]  # backing off


def test_every_write_gets_a_key_of_its_own():
    with FakeApi([(200, {})]) as fake:
        omoi = omoi_for(fake)
        omoi.heartbeat()
        omoi.start(3)
        omoi.me()

    first, second, read = (request["headers"] for request in fake.requests)
    assert first["Idempotency-Key"] != second["Idempotency-Key"]
    assert "Idempotency-Key" not in read
    assert first["Authorization"] == "Bearer omoi_test"


def test_429_is_retried_too(sleeps):
    with FakeApi([(429, {"detail": "slow down"}), (200, {"name": "builder"})]) as fake:
        assert omoi_for(fake).me() == {"name": "builder"}
    assert len(fake.requests) == 2


def test_retries_are_bounded(sleeps):
    with FakeApi([(503, {"detail": "The database is restarting."})]) as fake, pytest.raises(ApiError) as refused:
        omoi_for(fake, retries=3).task(1)

    assert refused.value.status == 503
    assert refused.value.detail == "The database is restarting."
    assert len(fake.requests) == 3
    assert len(sleeps) == 2


def test_a_server_that_does_not_answer_is_retried_then_the_error_raised(sleeps):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens here once the socket is closed

    with pytest.raises(ConnectionRefusedError):
        Omoi(f"http://127.0.0.1:{port}", "omoi_test", retries=3).claim()
    assert len(sleeps) == 2


def test_no_content_is_none():
    with FakeApi([(204, b"")]) as fake:
        assert omoi_for(fake).claim() is None


def test_requests_share_one_connection():
    with FakeApi([(200, {})]) as fake:
        omoi = omoi_for(fake)
        for _ in range(5):
            omoi.heartbeat()
        omoi.me()

    assert len(fake.requests) == 6
    assert len(fake.connections) == 1


def test_a_connection_the_server_dropped_is_replaced_at_once(sleeps):
    with FakeApi([(200, {"ok": True})]) as fake:
        fake.close_after_each = True
        omoi = omoi_for(fake)
        answers = [omoi.heartbeat() for _ in range(3)]

    assert answers == [{"ok": True}] * 3
    assert len(fake.requests) == 3
    assert len(fake.connections) == 3
    assert sleeps == []  # a stale connection is not an outage: no back-off


def test_the_attempt_is_sent_only_when_the_task_has_one():
    with FakeApi([(200, {})]) as fake:
        omoi = omoi_for(fake)
        omoi.start(4, attempt=2)
        omoi.start(4)
        omoi.complete(4, result={"summary": "Done."}, completed_criteria=["A"], attempt=2)
        omoi.complete(4, result={"summary": "Done."})
        omoi.fail(4, "Broke.", attempt=3)
        omoi.fail(4, "Broke.", retryable=False)

    assert fake.bodies() == [
        {"attempt": 2},
        {},
        {"result": {"summary": "Done."}, "artifacts": [], "completed_criteria": ["A"], "attempt": 2},
        {"result": {"summary": "Done."}, "artifacts": [], "completed_criteria": []},
        {"error": "Broke.", "retryable": True, "attempt": 3},
        {"error": "Broke.", "retryable": False},
    ]
    assert {request["path"] for request in fake.requests} == {
        "/api/v1/tasks/4/start",
        "/api/v1/tasks/4/complete",
        "/api/v1/tasks/4/fail",
    }


def test_phases_are_asked_for_on_a_board():
    with FakeApi([(200, {"phase": "PHASE_DESIGN", "instructions": "# Phase: Design\n"})]) as fake:
        omoi = omoi_for(fake)
        omoi.phase("PHASE_DESIGN", board="demo")
        text = omoi.instructions("PHASE_DESIGN", board="demo")
        omoi.phase("PHASE_DESIGN")

    assert text == "# Phase: Design\n"
    assert [request["path"] for request in fake.requests] == [
        "/api/v1/phases/PHASE_DESIGN?board=demo",
        "/api/v1/phases/PHASE_DESIGN/instructions?board=demo",
        "/api/v1/phases/PHASE_DESIGN",
    ]


def test_discoveries_are_recorded_and_branched_with_the_apis_field_names():
    with FakeApi([(201, {})]) as fake:
        omoi = omoi_for(fake)
        omoi.record(4, discovery_type="bug", description="It crashes.", metadata={"file": "a.py"})
        omoi.branch(4, discovery_type="optimization", description="Cache it.", phase="PHASE_DESIGN", priority="HIGH")

    assert fake.bodies() == [
        {
            "source_task_id": 4,
            "discovery_type": "bug",
            "description": "It crashes.",
            "priority_boost": False,
            "metadata": {"file": "a.py"},
        },
        {
            "source_task_id": 4,
            "discovery_type": "optimization",
            "description": "Cache it.",
            "phase": "PHASE_DESIGN",
            "priority": "HIGH",
        },
    ]
    assert [request["path"] for request in fake.requests] == [
        "/api/v1/discoveries/record",
        "/api/v1/discoveries/branch",
    ]


# Against the real server


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_setup, django_db_blocker):
    with running_server(tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running


@pytest.fixture
def task(board, alice):
    ticket = ticket_create(board=board, title="Password reset", actor=alice, phase="PHASE_IMPLEMENTATION")
    return task_create(ticket=ticket, title="Send the reset e-mail", actor=alice)


@pytest.mark.django_db(transaction=True)
def test_an_agent_claims_starts_and_completes_a_task_over_http(server, builder, task):
    agent, token = builder
    omoi = Omoi(server.url, token)

    assert omoi.me()["name"] == "builder"
    claimed = omoi.claim("alices-board")
    assert claimed["id"] == task.pk
    again = omoi.claim("alices-board")  # one task at a time: the claim answers the task held
    assert (again["id"], again["attempt"]) == (task.pk, claimed["attempt"])
    omoi.start(task.pk, attempt=claimed["attempt"])
    phase = omoi.phase(claimed["phase"], board=claimed["board"])
    done = omoi.complete(
        task.pk,
        result={"summary": "Sent."},
        artifacts=[{"type": "file", "path": "src/reset.py"}],
        completed_criteria=phase["done_definitions"][:1],
        attempt=claimed.get("attempt"),
    )

    assert done["status"] == "completed"
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert task.assigned_agent == agent
    assert task.result == {"summary": "Sent."}
    assert task.completed_criteria == phase["done_definitions"][:1]
    assert "## Completion criteria" in omoi.instructions("PHASE_IMPLEMENTATION", board="alices-board")


@pytest.mark.django_db(transaction=True)
def test_the_servers_refusals_keep_their_message(server, builder, task, alice):
    agent, token = builder
    omoi = Omoi(server.url, token)

    with pytest.raises(ApiError) as missing:
        omoi.task(999_999)
    assert (missing.value.status, missing.value.detail) == (404, "No task 999999 on this agent's boards.")

    with pytest.raises(ApiError) as not_held:
        omoi.complete(task.pk)
    assert not_held.value.status == 409
    assert f"Task {task.pk} is held by nobody" in not_held.value.detail

    with pytest.raises(ApiError) as invalid:
        omoi.fail(task.pk, "   ")
    assert invalid.value.status == 422

    agent_revoke(agent=agent, actor=alice)
    with pytest.raises(ApiError) as revoked:
        omoi.me()
    assert revoked.value.status == 401
