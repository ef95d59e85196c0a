"""The discoveries API: record, branch, resolve, list and the workflow graph, with every kind of refusal."""

import json

import pytest

from board.models import Event, Task
from board.services import agent_create, agent_revoke, task_create, ticket_create
from discoveries.models import Discovery
from discoveries.services import discovery_branch, discovery_record

pytestmark = pytest.mark.django_db

API = "/api/v1/discoveries"
ALL_TYPES = [choice for choice, _ in Discovery.Type.choices]
METADATA = {
    "trace": {"frames": [{"file": "login.py", "line": 12}, {"file": "über.py", "line": None}]},
    "unicode": "Ünïcødé — 日本語 — 🚀 — \u2028",
    "markup": "<script>alert('x')</script>",
    "numbers": [0, -1, 2.5, 1e-7, 2**53 + 1],
    "flags": {"true": True, "false": False, "empty": {}, "nothing": []},
}


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_TESTING")


@pytest.fixture
def source(ticket, alice):
    return task_create(ticket=ticket, title="Run the login tests", actor=alice, phase="PHASE_TESTING")


@pytest.fixture
def scout(board, alice):
    """An agent on Alice's board, with its token."""
    return agent_create(name="scout", boards=[board], actor=alice)


@pytest.fixture
def token(scout):
    return scout[1]


@pytest.fixture
def outsider(review_board, alice):
    """An agent on the review board only: nothing on Alice's board exists for it."""
    return agent_create(name="outsider", boards=[review_board], actor=alice)


@pytest.fixture
def api(client, token):
    def call(method, path, data=None, *, token=token):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "get":
            response = client.get(API + path, data or {}, headers=headers)
        else:
            body = data if isinstance(data, str | bytes) else json.dumps(data if data is not None else {})
            response = client.post(API + path, body, content_type="application/json", headers=headers)
        return response.status_code, response.json() if response.content else None

    return call


def record_body(source, **extra):
    return {"source_task_id": source.pk, "discovery_type": "bug", "description": "Empty passwords pass", **extra}


def fields_named(body):
    return {item["loc"][-1] for item in body["detail"]}


# Recording


def test_an_agent_records_a_discovery_on_a_task_it_does_not_hold(api, source, board):
    assert source.assigned_agent is None
    status, body = api("post", "/record", record_body(source, priority_boost=True))
    assert status == 201
    discovery = Discovery.objects.get()
    assert body["id"] == discovery.pk
    assert (body["source_task_id"], body["ticket_id"], body["board"]) == (source.pk, source.ticket_id, board.slug)
    assert (body["discovery_type"], body["description"]) == ("bug", "Empty passwords pass")
    assert (body["resolution_status"], body["discovered_by"], body["spawned_task_ids"]) == ("open", "agent:scout", [])
    assert body["priority_boost"] is True
    assert Event.objects.filter(type="discovery.recorded", board=board).count() == 1
    assert Task.objects.count() == 1


def test_metadata_comes_back_exactly_as_sent(api, source):
    status, body = api("post", "/record", record_body(source, metadata=METADATA))
    assert status == 201
    assert body["metadata"] == METADATA
    assert Discovery.objects.get().metadata == METADATA
    status, body = api("get", f"/{body['id']}")
    assert body["metadata"] == METADATA


def test_text_is_stored_and_returned_as_given(api, source):
    text = "  <img src=x onerror=alert(1)> & ' \"  "
    status, body = api("post", "/record", record_body(source, description=text))
    assert status == 201
    assert body["description"] == text == Discovery.objects.get().description


# Branching


def test_a_branch_spawns_one_task_in_any_phase_and_the_board_hears_of_it(api, source, board):
    before = Event.objects.filter(board=board).count()
    status, body = api(
        "post",
        "/branch",
        record_body(
            source,
            discovery_type="missing_requirement",
            description="What happens after three failed logins?",
            phase="PHASE_REQUIREMENTS",
            title="Decide the lock-out rule",
            priority_boost=True,
            required_capabilities=["analysis"],
            metadata=METADATA,
        ),
    )
    assert status == 201
    task = Task.objects.get(title="Decide the lock-out rule")
    assert body["discovery"]["spawned_task_ids"] == [task.pk]
    assert body["discovery"]["metadata"] == METADATA
    assert body["task"]["id"] == task.pk
    assert body["task"]["phase"] == "PHASE_REQUIREMENTS"
    assert body["task"]["parent_task_id"] == source.pk
    assert body["task"]["priority"] == "HIGH"  # MEDIUM raised one level
    assert body["task"]["required_capabilities"] == ["analysis"]
    assert body["task"]["status"] == "pending"
    assert Task.objects.count() == 2

    # What the board's websocket delivers: the rows of this board's event log.
    events = Event.objects.filter(board=board).order_by("id")[before:]
    assert [event.type for event in events] == ["discovery.recorded", "task.created", "discovery.branch_created"]
    assert events[2].payload["spawned_task"] == task.pk


