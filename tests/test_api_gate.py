"""GET /api/v1/tickets/{id}/gate: the phase gate as an agent sees it, on its own boards only."""

import pytest

from board.models import Task
from board.services import agent_create, ticket_create, ticket_update

from .agent_api import AgentClient, messages_of
from .gate_samples import build_artifacts, finished, gated_board

pytestmark = pytest.mark.django_db


@pytest.fixture
def gated(alice, bob):
    return gated_board(alice, bob)


@pytest.fixture
def scout_api(client, gated, alice):
    return AgentClient(client, agent_create(name="scout", boards=[gated], actor=alice)[1])


@pytest.fixture
def building(gated, alice):
    return ticket_create(board=gated, title="Build it", actor=alice, phase="PHASE_BUILD")


def test_the_gate_of_a_ticket_with_work_missing(scout_api, building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building)[:1])
    failed = finished(building, actor=alice, title="Broke", status=Task.Status.FAILED)
    response = scout_api.get(f"/tickets/{building.pk}/gate")
    assert response.status_code == 200
    gate = response.json()
    assert (gate["ticket_id"], gate["phase"], gate["terminal"], gate["passed"]) == (
        building.pk,
        "PHASE_BUILD",
        False,
        False,
    )
    assert gate["tasks"] == {"done": 1, "total": 2, "open": 0, "failed": [failed.pk]}
    assert (gate["met"], gate["missing"], gate["criteria"]) == ([], [], [])
    assert gate["target_phase"] == "PHASE_CHECK" and gate["hold"] == ""
    tests, sources, report = gate["outputs"]
    assert tests == {
        "type": "test",
        "pattern": "tests/**/test_*.py",
        "required": True,
        "validation_rule": "min_passing: 10",
        "description": "",
        "satisfied": True,
        "checked": True,
        "matches": ["tests/unit/deep/test_build.py"],
        "why": "found: tests/unit/deep/test_build.py",
    }
    assert sources["satisfied"] is False
    assert sources["why"] == f"0 of the 2 source artifacts matching src/*/{building.pk}-*.py needed"
    assert (report["satisfied"], report["checked"]) == (False, False)
    assert gate["blockers"] == [
        f"Failed after their retries: #{failed.pk}; a person must retry or cancel them.",
        f"Required outputs missing: source src/*/{building.pk}-*.py; report build report.",
    ]


def test_the_gate_of_a_ticket_whose_work_is_done(scout_api, building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    gate = scout_api.get(f"/tickets/{building.pk}/gate").json()
    assert gate["passed"] is True and gate["blockers"] == [] and gate["target_phase"] == "PHASE_CHECK"


def test_the_gate_lists_met_and_missing_done_definitions(scout_api, gated, alice):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    finished(ticket, actor=alice, criteria=["Spec reviewed"])
    gate = scout_api.get(f"/tickets/{ticket.pk}/gate").json()
    assert (gate["met"], gate["missing"]) == (["Spec reviewed"], ["Spec written"])
    assert gate["criteria"] == [{"text": "Spec written", "met": False}, {"text": "Spec reviewed", "met": True}]


def test_the_gate_says_what_holds_the_ticket(scout_api, gated, building, alice):
    ticket_create(board=gated, title="Checking", actor=alice, phase="PHASE_CHECK")
    finished(building, actor=alice, artifacts=build_artifacts(building))
    gate = scout_api.get(f"/tickets/{building.pk}/gate").json()
    assert (gate["passed"], gate["hold"]) == (False, "Waiting for room in Checking (1/1).")
    ticket_update(ticket=building, actor=alice, is_blocked=True, blocked_reason="Legal")
    assert scout_api.get(f"/tickets/{building.pk}/gate").json()["hold"] == "The ticket is marked blocked: Legal"


def test_a_terminal_phase_has_no_gate(scout_api, gated, alice):
    ticket = ticket_create(board=gated, title="Over", actor=alice, phase="PHASE_DONE")
    gate = scout_api.get(f"/tickets/{ticket.pk}/gate").json()
    assert (gate["terminal"], gate["passed"], gate["target_phase"]) == (True, False, None)
    assert gate["blockers"] == ["Done is a terminal phase: tickets stay here."]


def test_another_boards_ticket_is_not_found(api, building):
    response = api.get(f"/tickets/{building.pk}/gate")
    assert response.status_code == 404
    assert messages_of(response) == [f"No ticket {building.pk} on this agent's boards."]


def test_an_unknown_ticket_is_not_found(scout_api):
    assert scout_api.get("/tickets/999999/gate").status_code == 404


def test_the_gate_needs_a_token(client, building):
    assert AgentClient(client, None).get(f"/tickets/{building.pk}/gate").status_code == 401
