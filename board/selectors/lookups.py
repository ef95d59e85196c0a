"""Agent-scoped lookups: an object is found only on the agent's own boards, else the domain NotFound.

The agent API, the agent runner's server side and any other interface an agent
talks to share these, so "another board's objects do not exist" is one rule.
A lookup names one row, so it drops the models' default ordering (a task's
would join its ticket and board only to sort one row).
"""

from phases.models import Phase

from ..errors import NotFound, Refused
from ..models import Board, Task, Ticket


def agent_board(agent, slug):
    board = Board.objects.filter(agents=agent, slug=slug).select_related("workflow").order_by("pk").first()
    if board is None:
        raise NotFound(f"No board {slug!r} among this agent's boards.")
    return board


def agent_ticket(agent, ticket_id):
    ticket = (
        Ticket.objects.filter(board__agents=agent, pk=ticket_id)
        .select_related("board__workflow", "phase")
        .order_by("pk")
        .first()
    )
    if ticket is None:
        raise NotFound(f"No ticket {ticket_id} on this agent's boards.")
    return ticket


def agent_task(agent, task_id, *, for_update=False):
    """The task, with its ticket's board and workflow, its phase, its holder and its dependencies' ids.

    `for_update` locks its row (in a transaction).
    """
    tasks = (
        Task.objects.filter(ticket__board__agents=agent, pk=task_id)
        .select_related("ticket__board__workflow", "phase", "assigned_agent")
        .with_dependency_ids()
    )
    if for_update:
        tasks = tasks.select_for_update(of=("self",))
    task = tasks.order_by("pk").first()
    if task is None:
        raise NotFound(f"No task {task_id} on this agent's boards.")
    return task


def agent_tasks(agent, ids, *, field):
    """Tasks by id on the agent's boards, in the order given (repeats dropped); `field` names them in the refusal."""
    ids = list(dict.fromkeys(ids))
    found = {
        task.pk: task for task in Task.objects.filter(ticket__board__agents=agent, pk__in=ids).select_related("ticket")
    }
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise NotFound(f"{field}: no task {', '.join(map(str, missing))} on this agent's boards.")
    return [found[pk] for pk in ids]


def agent_phase(agent, key, board_slug=None):
    """A phase by key among the workflows of the agent's boards; `board` decides when several have it."""
    phases = Phase.objects.filter(key=key, workflow__boards__agents=agent).distinct().with_transitions()
    if board_slug:
        phases = phases.filter(workflow__boards__in=Board.objects.filter(agents=agent, slug=board_slug))
    found = list(phases[:2])
    if not found:
        where = f" on board {board_slug!r}" if board_slug else " in the workflows of this agent's boards"
        raise NotFound(f"No phase {key!r}{where}.")
    if len(found) > 1:
        raise Refused(f"Phase {key!r} is in several of this agent's workflows; say which with ?board=<slug>.")
    return found[0]