def test_a_branch_takes_a_given_priority(api, source):
    status, body = api("post", "/branch", record_body(source, priority="LOW", priority_boost=True))
    assert (status, body["task"]["priority"]) == (201, "LOW")


def test_a_branch_into_an_unknown_phase_is_refused_and_leaves_nothing(api, source):
    status, body = api("post", "/branch", record_body(source, phase="PHASE_NOPE"))
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "phase"]
    assert "Unknown phase 'PHASE_NOPE'" in body["detail"][0]["msg"]
    assert Discovery.objects.count() == 0
    assert Task.objects.count() == 1


def test_an_agent_on_a_board_with_another_workflow_cannot_use_its_phases(api, source, review_board):
    status, body = api("post", "/branch", record_body(source, phase="PHASE_REVIEW"))
    assert status == 422
    assert "Unknown phase 'PHASE_REVIEW'" in body["detail"][0]["msg"]


# Resolving


def test_resolving_closes_a_discovery_once(api, source, scout, board):
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=scout[0])
    status, body = api("post", f"/{discovery.pk}/resolve", {"status": "resolved", "reason": "Fixed in #12"})
    assert status == 200
    assert (body["resolution_status"], body["resolution_note"], body["resolved_by"]) == (
        "resolved",
        "Fixed in #12",
        "agent:scout",
    )
    assert body["resolved_at"] is not None
    assert Event.objects.filter(type="discovery.resolved", board=board).count() == 1

    status, body = api("post", f"/{discovery.pk}/resolve", {"status": "invalid", "reason": "Changed my mind"})
    assert status == 409
    assert "already resolved" in body["detail"]
    discovery.refresh_from_db()
    assert discovery.resolution_status == "resolved"


def test_an_agent_may_not_close_another_agents_discovery(api, source, board, alice):
    finder, _ = agent_create(name="finder", boards=[board], actor=alice)
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=finder)
    status, body = api("post", f"/{discovery.pk}/resolve", {"status": "invalid", "reason": "Not a bug, trust me"})
    assert status == 403
    assert "may resolve only discoveries it recorded or whose spawned task it holds" in body["detail"]
    discovery.refresh_from_db()
    assert discovery.resolution_status == "open"
    assert not Event.objects.filter(type="discovery.resolved").exists()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"status", "reason"}),
        ({"status": "open", "reason": "x"}, {"status"}),
        ({"status": "resolved", "reason": ""}, {"reason"}),
        ({"status": "resolved", "reason": "x" * 20_001}, {"reason"}),
        ({"status": "resolved", "reason": "   "}, {"reason"}),  # refused by the service
    ],
)
def test_resolving_needs_a_closing_status_and_a_reason(api, source, scout, body, fields):
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=scout[0])
    status, answer = api("post", f"/{discovery.pk}/resolve", body)
    assert status == 422
    assert fields_named(answer) == fields
    discovery.refresh_from_db()
    assert discovery.resolution_status == "open"


