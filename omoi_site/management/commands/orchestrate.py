"""`manage.py orchestrate`: keep work moving — assign, time out, retry, release silent agents, advance gates, rescue."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from omoi_site.orchestrator import STEPS, Orchestrator


class Command(BaseCommand):
    help = (
        "Run the orchestrator until SIGTERM or Ctrl-C: assign ready tasks, time out and retry tasks, release "
        "silent agents' tasks, create phases' default tasks, advance tickets whose gate passes, apply accepted "
        "results and rescue stuck tickets. Several may run at once on PostgreSQL."
    )

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run every step once, then exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds to wait when no step has more work (default OMOI_ORCHESTRATOR_INTERVAL_SECONDS).",
        )
        parser.add_argument(
            "--batch",
            type=int,
            default=None,
            help="Most rows a step handles at once (default OMOI_ORCHESTRATOR_BATCH).",
        )
        parser.add_argument(
            "--step",
            action="append",
            choices=[step.name for step in STEPS],
            help="Run only this step (repeatable).",
        )

    def handle(self, *args, once=False, interval=None, batch=None, step=None, **options):
        interval = settings.OMOI_ORCHESTRATOR_INTERVAL_SECONDS if interval is None else interval
        if interval <= 0:
            raise CommandError("--interval must be a positive number of seconds.")
        if batch is not None and batch < 1:
            raise CommandError("--batch must be at least 1.")
        steps = tuple(s for s in STEPS if not step or s.name in step)
        orchestrator = Orchestrator(steps, interval=interval, batch=batch)
        if not once:
            names = ", ".join(s.name for s in steps)
            self.stdout.write(f"Orchestrating ({names}) every {interval:g} s when idle; Ctrl-C stops.")
        rounds = orchestrator.run(once=once)
        if not once:
            self.stdout.write(f"Stopped after {rounds} rounds.")
