"""Rules that live on Phase: transitions, done-criteria, outputs and the agent's instructions."""

import pytest

from board.services import task_create, ticket_create
from phases.models import Phase, Workflow

pytestmark = pytest.mark.django_db


def test_it_allows_only_listed_transitions(phase):
    testing = phase("PHASE_TESTING")
    assert testing.can_transition_to(phase("PHASE_DEPLOYMENT"))
    assert testing.can_transition_to(phase("PHASE_IMPLEMENTATION"))
    assert testing.can_transition_to("PHASE_BLOCKED")
    assert not testing.can_transition_to(phase("PHASE_DONE"))
    assert not testing.can_transition_to("PHASE_BACKLOG")
    assert not testing.can_transition_to("PHASE_NOWHERE")


def test_it_never_allows_a_phase_of_another_workflow(phase):
    other = Workflow.objects.create(slug="other", name="Other")
    stranger = Phase.objects.create(workflow=other, key="PHASE_DEPLOYMENT", name="Deployment")
    assert not phase("PHASE_TESTING").can_transition_to(stranger)


def test_it_uses_prefetched_transitions(workflow, django_assert_num_queries):
    testing = Phase.objects.with_transitions().get(workflow=workflow, key="PHASE_TESTING")
    with django_assert_num_queries(0):
        assert testing.can_transition_to("PHASE_DEPLOYMENT")


def test_done_criteria_ignore_case_and_surrounding_whitespace():
    phase = Phase(done_definitions=["Tests pass", "Docs   updated", "Reviewed by a person"])
    assert phase.is_done_criteria_met(["  tests PASS ", "docs updated", "REVIEWED BY A PERSON"]) == (True, [])


def test_done_criteria_report_what_is_missing_in_the_phase_wording():
    phase = Phase(done_definitions=["Tests pass", "Docs updated", "Reviewed by a person"])
    met, missing = phase.is_done_criteria_met(["tests pass", "something else"])
    assert not met
    assert missing == ["Docs updated", "Reviewed by a person"]
    assert phase.missing_done_criteria(None) == ["Tests pass", "Docs updated", "Reviewed by a person"]


def test_a_phase_without_criteria_is_done_at_once():
    assert Phase(done_definitions=[]).is_done_criteria_met([]) == (True, [])


def test_required_outputs_leave_optional_ones_out():
    phase = Phase(
        expected_outputs=[
            {"type": "file", "pattern": "src/*.py", "required": True},
            {"type": "report", "pattern": "bench.txt", "required": False},
            {"type": "test", "pattern": "tests/test_*.py"},
        ]
    )
    assert [output["pattern"] for output in phase.required_outputs()] == ["src/*.py", "tests/test_*.py"]


def test_agent_instructions_carry_everything_an_agent_needs(phase):
    implementation = phase("PHASE_IMPLEMENTATION")
    text = implementation.agent_instructions()
    assert text.startswith("# Phase: Implementation (PHASE_IMPLEMENTATION)\n")
    assert implementation.description.strip() in text
    assert implementation.phase_prompt.strip() in text
    for criterion in implementation.done_definitions:
        assert f"- [ ] {criterion}" in text
    for output in implementation.expected_outputs:
        assert f"`{output['pattern']}`" in text
    for number, step in enumerate(implementation.next_steps_guide, start=1):
        assert f"{number}. {step}" in text
    assert "may move to: PHASE_TESTING, PHASE_BLOCKED." in text
    assert text.index("## Instructions") < text.index("## Completion criteria") < text.index("## Expected outputs")
    assert text.index("## Expected outputs") < text.index("## What happens next")


def test_agent_instructions_leave_out_empty_sections(phase):
    text = phase("PHASE_DONE").agent_instructions()
    assert "## Completion criteria" not in text
    assert "may move to" not in text


def test_blocked_is_a_holding_phase_and_done_is_not(phase):
    assert phase("PHASE_BLOCKED").is_holding
    assert not phase("PHASE_DONE").is_holding
    assert not phase("PHASE_TESTING").is_holding


def test_configuration_is_read_through_properties(phase):
    implementation = phase("PHASE_IMPLEMENTATION")
    assert implementation.timeout_seconds == implementation.configuration["timeout_seconds"] > 0
    assert implementation.max_retries == implementation.configuration["max_retries"]
    assert implementation.retry_backoff_seconds == implementation.configuration["retry_backoff_seconds"]


@pytest.mark.parametrize(
    "configuration",
    [
        {"timeout_seconds": 1_000_000_000_000, "max_retries": 10**9, "retry_backoff_seconds": 1e300},
        {"timeout_seconds": "soon", "max_retries": True, "retry_backoff_seconds": [1]},
        {"timeout_seconds": -5, "max_retries": -1, "retry_backoff_seconds": -1},
        "not a mapping",
    ],
)
def test_settings_saved_out_of_range_before_the_checks_fall_back_to_the_defaults(board, alice, configuration):
    """A phase row written before files and the admin checked its settings must not break task creation."""
    phase = board.workflow.phases.get(key="PHASE_IMPLEMENTATION")
    Phase.objects.filter(pk=phase.pk).update(configuration=configuration)
    phase.refresh_from_db()
    assert (phase.timeout_seconds, phase.max_retries, phase.retry_backoff_seconds) == (None, None, None)
    ticket = ticket_create(board=board, title="Still works", actor=alice, phase="PHASE_IMPLEMENTATION")
    task = task_create(ticket=ticket, title="A task", actor=alice)
    task.refresh_from_db()
    assert (task.timeout_seconds, task.max_retries) == (3600, 3)