# Bad input


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"source_task_id", "discovery_type", "description"}),
        ({"discovery_type": "bug", "description": "x", "source_task_id": "seven"}, {"source_task_id"}),
        ({"discovery_type": "bug", "description": "x", "source_task_id": 0}, {"source_task_id"}),
        ({"discovery_type": "bug", "description": "x", "source_task_id": 2**63}, {"source_task_id"}),
        ({"discovery_type": "bug", "description": "", "source_task_id": 1}, {"description"}),
        ({"discovery_type": "bug", "description": "x" * 20_001, "source_task_id": 1}, {"description"}),
        ({"discovery_type": "bug", "description": "x", "source_task_id": 1, "metadata": [1]}, {"metadata"}),
        ({"discovery_type": "bug", "description": "x", "source_task_id": 1, "metadata": "{}"}, {"metadata"}),
        (
            {"discovery_type": "bug", "description": "x", "source_task_id": 1, "priority_boost": "very"},
            {"priority_boost"},
        ),
    ],
)
@pytest.mark.parametrize("path", ["/record", "/branch"])
def test_a_bad_body_is_refused_naming_each_field(api, source, path, body, fields):
    status, answer = api("post", path, body)
    assert status == 422
    assert fields_named(answer) == fields
    assert Discovery.objects.count() == 0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"phase": ""}, "phase"),
        ({"phase": "P" * 65}, "phase"),
        ({"title": ""}, "title"),
        ({"title": "t" * 201}, "title"),
        ({"task_description": "d" * 20_001}, "task_description"),
        ({"priority": "URGENT"}, "priority"),
        ({"required_capabilities": ["c"] * 51}, "required_capabilities"),
        ({"required_capabilities": ["c" * 65]}, 0),  # the first item of required_capabilities
    ],
)
def test_a_bad_branch_is_refused_naming_the_field(api, source, extra, field):
    status, answer = api("post", "/branch", record_body(source, **extra))
    assert status == 422
    assert fields_named(answer) == {field}
    assert (Discovery.objects.count(), Task.objects.count()) == (0, 1)


@pytest.mark.parametrize("path", ["/record", "/branch"])
def test_an_unknown_type_is_refused_with_the_valid_ones(api, source, path):
    status, body = api("post", path, record_body(source, discovery_type="bug_found"))
    assert status == 422
    assert fields_named(body) == {"discovery_type"}
    message = body["detail"][0]["msg"]
    assert all(f"'{name}'" in message for name in ALL_TYPES)


def test_a_body_that_is_not_json_is_refused(api, source):
    status, body = api("post", "/record", "{not json")
    assert status == 422
    assert "not valid JSON" in body["detail"][0]["msg"]


def test_metadata_over_its_size_limit_is_refused(api, source, settings):
    settings.OMOI_API_MAX_BODY_BYTES = 1024 * 1024
    status, body = api("post", "/record", record_body(source, metadata={"blob": "x" * 70_000}))
    assert status == 422
    assert fields_named(body) == {"metadata"}


# Authentication and visibility


@pytest.mark.parametrize("token", [None, "omoi_wrong", "Basic abc"])
def test_without_a_valid_token_nothing_is_answered(api, source, token):
    for method, path in [("post", "/record"), ("post", "/branch"), ("get", ""), ("get", f"/graph/{source.ticket_id}")]:
        status, _ = api(method, path, record_body(source) if method == "post" else None, token=token)
        assert status == 401
    assert Discovery.objects.count() == 0


def test_a_revoked_token_stops_working(api, source, scout, alice):
    assert api("post", "/record", record_body(source))[0] == 201
    agent_revoke(agent=scout[0], actor=alice)
    assert api("post", "/record", record_body(source))[0] == 401
    assert api("get", "")[0] == 401
    assert Discovery.objects.count() == 1


def test_another_boards_objects_are_not_found(api, source, scout, outsider, board):
    discovery, _ = discovery_branch(source_task=source, discovery_type="bug", description="x", actor=scout[0])
    token = outsider[1]
    cases = [
        ("post", "/record", record_body(source), f"No task {source.pk} on this agent's boards."),
        ("post", "/branch", record_body(source), f"No task {source.pk} on this agent's boards."),
        ("post", f"/{discovery.pk}/resolve", {"status": "invalid", "reason": "x"}, f"No discovery {discovery.pk}"),
        ("get", f"/{discovery.pk}", None, f"No discovery {discovery.pk}"),
        ("get", f"/graph/{source.ticket_id}", None, f"No ticket {source.ticket_id}"),
        ("get", f"/graph/board/{board.slug}", None, f"No board '{board.slug}'"),
        ("get", "", {"ticket": source.ticket_id}, f"No ticket {source.ticket_id}"),
        ("get", "", {"board": board.slug}, f"No board '{board.slug}'"),
    ]
    for method, path, data, message in cases:
        status, body = api(method, path, data, token=token)
        assert (status, path) == (404, path)
        assert message in body["detail"]
    status, body = api("get", "", token=token)
    assert (status, body["items"]) == (200, [])
    discovery.refresh_from_db()
    assert (discovery.resolution_status, Discovery.objects.count()) == ("open", 1)


