"""The order of phases and columns: the file's order, or sequence_order given to every item, never the keys' order."""

import textwrap

import pytest
from django.urls import reverse

from board.models import Board
from board.services import ticket_create
from phases.services import workflow_definition, workflow_export
from phases.workflow_files import WorkflowFileError, dump_workflow, parse_workflow

from .admin_forms import change_data, errors_of
from .workflow_samples import database_state, load

pytestmark = pytest.mark.django_db

# No sequence_order anywhere, and the first phase's key sorts last.
UNORDERED = textwrap.dedent(
    """\
    slug: unordered
    name: Unordered
    phases:
      - id: PHASE_ZETA
        name: Intake
        allowed_transitions: [PHASE_MIDDLE]
      - id: PHASE_MIDDLE
        name: Work
        allowed_transitions: [PHASE_ALPHA]
      - id: PHASE_ALPHA
        name: Finished
        is_terminal: true
    board_columns:
      - id: zeta
        name: Intake
        phase_mapping: [PHASE_ZETA]
      - id: middle
        name: Work
        phase_mapping: [PHASE_MIDDLE]
      - id: alpha
        name: Finished
        phase_mapping: [PHASE_ALPHA]
        is_terminal: true
    """
)


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


def problems_of(text):
    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text, source="order.yaml")
    return [(problem.path, problem.line, problem.message) for problem in info.value.problems]


def test_new_tickets_go_to_the_first_phase_of_the_file(alice):
    board = Board.objects.create(name="Unordered", slug="unordered", workflow=load(UNORDERED).workflow)

    ticket = ticket_create(board=board, title="First ticket", actor=alice)

    assert ticket.phase.key == "PHASE_ZETA"


def test_phases_and_columns_without_sequence_order_keep_the_files_order():
    workflow = load(UNORDERED).workflow

    assert list(workflow.phases.in_order().values_list("key", "sequence_order")) == [
        ("PHASE_ZETA", 0),
        ("PHASE_MIDDLE", 1),
        ("PHASE_ALPHA", 2),
    ]
    assert list(workflow.columns.values_list("key", "sequence_order")) == [("zeta", 0), ("middle", 1), ("alpha", 2)]


def test_the_board_shows_the_columns_in_the_files_order(alice_client, alice):
    board = Board.objects.create(name="Unordered", slug="unordered", workflow=load(UNORDERED).workflow)
    board.members.add(alice)

    response = alice_client.get(reverse("board:detail", args=[board.slug]))

    assert [view.column.key for view in response.context["columns"]] == ["zeta", "middle", "alpha"]


def test_generated_columns_follow_the_phases_file_order():
    workflow = load(UNORDERED.split("board_columns:")[0]).workflow

    assert list(workflow.columns.values_list("key", "sequence_order")) == [("zeta", 0), ("middle", 1), ("alpha", 2)]


def test_sequence_order_given_to_every_item_is_kept():
    text = UNORDERED
    for phase, order in (("PHASE_ZETA", 30), ("PHASE_MIDDLE", 10), ("PHASE_ALPHA", 20)):
        text = text.replace(f"  - id: {phase}\n", f"  - id: {phase}\n    sequence_order: {order}\n")
    for column, order in (("zeta", 7), ("middle", 5), ("alpha", 6)):
        text = text.replace(f"  - id: {column}\n", f"  - id: {column}\n    sequence_order: {order}\n")

    workflow = load(text).workflow

    assert list(workflow.phases.in_order().values_list("key", flat=True)) == [
        "PHASE_MIDDLE",
        "PHASE_ALPHA",
        "PHASE_ZETA",
    ]
    assert list(workflow.columns.values_list("key", flat=True)) == ["middle", "alpha", "zeta"]


