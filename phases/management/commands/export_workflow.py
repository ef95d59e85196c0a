"""Write a stored workflow as YAML, in the format load_workflow reads."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from phases.models import Workflow
from phases.services import workflow_export


class Command(BaseCommand):
    help = "Export a workflow as YAML to standard output or a file."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("-o", "--output", help="File to write (default: standard output).")

    def handle(self, *args, slug, output, **options):
        try:
            workflow = Workflow.objects.get(slug=slug)
        except Workflow.DoesNotExist:
            known = ", ".join(Workflow.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"No workflow {slug!r}; known workflows: {known}") from None
        text = workflow_export(workflow=workflow)
        if output:
            try:
                Path(output).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise CommandError(f"Cannot write {output}: {exc.strerror}") from None
            self.stderr.write(f"Wrote workflow {slug!r} to {output}.")
        else:
            self.stdout.write(text, ending="")
