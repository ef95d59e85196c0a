"""Register an agent on one or more boards and print its token: the only time the token is shown."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from board.models import Board
from board.services import agent_create

ACTOR = "create_agent"


class Command(BaseCommand):
    help = "Register an agent on one or more boards and print its API token (shown once, stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A unique name for the agent, e.g. builder-1.")
        parser.add_argument(
            "--board",
            dest="boards",
            action="append",
            required=True,
            metavar="SLUG",
            help="A board the agent works on; repeat for several.",
        )
        parser.add_argument("--phase", metavar="KEY", help="Only claim tasks in this phase, e.g. PHASE_TESTING.")
        parser.add_argument("--capabilities", default="", metavar="A,B", help="Comma-separated capabilities.")
        parser.add_argument("--type", dest="agent_type", default="worker", help="The agent's type (default: worker).")

    def handle(self, *args, name, boards, phase=None, capabilities="", agent_type="worker", **options):
        try:
            agent, token = agent_create(
                name=name,
                boards=self.boards(boards),
                phase=phase,
                capabilities=capabilities or None,
                agent_type=agent_type,
                actor=ACTOR,
            )
        except ValidationError as exc:
            raise CommandError(describe(exc)) from None

        where = ", ".join(board.slug for board in agent.boards.all())
        phase_text = agent.phase.key if agent.phase_id else "any phase"
        capability_text = ", ".join(agent.capabilities) or "none"
        self.stdout.write(
            f"Created agent {agent.name!r} ({agent.agent_type}) on {where}; {phase_text}; "
            f"capabilities: {capability_text}."
        )
        self.stdout.write(f"Token: {token}")
        self.stdout.write(
            self.style.WARNING(
                "This is the only time the token is shown: only its hash is stored. "
                "Copy it now; if it is lost, revoke the agent and create a new one."
            )
        )

    def boards(self, slugs):
        slugs = list(dict.fromkeys(slug.strip() for slug in slugs))
        found = {board.slug: board for board in Board.objects.filter(slug__in=slugs).select_related("workflow")}
        missing = [slug for slug in slugs if slug not in found]
        if missing:
            known = ", ".join(Board.objects.order_by("slug").values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"No board {', '.join(map(repr, missing))}. Boards: {known}.")
        return [found[slug] for slug in slugs]


def describe(error):
    """A ValidationError as lines such as `name: An agent named 'x' already exists.`."""
    if hasattr(error, "error_dict"):
        return "\n".join(
            f"{field}: {message}" for field, messages in error.message_dict.items() for message in messages
        )
    return "\n".join(error.messages)
