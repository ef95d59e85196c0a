"""Bridge an agent CLI's stdio MCP connection to the site's /mcp endpoint (see board.runner.mcp_stdio).

    OMOI_URL=http://127.0.0.1:8000 OMOI_TOKEN=omoi_… manage.py mcp_stdio

Standard output carries the protocol only: nothing else may be written there.
"""

import os

from django.core.management.base import BaseCommand, CommandError

from board.runner.mcp_stdio import MISSING, serve


class Command(BaseCommand):
    help = "Read MCP messages on standard input, answer them from $OMOI_URL/mcp as the holder of $OMOI_TOKEN."
    # Like run_agent, it needs no database: it may run on a machine that only reaches the server.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--url", default=os.environ.get("OMOI_URL"), help="The Omoi server (default: $OMOI_URL).")
        parser.add_argument("--token", default=os.environ.get("OMOI_TOKEN"), help="The agent's token ($OMOI_TOKEN).")

    def handle(self, *args, url, token, **options):
        if not url or not token:
            raise CommandError(MISSING)
        serve(url, token)
