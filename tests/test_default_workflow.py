"""The software-development workflow every installation starts with, as the data migration loads it."""

import pytest

from phases.defaults import DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow

pytestmark = pytest.mark.django_db

PHASES = [
    ("PHASE_BACKLOG", "Backlog", 0, False, ["PHASE_REQUIREMENTS", "PHASE_BLOCKED"]),
    ("PHASE_REQUIREMENTS", "Requirements Analysis", 1, False, ["PHASE_DESIGN", "PHASE_BLOCKED"]),
    ("PHASE_DESIGN", "Design", 2, False, ["PHASE_IMPLEMENTATION", "PHASE_BLOCKED"]),
    ("PHASE_IMPLEMENTATION", "Implementation", 3, False, ["PHASE_TESTING", "PHASE_BLOCKED"]),
    ("PHASE_TESTING", "Testing", 4, False, ["PHASE_IMPLEMENTATION", "PHASE_DEPLOYMENT", "PHASE_BLOCKED"]),
    ("PHASE_DEPLOYMENT", "Deployment", 5, False, ["PHASE_DONE", "PHASE_BLOCKED"]),
    ("PHASE_DONE", "Done", 6, True, []),
    (
        "PHASE_BLOCKED",
        "Blocked",
        7,
        True,
        ["PHASE_BACKLOG", "PHASE_REQUIREMENTS", "PHASE_DESIGN", "PHASE_IMPLEMENTATION", "PHASE_TESTING"],
    ),
]

COLUMNS = [
    ("backlog", ["PHASE_BACKLOG"], None, False, None),
    ("analyzing", ["PHASE_REQUIREMENTS", "PHASE_DESIGN"], 5, False, None),
    ("building", ["PHASE_IMPLEMENTATION"], 10, False, "testing"),
    ("testing", ["PHASE_TESTING"], 8, False, None),
    ("deploying", ["PHASE_DEPLOYMENT"], 3, False, "done"),
    ("done", ["PHASE_DONE"], None, True, None),
    ("blocked", ["PHASE_BLOCKED"], None, False, None),
]


def test_the_migration_installs_the_default_workflow():
    # No fixture: this is the row the data migration wrote.
    assert Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).exists()


def test_it_has_exactly_the_eight_phases(workflow):
    phases = workflow.phases.with_transitions().in_order()
    found = [
        (p.key, p.name, p.sequence_order, p.is_terminal, sorted(t.key for t in p.allowed_transitions.all()))
        for p in phases
    ]
    assert found == [(key, name, order, terminal, sorted(targets)) for key, name, order, terminal, targets in PHASES]


def test_it_has_exactly_the_seven_columns(workflow):
    columns = (
        workflow.columns.order_by("sequence_order").prefetch_related("phases").select_related("auto_transition_to")
    )
    found = [
        (
            c.key,
            sorted(p.key for p in c.phases.all()),
            c.wip_limit,
            c.is_terminal,
            c.auto_transition_to.key if c.auto_transition_to else None,
        )
        for c in columns
    ]
    assert found == [(key, sorted(phases), limit, terminal, auto) for key, phases, limit, terminal, auto in COLUMNS]


def test_every_working_phase_tells_agents_what_to_do(workflow):
    for phase in workflow.phases.filter(is_terminal=False):
        assert len(phase.done_definitions) >= 3, phase.key
        assert phase.expected_outputs, phase.key
        assert all(output.get("validation_rule") for output in phase.expected_outputs), phase.key
        assert "STEP 1" in phase.phase_prompt and "STEP 3" in phase.phase_prompt, phase.key
        assert len(phase.next_steps_guide) >= 2, phase.key
        assert phase.configuration.get("timeout_seconds", 0) > 0, phase.key
