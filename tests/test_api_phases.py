"""The agent API for phases: the list, one phase, its instructions, and which done-definitions are met."""

import pytest

from board.models import Board
from board.services import agent_create, agent_revoke

from .agent_api import AgentClient, messages_of
from .workflow_samples import SMALL, load

pytestmark = pytest.mark.django_db

DEFAULT_KEYS = [
    "PHASE_BACKLOG",
    "PHASE_REQUIREMENTS",
    "PHASE_DESIGN",
    "PHASE_IMPLEMENTATION",
    "PHASE_TESTING",
    "PHASE_DEPLOYMENT",
    "PHASE_DONE",
    "PHASE_BLOCKED",
]
PHASE_FIELDS = {
    "key",
    "name",
    "workflow",
    "description",
    "sequence_order",
    "is_terminal",
    "allowed_transitions",
    "done_definitions",
    "expected_outputs",
    "phase_prompt",
    "next_steps_guide",
    "validation_criteria",
    "configuration",
}


@pytest.fixture
def small_board(charlie):
    """Charlie's board on the SMALL workflow, which Alice's agents are not on."""
    board = Board.objects.create(name="Small board", slug="small-board", workflow=load(SMALL).workflow)
    board.members.add(charlie)
    return board


@pytest.fixture
def generalist(client, board, small_board, alice):
    """An agent on two boards with two workflows, which share some phase keys."""
    _, token = agent_create(name="generalist", boards=[board, small_board], actor=alice)
    return AgentClient(client, token)


# The list


def test_the_list_has_the_phases_of_the_agents_workflows_in_order(api):
    response = api.get("/phases")
    assert response.status_code == 200
    phases = response.json()
    assert [phase["key"] for phase in phases] == DEFAULT_KEYS
    assert all(set(phase) == PHASE_FIELDS for phase in phases)
    backlog = phases[0]
    assert (backlog["name"], backlog["workflow"], backlog["is_terminal"]) == ("Backlog", "software_development", False)
    assert backlog["allowed_transitions"] == ["PHASE_REQUIREMENTS", "PHASE_BLOCKED"]
    assert len(backlog["done_definitions"]) == 5 and backlog["expected_outputs"][0]["type"] == "document"
    assert backlog["configuration"]["max_retries"] == 2


def test_the_list_leaves_out_workflows_of_other_boards(api, small_board):
    assert "small" not in {phase["workflow"] for phase in api.get("/phases").json()}


def test_the_list_of_an_agent_on_two_workflows_has_both_and_narrows_by_board(generalist):
    keys = [(phase["workflow"], phase["key"]) for phase in generalist.get("/phases").json()]
    assert keys == [("small", "PHASE_TODO"), ("small", "PHASE_DONE"), ("small", "PHASE_BLOCKED")] + [
        ("software_development", key) for key in DEFAULT_KEYS
    ]
    narrowed = generalist.get("/phases?board=small-board").json()
    assert [phase["key"] for phase in narrowed] == ["PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED"]


def test_the_list_of_another_boards_phases_is_not_found(api, small_board):
    response = api.get("/phases?board=small-board")
    assert response.status_code == 404
    assert response.json() == {"detail": "No board 'small-board' among this agent's boards."}


# One phase


def test_a_phase_is_read_by_its_key(api):
    response = api.get("/phases/PHASE_TESTING")
    assert response.status_code == 200
    data = response.json()
    assert set(data) == PHASE_FIELDS
    assert data["allowed_transitions"] == ["PHASE_IMPLEMENTATION", "PHASE_DEPLOYMENT", "PHASE_BLOCKED"]
    assert data["phase_prompt"].startswith("You are")


def test_an_unknown_phase_is_not_found(api):
    response = api.get("/phases/PHASE_NOPE")
    assert response.status_code == 404
    assert response.json() == {"detail": "No phase 'PHASE_NOPE' in the workflows of this agent's boards."}


def test_a_phase_only_in_another_boards_workflow_is_not_found(api, small_board):
    response = api.get("/phases/PHASE_TODO")
    assert response.status_code == 404
    response = api.get("/phases/PHASE_TODO?board=small-board")
    assert response.status_code == 404
    assert response.json() == {"detail": "No phase 'PHASE_TODO' on board 'small-board'."}


def test_naming_a_board_the_agent_is_not_on_finds_nothing_even_with_the_same_workflow(api, workflow, charlie):
    Board.objects.create(name="Charlie's board", slug="charlies-board", workflow=workflow)
    response = api.get("/phases/PHASE_TESTING?board=charlies-board")
    assert response.status_code == 404
    assert response.json() == {"detail": "No phase 'PHASE_TESTING' on board 'charlies-board'."}
    assert api.get("/phases/PHASE_TESTING/instructions?board=charlies-board").status_code == 404


