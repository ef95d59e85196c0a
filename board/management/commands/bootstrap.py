"""Prepare a fresh installation: the default workflow, an admin account and a demo board.

Safe to run again: it only adds what is missing and never resets a password.
"""

import os
import secrets
from collections import deque

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from board.demo import QUICKSTART_CAPABILITIES, QUICKSTART_PHASE, demo_quickstart_task
from board.models import Board, Priority
from board.services import ticket_create, ticket_transition
from phases.defaults import DEFAULT_WORKFLOW_FILE, DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow
from phases.services import workflow_load
from phases.workflow_files import WorkflowFileError, read_workflow_file

ACTOR = "setup"
DEMO_TICKETS = [
    ("Collect feedback from the beta teams", Priority.LOW, "PHASE_BACKLOG"),
    ("Export the board as CSV", Priority.MEDIUM, "PHASE_BACKLOG"),
    ("Single sign-on with the company directory", Priority.HIGH, "PHASE_REQUIREMENTS"),
    ("Rate-limit the public API", Priority.MEDIUM, "PHASE_DESIGN"),
    ("Search across tickets and tasks", Priority.HIGH, "PHASE_IMPLEMENTATION"),
    ("Nightly database backups", Priority.CRITICAL, "PHASE_IMPLEMENTATION"),
    ("Dark mode for the board", Priority.LOW, "PHASE_TESTING"),
    ("Upgrade to the new TLS certificates", Priority.HIGH, "PHASE_DEPLOYMENT"),
    ("Onboarding checklist for new agents", Priority.MEDIUM, "PHASE_DONE"),
    ("Payments webhook integration", Priority.HIGH, "PHASE_BLOCKED"),
]


def path_to(start, goal):
    """Phases to pass through, by allowed transitions, from `start` to the phase keyed `goal`.

    Never by way of a holding phase such as Blocked: a demo ticket's history reads as work moving forward.
    """
    queue = deque([(start, [])])
    seen = {start.pk}
    while queue:
        phase, path = queue.popleft()
        if phase.key == goal:
            return path
        if path and phase.is_holding:
            continue
        for target in phase.allowed_transitions.all():
            if target.pk not in seen:
                seen.add(target.pk)
                queue.append((target, [*path, target]))
    return None


class Command(BaseCommand):
    help = "Load the default workflow, create the admin account and the demo board if they are missing."

    def add_arguments(self, parser):
        parser.add_argument("--no-demo", action="store_true", help="Do not create the demo board.")

    def handle(self, *args, no_demo=False, **options):
        workflow = self.ensure_workflow()
        admin = self.ensure_admin()
        if not no_demo:
            self.ensure_demo_board(workflow, admin)

    def ensure_workflow(self):
        workflow = Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).first()
        if workflow:
            self.stdout.write(f"Workflow {workflow.slug!r} is installed (version {workflow.version}).")
            return workflow
        try:
            result = workflow_load(definition=read_workflow_file(DEFAULT_WORKFLOW_FILE), slug=DEFAULT_WORKFLOW_SLUG)
        except WorkflowFileError as exc:
            raise CommandError(exc.describe()) from None
        self.stdout.write(result.summary())
        return result.workflow

    def ensure_admin(self):
        User = get_user_model()
        username = os.environ.get("OMOI_ADMIN_USERNAME", "admin")
        user = User.objects.filter(username=username).first()
        if user:
            self.stdout.write(f"Admin account {username!r} exists; its password is unchanged.")
            return user
        given = os.environ.get("OMOI_ADMIN_PASSWORD")
        password = given or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email=f"{username}@localhost", password=password)
        if given:
            self.stdout.write(f"Created admin account {username!r} with the password from OMOI_ADMIN_PASSWORD.")
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"Created admin account {username!r} with password: {password}\n"
                    "This is the only time it is shown; change it in the admin."
                )
            )
        return user

    @transaction.atomic
    def ensure_demo_board(self, workflow, admin):
        board, created = Board.objects.get_or_create(slug="demo", defaults={"name": "Demo board", "workflow": workflow})
        board.members.add(admin)
        if not created:
            self.stdout.write(f"Demo board {board.slug!r} exists.")
            self.ensure_quickstart_task(board)
            return board
        for title, priority, goal in DEMO_TICKETS:
            ticket = ticket_create(board=board, title=title, priority=priority, actor=ACTOR)
            path = path_to(ticket.phase, goal)
            if path is None:
                continue  # the default workflow was edited and no longer reaches this phase
            for phase in path:
                ticket = ticket_transition(ticket=ticket, to_phase=phase, actor=ACTOR)
        self.stdout.write(f"Created demo board {board.slug!r} with {len(DEMO_TICKETS)} tickets.")
        self.ensure_quickstart_task(board)
        return board

    def ensure_quickstart_task(self, board):
        task = demo_quickstart_task(board)
        if task is not None:
            self.stdout.write(
                f"Task {task.pk} of ticket {task.ticket_id} waits for an agent in {QUICKSTART_PHASE} "
                f"with the capabilities {','.join(QUICKSTART_CAPABILITIES)} (the README's quick-start)."
            )