def test_sequence_order_given_to_some_items_only_is_a_problem_at_each_item_without_it():
    text = UNORDERED.replace("  - id: PHASE_MIDDLE\n", "  - id: PHASE_MIDDLE\n    sequence_order: 1\n")
    text = text.replace("  - id: alpha\n", "  - id: alpha\n    sequence_order: 2\n")

    hint = "or to none (then the order in the file counts)"
    assert problems_of(text) == [
        (
            "phases[0].sequence_order",
            line_of(text, "PHASE_ZETA"),
            f"missing, yet phases[1] (PHASE_MIDDLE) gives one: give sequence_order to every item of phases {hint}",
        ),
        (
            "phases[2].sequence_order",
            line_of(text, "- id: PHASE_ALPHA"),
            f"missing, yet phases[1] (PHASE_MIDDLE) gives one: give sequence_order to every item of phases {hint}",
        ),
        (
            "board_columns[0].sequence_order",
            line_of(text, "- id: zeta"),
            f"missing, yet board_columns[2] (alpha) gives one: give sequence_order to every item of board_columns {hint}",
        ),
        (
            "board_columns[1].sequence_order",
            line_of(text, "- id: middle"),
            f"missing, yet board_columns[2] (alpha) gives one: give sequence_order to every item of board_columns {hint}",
        ),
    ]


def test_two_items_in_one_place_are_a_problem():
    text = UNORDERED
    for phase, order in (("PHASE_ZETA", 0), ("PHASE_MIDDLE", 1), ("PHASE_ALPHA", 1)):
        text = text.replace(f"  - id: {phase}\n", f"  - id: {phase}\n    sequence_order: {order}\n")
    for column, order in (("zeta", 4), ("middle", 5), ("alpha", 4)):
        text = text.replace(f"  - id: {column}\n", f"  - id: {column}\n    sequence_order: {order}\n")

    assert problems_of(text) == [
        (
            "phases[2].sequence_order",
            line_of(text, "- id: PHASE_ALPHA") + 1,
            "1 is also the sequence_order of phases[1] (PHASE_MIDDLE); each needs its own place",
        ),
        (
            "board_columns[2].sequence_order",
            line_of(text, "- id: alpha") + 1,
            "4 is also the sequence_order of board_columns[0] (zeta); each needs its own place",
        ),
    ]


def test_an_invalid_sequence_order_is_reported_once():
    text = UNORDERED.replace("  - id: PHASE_ZETA\n", "  - id: PHASE_ZETA\n    sequence_order: first\n")
    text = text.replace("  - id: PHASE_MIDDLE\n", "  - id: PHASE_MIDDLE\n    sequence_order: 1\n")
    text = text.replace("  - id: PHASE_ALPHA\n", "  - id: PHASE_ALPHA\n    sequence_order: 2\n")

    assert problems_of(text) == [
        ("phases[0].sequence_order", line_of(text, "sequence_order: first"), "input should be a valid integer")
    ]


def test_an_unordered_file_exports_its_order_and_reloads_the_same():
    workflow = load(UNORDERED).workflow
    exported = workflow_export(workflow=workflow)

    assert [phase.sequence_order for phase in parse_workflow(exported).phases] == [0, 1, 2]
    copy = load(exported, slug="copy").workflow
    assert workflow_definition(copy).model_dump(exclude={"slug"}) == workflow_definition(workflow).model_dump(
        exclude={"slug"}
    )


def test_a_parsed_file_always_has_its_order():
    definition = parse_workflow(UNORDERED)
    assert [phase.sequence_order for phase in definition.phases] == [0, 1, 2]
    assert parse_workflow(dump_workflow(definition)) == definition


def test_the_admin_refuses_a_phase_edit_putting_two_phases_in_one_place(alice_client):
    workflow = load(UNORDERED).workflow
    middle = workflow.phases.get(key="PHASE_MIDDLE")
    url = reverse("admin:phases_phase_change", args=[middle.pk])
    before = database_state()

    response = alice_client.post(url, change_data(alice_client.get(url), sequence_order="2"))

    assert response.status_code == 200
    assert errors_of(response) == {
        "sequence_order": ["2 is also the sequence_order of phases[1] (PHASE_ALPHA); each needs its own place"]
    }
    assert database_state() == before
