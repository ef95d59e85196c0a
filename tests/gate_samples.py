"""A workflow for phase gate, phase entry and result tests, and helpers to give tickets finished work."""

import textwrap
from datetime import UTC, datetime

from board.models import Board, Task
from board.services import task_create

from .workflow_samples import load

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

# SPEC asks for criteria, one output and has default tasks; BUILD checks outputs by glob, count and passing
# tests and its column jumps to CHECKING (past REVIEW); CHECK asks for nothing and its column takes one ticket.
# BLOCKED is placed right after SPEC, so "next by sequence" must skip a holding phase.
GATED = textwrap.dedent(
    """\
    slug: gated
    name: Gated
    phases:
      - id: PHASE_SPEC
        name: Spec
        sequence_order: 0
        allowed_transitions: [PHASE_BLOCKED, PHASE_BUILD]
        done_definitions: [Spec written, Spec reviewed]
        expected_outputs:
          - type: document
            pattern: docs/spec/<ticket-id>.md
            required: true
          - type: note
            pattern: notes/*.md
            required: false
        phase_prompt: Write down what to build.
        configuration:
          default_tasks:
            - title: Write the spec
              task_type: spec
              required_capabilities: [writing]
              description: Write docs/spec/<ticket-id>.md.
            - title: Review the spec
              task_type: review
              required_capabilities: []
      - id: PHASE_BLOCKED
        name: Blocked
        sequence_order: 1
        is_terminal: true
        allowed_transitions: [PHASE_SPEC, PHASE_BUILD]
        configuration: {holding: true}
      - id: PHASE_BUILD
        name: Build
        sequence_order: 2
        allowed_transitions: [PHASE_REVIEW, PHASE_CHECK, PHASE_SPEC, PHASE_BLOCKED]
        expected_outputs:
          - type: test
            pattern: "tests/**/test_*.py"
            required: true
            validation_rule: "min_passing: 10"
          - type: source
            pattern: "src/*/<ticket-id>-*.py"
            required: true
            validation_rule: "min_count: 2"
          - type: report
            pattern: build report
            required: true
            validation_rule: Someone reads it through.
      - id: PHASE_REVIEW
        name: Review
        sequence_order: 3
        allowed_transitions: [PHASE_CHECK, PHASE_BUILD]
      - id: PHASE_CHECK
        name: Check
        sequence_order: 4
        allowed_transitions: [PHASE_DONE, PHASE_BUILD]
      - id: PHASE_DONE
        name: Done
        sequence_order: 5
        is_terminal: true
    board_columns:
      - id: spec
        name: Spec
        phase_mapping: [PHASE_SPEC]
      - id: blocked
        name: Blocked
        phase_mapping: [PHASE_BLOCKED]
      - id: build
        name: Build
        phase_mapping: [PHASE_BUILD]
        auto_transition_to: checking
      - id: review
        name: Review
        phase_mapping: [PHASE_REVIEW]
      - id: checking
        name: Checking
        phase_mapping: [PHASE_CHECK]
        wip_limit: 1
        wip_policy: block
      - id: done
        name: Done
        phase_mapping: [PHASE_DONE]
        is_terminal: true
    """
)

# Everything BUILD asks for, for ticket `ticket_id`.
BUILD_ARTIFACTS = [
    {"type": "test", "path": "tests/unit/deep/test_build.py", "passed": 12, "failed": 0},
    {"type": "source", "path": "src/app/{id}-one.py"},
    {"type": "source", "path": "src/app/{id}-two.py"},
    {"type": "report", "path": "build report"},
]


def gated_board(*members, slug="gated-board"):
    board = Board.objects.create(name="Gated board", slug=slug, workflow=load(GATED).workflow)
    board.members.add(*members)
    return board


def build_artifacts(ticket):
    return [{**artifact, "path": artifact["path"].format(id=ticket.pk)} for artifact in BUILD_ARTIFACTS]


def finished(ticket, *, actor, phase=None, title="Work", criteria=(), artifacts=(), status=Task.Status.COMPLETED):
    """A task of `ticket` (in its current phase by default) that ended with `status`, as its agent reported it."""
    task = task_create(ticket=ticket, title=title, actor=actor, phase=phase)
    Task.objects.filter(pk=task.pk).update(
        status=status, completed_criteria=list(criteria), artifacts=list(artifacts), finished_at=datetime.now(UTC)
    )
    task.refresh_from_db()
    return task