# Listing


@pytest.fixture
def several(source, scout, alice, review_board):
    agent = scout[0]
    other_ticket = ticket_create(board=source.ticket.board, title="Audit", actor=alice)
    other_task = task_create(ticket=other_ticket, title="Audit", actor=alice)
    made = {
        "bug": discovery_record(source_task=source, discovery_type="bug", description="a", actor=agent),
        "debt": discovery_record(source_task=source, discovery_type="technical_debt", description="b", actor=agent),
        "other": discovery_record(source_task=other_task, discovery_type="bug", description="c", actor=agent),
    }
    Discovery.objects.filter(pk=made["debt"].pk).update(resolution_status="invalid")
    elsewhere = task_create(ticket=review_board.tickets.first(), title="Elsewhere", actor=alice)
    discovery_record(source_task=elsewhere, discovery_type="bug", description="hidden", actor=alice)
    return made


def ids(body):
    return [item["id"] for item in body["items"]]


def test_the_list_shows_the_agents_boards_oldest_first(api, several):
    status, body = api("get", "")
    assert status == 200
    assert ids(body) == [several[name].pk for name in ("bug", "debt", "other")]
    assert body["next_after"] is None


def test_the_list_filters_by_type_status_ticket_and_board(api, several, source, board):
    assert ids(api("get", "", {"type": "bug"})[1]) == [several["bug"].pk, several["other"].pk]
    assert ids(api("get", "", {"status": "invalid"})[1]) == [several["debt"].pk]
    assert ids(api("get", "", {"ticket": source.ticket_id})[1]) == [several["bug"].pk, several["debt"].pk]
    assert ids(api("get", "", {"ticket": source.ticket_id, "type": "bug", "status": "open"})[1]) == [several["bug"].pk]
    assert len(api("get", "", {"board": board.slug})[1]["items"]) == 3


def test_the_list_is_paged_with_a_bounded_size(api, several):
    status, first = api("get", "", {"limit": 2})
    assert (status, ids(first)) == (200, [several["bug"].pk, several["debt"].pk])
    assert first["next_after"] == several["debt"].pk
    status, second = api("get", "", {"limit": 2, "after": first["next_after"]})
    assert (ids(second), second["next_after"]) == ([several["other"].pk], None)
    for bad in ({"limit": 201}, {"limit": 0}, {"after": -1}, {"type": "bug_found"}, {"status": "closed"}):
        status, body = api("get", "", bad)
        assert status == 422, bad
        assert fields_named(body) == set(bad)


# The workflow graph


def test_the_ticket_graph_has_tasks_and_branches(api, source, scout, alice):
    discovery, fix = discovery_branch(
        source_task=source, discovery_type="bug", description="Crash", actor=scout[0], phase="PHASE_IMPLEMENTATION"
    )
    status, body = api("get", f"/graph/{source.ticket_id}")
    assert status == 200
    assert [node["id"] for node in body["nodes"]] == [source.pk, fix.pk]
    assert body["nodes"][1]["phase"] == "PHASE_IMPLEMENTATION"
    assert body["edges"] == [
        {
            "id": f"discovery-{discovery.pk}-{fix.pk}",
            "kind": "discovery",
            "source": source.pk,
            "target": fix.pk,
            "discovery_id": discovery.pk,
            "discovery_type": "bug",
            "description": "Crash",
            "resolution_status": "open",
        }
    ]


def test_the_board_graph_spans_every_ticket(api, source, board, alice):
    other = task_create(ticket=ticket_create(board=board, title="Audit", actor=alice), title="Log", actor=alice)
    waiting = task_create(ticket=source.ticket, title="After", actor=alice, dependencies=[other])
    status, body = api("get", f"/graph/board/{board.slug}")
    assert status == 200
    assert {node["id"] for node in body["nodes"]} == {source.pk, other.pk, waiting.pk}
    assert [(edge["kind"], edge["source"], edge["target"]) for edge in body["edges"]] == [
        ("dependency", other.pk, waiting.pk)
    ]


def test_an_unknown_ticket_or_board_graph_is_not_found(api):
    assert api("get", "/graph/999999")[0] == 404
    assert api("get", "/graph/board/nowhere")[0] == 404
    assert api("get", "/999999")[0] == 404
