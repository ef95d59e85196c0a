"""Run an agent against an Omoi server: a simulated one, or a command-line agent once per task.

    OMOI_URL=http://127.0.0.1:8000 OMOI_TOKEN=omoi_… manage.py run_agent --simulate --board demo
    manage.py run_agent --preset claude --board demo --max-tasks 1

It talks to the server over HTTP like any agent (board.runner); this command
only parses the options. SIGTERM or Ctrl-C stops it after the current task;
a second one abandons the task (it is failed, and so retried).
"""

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from board.runner.cli import UsageError, add_arguments, run
from board.runner.client import CONNECTION_ERRORS, ApiError


class Command(BaseCommand):
    help = "Claim and work tasks through the agent API: --simulate, or --command 'CMD' once per task."
    # The agent needs no database and no checks: it may run on a machine that only reaches the API.
    requires_system_checks = []

    def add_arguments(self, parser):
        add_arguments(parser)

    def handle(self, *args, **options):
        try:
            run(options, log=self.log)
        except UsageError as problem:
            raise CommandError(str(problem)) from None
        except ApiError as error:
            raise CommandError(f"The API refused: {error}") from None
        except CONNECTION_ERRORS as error:
            raise CommandError(f"The server did not answer: {error}") from None

    def log(self, message):
        self.stdout.write(f"{datetime.now():%H:%M:%S} {message}")
        self.stdout.flush()