def test_a_key_in_two_of_the_agents_workflows_needs_the_board(generalist):
    response = generalist.get("/phases/PHASE_DONE")
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Phase 'PHASE_DONE' is in several of this agent's workflows; say which with ?board=<slug>."
    }
    assert generalist.get("/phases/PHASE_DONE?board=small-board").json()["workflow"] == "small"
    assert generalist.get("/phases/PHASE_DONE?board=alices-board").json()["workflow"] == "software_development"
    assert generalist.get("/phases/PHASE_TODO").json()["workflow"] == "small"  # only in one: no board needed


# Instructions


def test_instructions_are_markdown_with_the_criteria_and_the_way_out(api, workflow):
    response = api.get("/phases/PHASE_BACKLOG/instructions")
    assert response.status_code == 200
    data = response.json()
    assert (data["phase"], data["format"]) == ("PHASE_BACKLOG", "markdown")
    text = data["instructions"]
    assert text.startswith("# Phase: Backlog (PHASE_BACKLOG)\n")
    phase = workflow.phases.get(key="PHASE_BACKLOG")
    assert all(f"- [ ] {item}" in text for item in phase.done_definitions)
    assert "From here the ticket may move to: PHASE_REQUIREMENTS, PHASE_BLOCKED." in text


def test_instructions_of_an_unknown_phase_are_not_found(api):
    response = api.get("/phases/PHASE_NOPE/instructions")
    assert response.status_code == 404
    assert "PHASE_NOPE" in response.json()["detail"]


# Validating done


def test_validate_done_lists_what_is_met_and_what_is_missing(api, workflow):
    definitions = workflow.phases.get(key="PHASE_IMPLEMENTATION").done_definitions
    response = api.post("/phases/PHASE_IMPLEMENTATION/validate-done", {"completed_criteria": definitions[:2]})
    assert response.status_code == 200
    assert response.json() == {
        "phase": "PHASE_IMPLEMENTATION",
        "done": False,
        "met": definitions[:2],
        "missing": definitions[2:],
    }


def test_validate_done_matches_case_and_spacing_as_a_person_reads_them(api, workflow):
    definitions = workflow.phases.get(key="PHASE_IMPLEMENTATION").done_definitions
    sloppy = ["  " + "  ".join(item.upper().split()) + " " for item in definitions]
    response = api.post("/phases/PHASE_IMPLEMENTATION/validate-done", {"completed_criteria": sloppy})
    assert response.json() == {"phase": "PHASE_IMPLEMENTATION", "done": True, "met": definitions, "missing": []}


def test_validate_done_with_nothing_completed_misses_everything(api, workflow):
    definitions = workflow.phases.get(key="PHASE_DESIGN").done_definitions
    data = api.post("/phases/PHASE_DESIGN/validate-done", {}).json()
    assert (data["done"], data["met"], data["missing"]) == (False, [], definitions)


def test_a_phase_without_done_definitions_is_always_done(api):
    data = api.post("/phases/PHASE_DONE/validate-done", {"completed_criteria": ["anything"]}).json()
    assert (data["done"], data["met"], data["missing"]) == (True, [], [])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"completed_criteria": "all of them"}, "Input should be a valid list"),
        ({"completed_criteria": [1, 2]}, "Input should be a valid string"),
        ({"completed_criteria": ["x"] * 101}, "List should have at most 100 items"),
    ],
)
def test_validate_done_refuses_bad_bodies(api, body, message):
    response = api.post("/phases/PHASE_DESIGN/validate-done", body)
    assert response.status_code == 422
    assert any(message in text for text in messages_of(response))


def test_validate_done_of_an_unknown_phase_is_not_found(api):
    response = api.post("/phases/PHASE_NOPE/validate-done", {"completed_criteria": []})
    assert response.status_code == 404
    assert response.json() == {"detail": "No phase 'PHASE_NOPE' in the workflows of this agent's boards."}


# Tokens


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/phases"),
        ("get", "/phases/PHASE_BACKLOG"),
        ("get", "/phases/PHASE_BACKLOG/instructions"),
        ("post", "/phases/PHASE_BACKLOG/validate-done"),
    ],
)
def test_the_phase_endpoints_need_a_valid_token(client, builder, alice, method, path):
    for token in (None, "omoi_wrong"):
        response = getattr(AgentClient(client, token), method)(path)
        assert response.status_code == 401
        assert response.json() == {"detail": "Unauthorized"}
    api = AgentClient(client, builder[1])
    assert getattr(api, method)(path).status_code == 200
    agent_revoke(agent=builder[0], actor=alice)
    assert getattr(api, method)(path).status_code == 401
