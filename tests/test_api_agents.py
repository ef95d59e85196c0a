"""The agent API for the calling agent: who am I, report a status, heartbeat; never grant itself anything."""

import pytest

from board.models import Agent, Board, Task
from board.services import agent_create, agent_revoke, task_create, ticket_create

from .agent_api import AgentClient, messages_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def builder(board, alice):
    """An agent on Alice's board, and its token."""
    return agent_create(name="builder", boards=[board], actor=alice, capabilities=["python"])


def test_me_describes_the_calling_agent(api, builder):
    agent = builder[0]
    response = api.get("/agents/me")
    assert response.status_code == 200
    assert response.json() == {
        "id": agent.pk,
        "name": "builder",
        "agent_type": "worker",
        "status": "idle",
        "phase": None,
        "capabilities": ["python"],
        "boards": ["alices-board"],
        "last_heartbeat": None,
    }


def test_me_names_the_phase_and_every_board_of_a_specialist(client, board, workflow, alice, phase):
    second = Board.objects.create(name="Second board", slug="second", workflow=workflow)
    _, token = agent_create(name="tester", boards=[board, second], actor=alice, phase=phase("PHASE_TESTING"))
    data = AgentClient(client, token).get("/agents/me").json()
    assert data["phase"] == "PHASE_TESTING"
    assert sorted(data["boards"]) == ["alices-board", "second"]


def test_an_agent_reports_its_status(api, builder):
    response = api.post("/agents/me", {"status": "busy"})
    assert response.status_code == 200
    data = response.json()
    assert (data["capabilities"], data["agent_type"], data["status"]) == (["python"], "worker", "busy")
    assert data["last_heartbeat"] is not None
    agent = Agent.objects.get(pk=builder[0].pk)
    assert (agent.capabilities, agent.agent_type, agent.status) == (["python"], "worker", "busy")


def test_reporting_nothing_changes_only_the_heartbeat(api, builder):
    response = api.post("/agents/me", {})
    assert response.status_code == 200
    agent = Agent.objects.get(pk=builder[0].pk)
    assert (agent.capabilities, agent.agent_type, agent.status) == (["python"], "worker", "idle")
    assert agent.last_heartbeat is not None


@pytest.mark.parametrize("path", ["/agents/me", "/agents/me/heartbeat"])
@pytest.mark.parametrize(
    "body",
    [
        {"capabilities": ["python", "deploy"]},
        {"agent_type": "admin"},
        {"phase": None},
        {"boards": ["other"]},
        {"status": "busy", "capabilities": ["deploy"]},
    ],
)
def test_an_agent_cannot_set_what_staff_trust_it_with(api, builder, path, body):
    response = api.post(path, body)
    assert response.status_code == 422
    assert any("set by staff" in text for text in messages_of(response)), response.json()
    agent = Agent.objects.get(pk=builder[0].pk)
    assert (agent.capabilities, agent.agent_type, agent.status, agent.last_heartbeat) == (
        ["python"],
        "worker",
        "idle",
        None,
    )


def test_a_task_gated_on_a_capability_stays_out_of_reach_after_the_agent_asks_for_it(api, builder, board, alice):
    ticket = ticket_create(board=board, title="Ship it", actor=alice)
    task_create(ticket=ticket, title="Deploy", actor=alice, required_capabilities=["deploy"])
    api.post("/agents/me", {"capabilities": ["python", "deploy"]})
    assert api.post("/tasks/next", {"board": board.slug}).status_code == 204
    assert Task.objects.get().status == "pending"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "asleep"}, "Input should be 'idle', 'busy' or 'offline'"),
        ({"status": 1}, "Input should be 'idle', 'busy' or 'offline'"),
        ({"mood": "happy"}, "Extra inputs are not permitted"),
    ],
)
def test_a_report_refuses_bad_input(api, builder, body, message):
    response = api.post("/agents/me", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response)), response.json()
    agent = Agent.objects.get(pk=builder[0].pk)
    assert (agent.capabilities, agent.agent_type, agent.status) == (["python"], "worker", "idle")


def test_a_heartbeat_records_the_time_and_the_status(api, builder):
    response = api.post("/agents/me/heartbeat", {"status": "offline"})
    assert response.status_code == 200
    assert response.json()["status"] == "offline"
    agent = Agent.objects.get(pk=builder[0].pk)
    assert agent.status == "offline" and agent.last_heartbeat is not None


def test_a_heartbeat_without_a_status_keeps_the_status(api, builder):
    assert api.post("/agents/me/heartbeat", {}).json()["status"] == "idle"
    assert Agent.objects.get(pk=builder[0].pk).last_heartbeat is not None


@pytest.mark.parametrize("body", [{"status": "asleep"}, {"status": ["idle"]}, {"status": 7}])
def test_a_heartbeat_refuses_an_unknown_status(api, builder, body):
    response = api.post("/agents/me/heartbeat", body)
    assert response.status_code == 422
    agent = Agent.objects.get(pk=builder[0].pk)
    assert agent.status == "idle" and agent.last_heartbeat is None


@pytest.mark.parametrize(
    ("method", "path"), [("get", "/agents/me"), ("post", "/agents/me"), ("post", "/agents/me/heartbeat")]
)
@pytest.mark.parametrize("token", [None, "omoi_wrong", "not-a-token"])
def test_the_agent_endpoints_need_a_valid_token(client, builder, method, path, token):
    response = getattr(AgentClient(client, token), method)(path)
    assert response.status_code == 401
    assert response.json() == {"detail": "Unauthorized"}
    assert Agent.objects.get(pk=builder[0].pk).last_heartbeat is None


def test_a_revoked_agent_is_refused_at_once(api, builder, alice):
    assert api.get("/agents/me").status_code == 200
    agent_revoke(agent=builder[0], actor=alice)
    assert api.get("/agents/me").status_code == 401
    assert api.post("/agents/me/heartbeat", {"status": "idle"}).status_code == 401
    agent = Agent.objects.get(pk=builder[0].pk)
    assert agent.status == "offline"  # revocation set it; the refused heartbeat did not undo it
