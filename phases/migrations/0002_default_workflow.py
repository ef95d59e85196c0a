"""Load the default software-development workflow from its YAML file."""

from pathlib import Path

from django.db import migrations

# The workflow's first version, kept as it was: a migration gives the same rows whenever it runs, and
# later migrations bring a copy nobody edited up to date.
FIRST_VERSION = Path(__file__).with_name("0002_software_development.yaml")


def load_default_workflow(apps, schema_editor):
    from phases.defaults import DEFAULT_WORKFLOW_SLUG
    from phases.services import apply_definition
    from phases.workflow_files import read_workflow_file

    Workflow = apps.get_model("phases", "Workflow")
    if Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).exists():
        return
    definition = read_workflow_file(FIRST_VERSION)
    apply_definition(definition, slug=DEFAULT_WORKFLOW_SLUG, registry=apps)


def remove_default_workflow(apps, schema_editor):
    from phases.defaults import DEFAULT_WORKFLOW_SLUG

    apps.get_model("phases", "Workflow").objects.filter(slug=DEFAULT_WORKFLOW_SLUG).delete()


class Migration(migrations.Migration):
    dependencies = [("phases", "0001_initial")]

    operations = [migrations.RunPython(load_default_workflow, remove_default_workflow)]
