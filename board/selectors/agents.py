"""The agents of a board for its agents page: what each holds and how its work went, in a fixed number of queries."""

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, Q
from django.db.models.fields.json import KT

from ..events import EventType
from ..models import Agent, Event, Task


@dataclass
class AgentRow:
    """One agent as the agents page shows it: the agent, its task in hand on the board, its record there."""

    agent: Agent
    # The task it holds on this board (assigned or running), if any: what it holds elsewhere is not this board's.
    current_task: Task | None = None
    done: int = 0
    failed: int = 0
    # How long since its last heartbeat, when that is longer than the heartbeat interval; None while on time.
    silent_for: object = None
    # Whether the silence is past the limit after which the orchestrator takes the agent offline.
    past_limit: bool = False

    @property
    def state(self):
        """The agent's status in one word for the page: revoked wins over whatever status it was left with."""
        return "revoked" if self.agent.is_revoked else self.agent.status

    @property
    def state_label(self):
        return "Revoked" if self.agent.is_revoked else self.agent.get_status_display()


def board_agents(board, *, now, silence_limit):
    """Every agent on `board`, revoked ones included, by name, each as an `AgentRow`.

    Three queries whatever the number of agents and tasks: the agents with
    their phase, the tasks they hold on this board, and their completions
    and failures on this board counted from the event log. The log is
    counted, not the tasks: a failed task loses its agent (the retry may go
    to another), while the `task.failed` event keeps who held it.
    """
    agents = list(board.agents.select_related("phase").order_by("name", "pk"))
    rows = {agent.pk: AgentRow(agent=agent) for agent in agents}
    if not rows:
        return []
    held = (
        Task.objects.in_hand()
        .filter(ticket__board_id=board.pk, assigned_agent_id__in=list(rows))
        .only("pk", "title", "status", "ticket_id", "assigned_agent_id", "assigned_at")
        .order_by("assigned_at", "pk")
    )
    for task in held:
        row = rows[task.assigned_agent_id]
        # One task per agent is the queue's rule; should two show up, the first assigned is named.
        if row.current_task is None:
            row.current_task = task
    by_label = {agent.actor_label: rows[agent.pk] for agent in agents}
    by_name = {agent.name: rows[agent.pk] for agent in agents}
    # Completions are reported by the agent itself; a failure names the agent that held the task
    # (`held_by`), whoever reported it: the agent, or the orchestrator for a time-out or a silent agent.
    outcomes = (
        Event.objects.filter(board_id=board.pk)
        .filter(
            Q(type=EventType.TASK_COMPLETED, actor__in=list(by_label))
            | Q(type=EventType.TASK_FAILED, payload__held_by__in=list(by_name))
        )
        .values("type", "actor", held_by=KT("payload__held_by"))
        .annotate(total=Count("id"))
        .order_by()
    )
    for outcome in outcomes:
        if outcome["type"] == EventType.TASK_COMPLETED:
            by_label[outcome["actor"]].done += outcome["total"]
        else:
            by_name[outcome["held_by"]].failed += outcome["total"]
    for row in rows.values():
        seen = row.agent.last_heartbeat
        if seen is not None and not row.agent.is_revoked and now - seen > settings.OMOI_HEARTBEAT_INTERVAL:
            row.silent_for = now - seen
            row.past_limit = now - seen > silence_limit
    return [rows[agent.pk] for agent in agents]
