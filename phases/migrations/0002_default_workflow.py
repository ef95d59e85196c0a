"""Load the default software-development workflow from its YAML file."""

from django.db import migrations


def load_default_workflow(apps, schema_editor):
    from phases.defaults import DEFAULT_WORKFLOW_FILE, DEFAULT_WORKFLOW_SLUG
    from phases.services import apply_definition
    from phases.workflow_files import read_workflow_file

    Workflow = apps.get_model("phases", "Workflow")
    if Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).exists():
        return
    definition = read_workflow_file(DEFAULT_WORKFLOW_FILE)
    apply_definition(definition, slug=DEFAULT_WORKFLOW_SLUG, registry=apps)


def remove_default_workflow(apps, schema_editor):
    from phases.defaults import DEFAULT_WORKFLOW_SLUG

    apps.get_model("phases", "Workflow").objects.filter(slug=DEFAULT_WORKFLOW_SLUG).delete()


class Migration(migrations.Migration):
    dependencies = [("phases", "0001_initial")]

    operations = [migrations.RunPython(load_default_workflow, remove_default_workflow)]
