"""Bring the default workflow up to its current file (default tasks, outputs agents can produce), if nobody edited it.

A copy an admin changed in any way is left as it is: nothing that was saved
is overwritten. "Unchanged" means equal, field by field, to what migration
0002 wrote from the workflow's first version; that is measured by loading the
first version again under a scratch slug and rolling it back, so both sides
are written by the same code.
"""

from pathlib import Path

from django.db import migrations, transaction

FIRST_VERSION = Path(__file__).with_name("0002_software_development.yaml")
SCRATCH_SLUG = "omoi-migration-0005-scratch"


class _Rollback(Exception):
    pass


def _values(row, skip):
    return {field.attname: getattr(row, field.attname) for field in row._meta.concrete_fields if field.name not in skip}


def _content(apps, workflow):
    """Everything a workflow says, by key; not its ids, slug, version or timestamps."""
    Phase = apps.get_model("phases", "Phase")
    BoardColumn = apps.get_model("phases", "BoardColumn")
    phases = {
        phase.key: {
            **_values(phase, {"id", "workflow"}),
            "allowed_transitions": sorted(target.key for target in phase.allowed_transitions.all()),
        }
        for phase in Phase.objects.filter(workflow=workflow)
    }
    columns = {
        column.key: {
            **_values(column, {"id", "workflow", "auto_transition_to"}),
            "phases": sorted(phase.key for phase in column.phases.all()),
            "auto_transition_to": column.auto_transition_to.key if column.auto_transition_to_id else None,
        }
        for column in BoardColumn.objects.filter(workflow=workflow)
    }
    return _values(workflow, {"id", "slug", "version", "created_at", "updated_at"}), phases, columns


def upgrade_default_workflow(apps, schema_editor):
    from phases.defaults import DEFAULT_WORKFLOW_FILE, DEFAULT_WORKFLOW_SLUG
    from phases.services import apply_definition
    from phases.workflow_files import WorkflowFileError, read_workflow_file

    Workflow = apps.get_model("phases", "Workflow")
    workflow = Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).first()
    if workflow is None or Workflow.objects.filter(slug=SCRATCH_SLUG).exists():
        return  # deleted on purpose (bootstrap installs the current file), or no room to compare
    try:
        with transaction.atomic():
            scratch = apply_definition(read_workflow_file(FIRST_VERSION), slug=SCRATCH_SLUG, registry=apps)
            original = _content(apps, scratch.workflow)
            raise _Rollback
    except _Rollback:
        pass
    if _content(apps, workflow) != original:
        return
    try:
        with transaction.atomic():
            apply_definition(
                read_workflow_file(DEFAULT_WORKFLOW_FILE), slug=DEFAULT_WORKFLOW_SLUG, overwrite=True, registry=apps
            )
    except WorkflowFileError:
        # A later file that removes a phase tickets still use needs a remap: someone decides, with load_workflow.
        pass


class Migration(migrations.Migration):
    dependencies = [("phases", "0004_workflow_result_settings")]

    operations = [migrations.RunPython(upgrade_default_workflow, migrations.RunPython.noop)]
