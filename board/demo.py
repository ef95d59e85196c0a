"""The demo's simulated agents: registered on the demo board once, given a new token each time `make run` starts."""

from django.db import transaction

from .events import SystemActor
from .models import Agent, Board
from .services import agent_create, agent_token_rotate, agent_update

DEMO_BOARD = "demo"
SETUP = SystemActor("setup")


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
