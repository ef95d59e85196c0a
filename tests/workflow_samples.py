"""Small workflows for tests, and helpers to load them and compare the database before and after."""

import textwrap

from board.models import PhaseHistory, Ticket
from phases.models import BoardColumn, Phase, Workflow
from phases.services import workflow_load
from phases.workflow_files import parse_workflow

SMALL = textwrap.dedent(
    """\
    slug: small
    name: Small
    description: Two steps and a parking place.
    phases:
      - id: PHASE_TODO
        name: To do
        description: Work waiting to start.
        sequence_order: 0
        allowed_transitions: [PHASE_DONE, PHASE_BLOCKED]
        done_definitions: [Scope agreed, Owner named]
        expected_outputs:
          - type: document
            pattern: scope.md
            required: true
            validation_rule: Lists what is in and out of scope.
          - type: note
            pattern: notes.md
            required: false
        phase_prompt: |
          STEP 1: Agree the scope.
          STEP 2: Write it down.
        next_steps_guide: [Work starts, Someone reviews]
        configuration:
          timeout_seconds: 60
          max_retries: 2
          retry_backoff_seconds: 1.5
          team: triage
      - id: PHASE_DONE
        name: Done
        sequence_order: 1
        is_terminal: true
      - id: PHASE_BLOCKED
        name: Blocked
        sequence_order: 2
        is_terminal: true
        allowed_transitions: [PHASE_TODO]
        configuration: {holding: true}
    board_columns:
      - id: todo
        name: To do
        description: Not started yet.
        sequence_order: 0
        phase_mapping: [PHASE_TODO]
        wip_limit: 3
        wip_policy: block
        auto_transition_to: done
        color_theme: blue
      - id: done
        name: Done
        sequence_order: 1
        phase_mapping: [PHASE_DONE]
        is_terminal: true
        color_theme: green
      - id: blocked
        name: Blocked
        sequence_order: 2
        phase_mapping: [PHASE_BLOCKED]
        color_theme: red
    """
)

# SMALL plus a review step; loading SMALL over it removes PHASE_REVIEW and its column.
WITH_REVIEW = textwrap.dedent(
    """\
    slug: small
    name: Small with review
    phases:
      - id: PHASE_TODO
        name: To do
        sequence_order: 0
        allowed_transitions: [PHASE_REVIEW, PHASE_BLOCKED]
        done_definitions: [Scope agreed]
      - id: PHASE_REVIEW
        name: Review
        sequence_order: 1
        allowed_transitions: [PHASE_DONE, PHASE_TODO, PHASE_BLOCKED]
      - id: PHASE_DONE
        name: Done
        sequence_order: 2
        is_terminal: true
      - id: PHASE_BLOCKED
        name: Blocked
        sequence_order: 3
        is_terminal: true
        allowed_transitions: [PHASE_TODO, PHASE_REVIEW]
    board_columns:
      - id: todo
        name: To do
        sequence_order: 0
        phase_mapping: [PHASE_TODO]
      - id: review
        name: Review
        sequence_order: 1
        phase_mapping: [PHASE_REVIEW]
        wip_limit: 2
        auto_transition_to: done
      - id: done
        name: Done
        sequence_order: 2
        phase_mapping: [PHASE_DONE]
        is_terminal: true
      - id: blocked
        name: Blocked
        sequence_order: 3
        phase_mapping: [PHASE_BLOCKED]
    """
)


def load(text, **options):
    return workflow_load(definition=parse_workflow(text), **options)


def database_state():
    """Every row a workflow load may touch, to compare before and after."""
    phase_fields = [f.name for f in Phase._meta.concrete_fields]
    column_fields = [f.attname for f in BoardColumn._meta.concrete_fields]
    return {
        "workflows": list(Workflow.objects.order_by("pk").values_list("pk", "slug", "name", "description", "version")),
        "phases": list(Phase.objects.order_by("pk").values(*phase_fields)),
        "transitions": sorted(Phase.allowed_transitions.through.objects.values_list("from_phase_id", "to_phase_id")),
        "columns": list(BoardColumn.objects.order_by("pk").values(*column_fields)),
        "column_phases": sorted(BoardColumn.phases.through.objects.values_list("boardcolumn_id", "phase_id")),
        "tickets": list(Ticket.objects.order_by("pk").values_list("pk", "phase_id", "position", "version")),
        "history": list(
            PhaseHistory.objects.order_by("pk").values_list("pk", "from_phase_id", "to_phase_id", "from_key", "to_key")
        ),
    }


def transitions_of(workflow):
    return {
        phase.key: {target.key for target in phase.allowed_transitions.all()}
        for phase in workflow.phases.with_transitions()
    }
