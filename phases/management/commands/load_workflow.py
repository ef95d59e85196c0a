"""Load a workflow from a YAML file or a Hephaestus workflow folder, or keep reloading the files of a folder as they change."""

import signal
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from phases.hephaestus import read_hephaestus_folder
from phases.services import workflow_load
from phases.watch import WorkflowWatcher
from phases.workflow_files import WorkflowFileError, read_workflow_file


def parse_remap(values):
    remap = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise CommandError(f"--remap {value!r}: write it as OLD_PHASE=NEW_PHASE")
        remap[old.strip()] = new.strip()
    return remap


class Command(BaseCommand):
    help = (
        "Validate a workflow YAML file, or a Hephaestus workflow folder (one NN_name.yaml per phase), "
        "and load it into the database (all or nothing)."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", nargs="?", help="The workflow file, or the Hephaestus workflow folder, to load.")
        parser.add_argument(
            "--slug", help="Slug of the workflow (default: the file's 'slug' key or its name; a folder's name)."
        )
        parser.add_argument("--overwrite", action="store_true", help="Replace a workflow that already exists.")
        parser.add_argument(
            "--remap",
            action="append",
            default=[],
            metavar="OLD=NEW",
            help=(
                "Move what uses a phase the file removes to another phase; repeat as needed. With --watch, "
                "each reload uses the pairs whose old phase its file removes."
            ),
        )
        parser.add_argument("--dry-run", action="store_true", help="Check everything, change nothing.")
        parser.add_argument("--watch", metavar="DIR", help="Reload workflow files in DIR whenever they change.")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between checks with --watch.")

    def handle(self, *args, **options):
        remap = parse_remap(options["remap"])
        if options["watch"]:
            return self.watch(options["watch"], options["interval"], remap)
        if not options["file"]:
            raise CommandError("Give a workflow file to load, or --watch DIR.")
        path = Path(options["file"])
        notes = []
        try:
            if path.is_dir():
                folder = read_hephaestus_folder(path)
                definition, notes = folder.definition, folder.notes
            else:
                definition = read_workflow_file(path)
            result = workflow_load(
                definition=definition,
                slug=options["slug"] or definition.slug or (path.name if path.is_dir() else path.stem),
                overwrite=options["overwrite"],
                remap=remap,
                dry_run=options["dry_run"],
            )
        except WorkflowFileError as exc:
            exc.source = exc.source or str(path)
            raise CommandError(exc.describe()) from None
        self.stdout.write(self.style.SUCCESS(result.summary()))
        for note in notes:
            self.stdout.write(self.style.WARNING(f"  note: {note}"))

    def watch(self, folder, interval, remap):
        watcher = WorkflowWatcher(Path(folder), remap=remap)
        self.stopping = False

        def stop(signum, frame):
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(f"Watching {folder} for workflow changes (Ctrl-C stops).")
        while not self.stopping:
            for report in watcher.poll():
                style = self.style.SUCCESS if report.ok else self.style.ERROR
                self.stdout.write(style(report.message))
            time.sleep(interval)
