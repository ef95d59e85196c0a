"""The agent API for the calling agent: who am I, describe myself, heartbeat."""

import pytest

from board.models import Agent, Board
from board.services import agent_create, agent_revoke

from .agent_api import AgentClient, messages_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def builder(board, alice):
    """An agent on Alice's board, and its token."""
    return agent_create(name="builder", boards=[board], actor=alice, capabilities=["python"])


@pytest.fixture
def api(client, builder):
    return AgentClient(client, builder[1])


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


def test_an_agent_registers_its_capabilities_type_and_status(api, builder):
    response = api.post(
        "/agents/me", {"capabilities": ["go", " rust ", "go"], "agent_type": "reviewer", "status": "busy"}
    )
    assert response.status_code == 200
    data = response.json()
    assert (data["capabilities"], data["agent_type"], data["status"]) == (["go", "rust"], "reviewer", "busy")
    assert data["last_heartbeat"] is not None
    agent = Agent.objects.get(pk=builder[0].pk)
    assert (agent.capabilities, agent.agent_type, agent.status) == (["go", "rust"], "reviewer", "busy")


def test_registering_with_nothing_changes_only_the_heartbeat(api, builder):
    response = api.post("/agents/me", {})
    assert response.status_code == 200
    agent = Agent.objects.get(pk=builder[0].pk)
    assert (agent.capabilities, agent.agent_type, agent.status) == (["python"], "worker", "idle")
    assert agent.last_heartbeat is not None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"capabilities": ["x" * 65]}, "Each capability is a name of 1 to 64 characters"),
        ({"capabilities": ["ok", " "]}, "Each capability is a name of 1 to 64 characters"),
        ({"capabilities": [3]}, "Input should be a valid string"),
        ({"capabilities": "python"}, "Input should be a valid list"),
        ({"capabilities": [f"c{n}" for n in range(51)]}, "List should have at most 50 items"),
        ({"agent_type": ""}, "String should have at least 1 character"),
        ({"agent_type": "x" * 51}, "String should have at most 50 characters"),
        ({"agent_type": "   "}, "This field cannot be blank."),
        ({"status": "asleep"}, "Input should be 'idle', 'busy' or 'offline'"),
        ({"status": 1}, "Input should be 'idle', 'busy' or 'offline'"),
    ],
)
def test_registration_refuses_bad_descriptions(api, builder, body, message):
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
