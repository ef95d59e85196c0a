"""The demo board's agents: the simulated ones `make run` starts, and the task kept for the README's quick-start agent."""

from django.core.exceptions import ValidationError
from django.db import transaction

from .events import SystemActor
from .models import Agent, Board, Priority, Task
from .services import agent_create, agent_token_rotate, agent_update, task_create, ticket_create

DEMO_BOARD = "demo"
SETUP = SystemActor("setup")

# The README's agent quick-start registers `builder-1` with this phase and these capabilities. The simulated
# agents get only the capabilities the workflow's default tasks ask for (none in the default workflow), so they
# leave this task to the person trying the API, whenever they follow the quick-start.
QUICKSTART_PHASE = "PHASE_IMPLEMENTATION"
QUICKSTART_CAPABILITIES = ["python", "django"]
QUICKSTART_TICKET = "Search across tickets and tasks"
QUICKSTART_TASK = "Build the search endpoint"
QUICKSTART_DESCRIPTION = (
    "Add `GET /search?q=…` to the board pages: tickets and tasks whose title or description contains the words, "
    "on the boards the person is a member of, newest first, 50 at most."
)


def workflow_capabilities(workflow):
    """Every capability the workflow's default tasks ask for, so a demo agent can take any of them."""
    names = []
    for configuration in workflow.phases.values_list("configuration", flat=True):
        for task in (configuration or {}).get("default_tasks") or []:
            for name in task.get("required_capabilities") or []:
                if name not in names:
                    names.append(name)
    return names


@transaction.atomic
def demo_agent_tokens(count):
    """(name, token) for `count` agents named demo-agent-N on the demo board; [] when there is no demo board."""
    board = Board.objects.filter(slug=DEMO_BOARD).select_related("workflow").first()
    if board is None or count <= 0:
        return []
    capabilities = workflow_capabilities(board.workflow)
    tokens = []
    for number in range(1, count + 1):
        name = f"demo-agent-{number}"
        agent = Agent.objects.filter(name=name, revoked_at__isnull=True).first()
        if agent is None:
            if Agent.objects.filter(name=name).exists():
                continue  # revoked by someone: left alone
            agent, token = agent_create(
                name=name, boards=[board], capabilities=capabilities, agent_type="simulated", actor=SETUP
            )
        else:
            agent = agent_update(agent=agent, capabilities=capabilities, actor=SETUP)
            agent, token = agent_token_rotate(agent=agent, actor=SETUP)
        tokens.append((name, token))
    return tokens


@transaction.atomic
def demo_quickstart_task(board):
    """A ready task on `board` that the quick-start's agent, and no simulated agent, can claim.

    The pending one when there is one, else a new one on the quick-start
    ticket (created in the phase when it is gone or finished). None when the
    board's workflow has no such phase.
    """
    phase = board.workflow.phases.filter(key=QUICKSTART_PHASE).first()
    if phase is None:
        return None
    waiting = (
        Task.objects.filter(
            ticket__board=board,
            phase=phase,
            status=Task.Status.PENDING,
            required_capabilities=QUICKSTART_CAPABILITIES,
        )
        .order_by("pk")
        .first()
    )
    if waiting is not None:
        return waiting
    ticket = (
        board.tickets.filter(title=QUICKSTART_TICKET, phase__is_terminal=False)
        .select_related("board__workflow", "phase")
        .order_by("pk")
        .first()
    )
    if ticket is None:
        try:
            ticket = ticket_create(
                board=board, title=QUICKSTART_TICKET, priority=Priority.HIGH, phase=phase, actor=SETUP
            )
        except ValidationError:
            return None  # the phase's column is full: the quick-start's agent finds the phase's other work
    return task_create(
        ticket=ticket,
        title=QUICKSTART_TASK,
        actor=SETUP,
        phase=phase,
        description=QUICKSTART_DESCRIPTION,
        task_type="implementation",
        required_capabilities=QUICKSTART_CAPABILITIES,
    )
