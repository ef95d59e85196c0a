"""Column categories (waiting, working, done): defaults, files, export, the admin, and the default workflow's."""

import textwrap

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from phases.models import BoardColumn
from phases.services import workflow_export
from phases.workflow_files import WorkflowFileError, parse_workflow

from .admin_forms import change_data
from .workflow_samples import SMALL, database_state, load

pytestmark = pytest.mark.django_db

PHASES_ONLY = textwrap.dedent(
    """\
    slug: phases-only
    name: Phases only
    phases:
      - id: PHASE_IDEA
        name: Idea
        allowed_transitions: [PHASE_MAKE]
      - id: PHASE_MAKE
        name: Make
        allowed_transitions: [PHASE_SHIP]
      - id: PHASE_SHIP
        name: Ship
        is_terminal: true
    """
)


def categories(workflow):
    return dict(workflow.columns.values_list("key", "category"))


def with_category(text, column, value):
    """`text` with `category: value` added to the column `column` (its `id:` line)."""
    marker = f"  - id: {column}\n"
    assert marker in text
    return text.replace(marker, f"{marker}    category: {value}\n", 1)


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


def test_columns_without_a_category_get_one_by_rule():
    # SMALL names none: the first column waits, the terminal one is done, the others are working.
    assert categories(load(SMALL).workflow) == {"todo": "waiting", "done": "done", "blocked": "working"}


def test_columns_made_from_the_phases_get_one_by_rule_too():
    assert categories(load(PHASES_ONLY).workflow) == {"idea": "waiting", "make": "working", "ship": "done"}


def test_first_means_first_in_sequence_order_not_in_the_file():
    text = SMALL.replace(
        "sequence_order: 0\n    phase_mapping: [PHASE_TODO]", "sequence_order: 5\n    phase_mapping: [PHASE_TODO]"
    )
    text = text.replace(
        "sequence_order: 2\n    phase_mapping: [PHASE_BLOCKED]", "sequence_order: 0\n    phase_mapping: [PHASE_BLOCKED]"
    )

    assert categories(load(text).workflow) == {"todo": "working", "done": "done", "blocked": "waiting"}


def test_a_terminal_first_column_is_done():
    text = PHASES_ONLY.replace("name: Idea\n", "name: Idea\n    is_terminal: true\n").replace(
        "allowed_transitions: [PHASE_MAKE]", "allowed_transitions: []"
    )
    parsed = parse_workflow(text)
    assert [column.category for column in parsed.columns()] == ["done", "working", "done"]


def test_a_category_in_the_file_is_stored_and_exported():
    text = with_category(with_category(SMALL, "blocked", "waiting"), "todo", "working")
    workflow = load(text).workflow
    assert categories(workflow) == {"todo": "working", "done": "done", "blocked": "waiting"}

    exported = workflow_export(workflow=workflow)
    assert "  category: waiting\n" in exported
    # Every column says its category, defaults included, so the file reads the same in any version.
    assert exported.count("  category: ") == 3
    reloaded = parse_workflow(exported)
    assert {column.id: column.category for column in reloaded.board_columns} == categories(workflow)


def test_an_export_reloads_to_the_same_categories():
    workflow = load(SMALL).workflow
    BoardColumn.objects.filter(workflow=workflow, key="done").update(category="working")
    before = database_state()

    load(workflow_export(workflow=workflow), overwrite=True)

    after = database_state()
    # The reload bumps the version; the columns, their categories included, are as they were.
    assert after["columns"] == before["columns"]


@pytest.mark.parametrize("value", ["sideways", "Done", "'working '", "3", "[]", "null"])
def test_a_bad_category_is_refused_at_its_place(value):
    text = with_category(SMALL, "done", value)
    if value == "null":
        # Left empty: the rule decides, as when the key is missing.
        assert [column.category for column in parse_workflow(text).board_columns] == ["waiting", "done", "working"]
        return

    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text, source="small.yaml")

    [problem] = info.value.problems
    assert problem.path == "board_columns[1].category"
    assert problem.line == line_of(text, f"category: {value}")
    assert problem.message.startswith("input should be 'waiting', 'working' or 'done'")
    assert f"small.yaml:{problem.line}: board_columns[1].category: input should be" in str(info.value)


def test_the_default_workflow_says_what_each_column_is(workflow):
    assert categories(workflow) == {
        "backlog": "waiting",
        "analyzing": "working",
        "building": "working",
        "testing": "working",
        "deploying": "working",
        "done": "done",
        "blocked": "waiting",
    }


# The admin


def column_form(response, key):
    columns = response.context["inline_admin_formsets"][1].formset
    index = next(index for index, form in enumerate(columns.forms) if form.instance.key == key)
    return index, columns.forms[index]


def test_the_admin_shows_and_saves_a_columns_category(alice_client):
    workflow = load(SMALL).workflow
    url = reverse("admin:phases_workflow_change", args=[workflow.pk])
    response = alice_client.get(url)
    index, form = column_form(response, "blocked")
    assert form["category"].value() == "working"
    assert b'name="columns-0-category"' in response.content

    response = alice_client.post(url, change_data(response, **{f"columns-{index}-category": "waiting"}))

    assert response.status_code == 302, response.context and response.context["inline_admin_formsets"][1].formset.errors
    assert categories(workflow)["blocked"] == "waiting"


def test_the_admin_refuses_an_unknown_category_on_its_row(alice_client):
    workflow = load(SMALL).workflow
    url = reverse("admin:phases_workflow_change", args=[workflow.pk])
    response = alice_client.get(url)
    index, _ = column_form(response, "done")
    before = database_state()

    response = alice_client.post(url, change_data(response, **{f"columns-{index}-category": "<b>sideways</b>"}))

    assert response.status_code == 200
    _, form = column_form(response, "done")
    assert form.errors["category"] == ["Select a valid choice. <b>sideways</b> is not one of the available choices."]
    assert b"<b>sideways</b>" not in response.content
    assert database_state() == before


# The migration that brought categories


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_existing_columns_a_category_by_key_and_terminal_flag(workflow):
    small = load(SMALL).workflow
    executor = MigrationExecutor(connection)
    executor.migrate([("phases", "0005_default_workflow_tasks_and_outputs")])
    try:
        executor = MigrationExecutor(connection)
        executor.migrate([("phases", "0006_boardcolumn_category")])
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    # Blocked waits by its key, though the file's rule would make it working.
    assert categories(small) == {"todo": "waiting", "done": "done", "blocked": "waiting"}
    assert categories(workflow) == {
        "backlog": "waiting",
        "analyzing": "working",
        "building": "working",
        "testing": "working",
        "deploying": "working",
        "done": "done",
        "blocked": "waiting",
    }
