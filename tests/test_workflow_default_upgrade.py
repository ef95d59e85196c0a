"""The default workflow: what agents get in its working phases, and how an installed copy is brought up to date."""

from pathlib import Path

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor

from phases.defaults import DEFAULT_WORKFLOW_FILE, DEFAULT_WORKFLOW_SLUG
from phases.models import BoardColumn, Phase, Workflow
from phases.services import apply_definition, workflow_export
from phases.workflow_files import parse_workflow, read_workflow_file

FIRST_VERSION = Path(__file__).resolve().parent.parent / "phases" / "migrations" / "0002_software_development.yaml"

DEFAULT_TASKS = {
    "PHASE_REQUIREMENTS": "Write the requirements",
    "PHASE_DESIGN": "Write the design",
    "PHASE_IMPLEMENTATION": "Implement",
    "PHASE_TESTING": "Write and run the tests",
    "PHASE_DEPLOYMENT": "Deploy",
}


def comparable(definition):
    data = definition.model_dump()
    for phase in data["phases"]:
        phase["allowed_transitions"] = sorted(phase["allowed_transitions"])
    return data


def installed():
    return Workflow.objects.get(slug=DEFAULT_WORKFLOW_SLUG)


# What the file gives agents


@pytest.mark.django_db
def test_a_fresh_database_has_the_current_file():
    # No fixture: this is the row the migrations wrote.
    exported = parse_workflow(workflow_export(workflow=installed()))
    assert comparable(exported) == comparable(read_workflow_file(DEFAULT_WORKFLOW_FILE))


@pytest.mark.django_db
def test_each_working_phase_starts_with_one_task(workflow):
    found = {
        phase.key: [task["title"] for task in phase.configuration.get("default_tasks", [])]
        for phase in workflow.phases.all()
    }
    assert found == {key: [DEFAULT_TASKS[key]] if key in DEFAULT_TASKS else [] for key in found}


@pytest.mark.django_db
def test_every_required_output_of_a_working_phase_is_a_path_an_agent_can_produce(workflow):
    for phase in workflow.phases.filter(key__in=DEFAULT_TASKS):
        required = [output for output in phase.expected_outputs if output["required"]]
        assert required, phase.key
        for output in required:
            assert "/" in output["pattern"] and " " not in output["pattern"], (phase.key, output)
            assert output.get("min_count", 0) >= 1 or output.get("min_passing", 0) >= 1, (phase.key, output)


@pytest.mark.django_db
def test_documents_are_named_after_the_ticket_and_code_comes_with_passing_tests(workflow):
    def required(key):
        return {
            output["pattern"]: (output.get("min_count"), output.get("min_passing"))
            for output in workflow.phases.get(key=key).expected_outputs
            if output["required"]
        }

    assert required("PHASE_REQUIREMENTS") == {"docs/requirements/<ticket-id>.md": (1, None)}
    assert required("PHASE_DESIGN") == {"docs/design/<ticket-id>.md": (1, None)}
    assert required("PHASE_IMPLEMENTATION") == {"src/**/*.py": (1, None), "tests/**/test_*.py": (1, 1)}
    assert required("PHASE_TESTING") == {"docs/test-reports/<ticket-id>.md": (1, None), "tests/**/test_*.py": (None, 1)}
    assert required("PHASE_DEPLOYMENT") == {"docs/releases/<ticket-id>.md": (1, None)}


def test_the_first_version_is_kept_as_it_was_installed():
    # Migration 0002 installs this copy and 0005 recognises an unedited workflow by it: it must never change.
    definition = read_workflow_file(FIRST_VERSION)
    assert all(not phase.configuration.default_tasks for phase in definition.phases)
    assert [output.pattern for output in definition.phases[1].expected_outputs] == [
        "docs/requirements/*.md",
        "requirements summary comment",
    ]


# The upgrade migration


def migrate(*targets):
    """Migrate to `targets`; return the models as they were there (today's may have columns not made yet)."""
    executor = MigrationExecutor(connection)
    return executor.migrate(list(targets)).apps


def migrate_to_latest():
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.fixture
def old_models(transactional_db):
    """The models before the upgrade, as 0004 left them; written through these, not today's."""
    yield migrate(("phases", "0004_workflow_result_settings"))
    migrate_to_latest()


@pytest.fixture
def before_upgrade(old_models):
    """The database as 0002 left it: the default workflow's first version, version 1."""
    old_models.get_model("phases", "Workflow").objects.filter(slug=DEFAULT_WORKFLOW_SLUG).delete()
    with transaction.atomic():
        apply_definition(read_workflow_file(FIRST_VERSION), slug=DEFAULT_WORKFLOW_SLUG, registry=old_models)
    return installed()


def stored():
    """Every row of every workflow, as stored; read column by column, so it works before the fields later
    migrations add (a column's category, a phase's validation criteria)."""
    column_fields = [field.attname for field in BoardColumn._meta.concrete_fields if field.name != "category"]
    phase_fields = [field.attname for field in Phase._meta.concrete_fields if field.name != "validation_criteria"]
    return (
        list(Workflow.objects.order_by("pk").values()),
        list(Phase.objects.order_by("pk").values(*phase_fields)),
        list(BoardColumn.objects.order_by("pk").values(*column_fields)),
        list(Phase.allowed_transitions.through.objects.order_by("pk").values()),
        list(BoardColumn.phases.through.objects.order_by("pk").values()),
    )


UPGRADE = ("phases", "0005_default_workflow_tasks_and_outputs")


def test_an_unedited_copy_is_brought_up_to_the_current_file(before_upgrade):
    ids = dict(before_upgrade.phases.values_list("key", "pk"))

    migrate(UPGRADE)
    migrate_to_latest()  # then 0006 gives the columns the categories the file gives them

    workflow = installed()
    assert workflow.version == 2
    exported = parse_workflow(workflow_export(workflow=workflow))
    assert comparable(exported) == comparable(read_workflow_file(DEFAULT_WORKFLOW_FILE))
    # Updated in place: tickets and tasks keep their phases.
    assert dict(workflow.phases.values_list("key", "pk")) == ids


@pytest.mark.parametrize(
    "edit",
    [
        lambda workflow: Phase.objects.filter(workflow=workflow, key="PHASE_DESIGN").update(name="Architecture"),
        lambda workflow: workflow.columns.filter(key="testing").update(wip_limit=4),
        lambda workflow: (
            workflow.phases.only("pk")
            .get(key="PHASE_DONE")
            .allowed_transitions.add(workflow.phases.only("pk").get(key="PHASE_BACKLOG"))
        ),
        lambda workflow: Workflow.objects.filter(pk=workflow.pk).update(has_result=True),
    ],
    ids=["phase name", "WIP limit", "transition", "result setting"],
)
def test_an_edited_copy_is_left_as_it_is(before_upgrade, edit):
    edit(before_upgrade)
    before = stored()

    migrate(UPGRADE)

    assert stored() == before
    assert installed().version == 1


def test_a_deleted_copy_stays_deleted(before_upgrade, old_models):
    old_models.get_model("phases", "Workflow").objects.filter(pk=before_upgrade.pk).delete()

    migrate(UPGRADE)

    assert not Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).exists()


def test_the_comparison_leaves_nothing_behind(before_upgrade):
    migrate(UPGRADE)

    assert list(Workflow.objects.values_list("slug", flat=True)) == [DEFAULT_WORKFLOW_SLUG]
