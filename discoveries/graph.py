"""The workflow graph of a ticket or a board: tasks as nodes, discovery branches and dependencies as edges.

Three queries whatever the size (tasks, branches, dependencies): the graph
page and the API redraw it on every change, and a board grows to thousands
of tasks.
"""

from board.models import Board, Task, Ticket

from .models import Discovery


def _scope(of):
    """Filters on Task for the tasks of a ticket or of a board."""
    if isinstance(of, Ticket):
        return {"ticket_id": of.pk}
    if isinstance(of, Board):
        return {"ticket__board_id": of.pk}
    raise TypeError(f"workflow_graph takes a Ticket or a Board, not {type(of).__name__}.")


def _prefixed(prefix, filters):
    return {f"{prefix}__{name}": value for name, value in filters.items()}


def workflow_graph(of):
    """{"nodes": [...], "edges": [...]} for a Ticket or a Board.

    Nodes are tasks in creation order. Discovery edges go from the source task
    to each task the discovery spawned; dependency edges go from a dependency
    to the task waiting on it. Only edges with both ends in the graph are
    given: a ticket's graph leaves out dependencies on other tickets' tasks.
    """
    scope = _scope(of)
    tasks = (
        Task.objects.filter(**scope)
        .select_related("phase", "assigned_agent")
        .only(
            "pk",
            "ticket_id",
            "title",
            "status",
            "priority",
            "parent_id",
            "created_at",
            "phase__key",
            "phase__name",
            "assigned_agent__name",
        )
        .order_by("created_at", "pk")
    )
    nodes = [
        {
            "id": task.pk,
            "ticket": task.ticket_id,
            "phase": task.phase.key,
            "phase_name": task.phase.name,
            "status": task.status,
            "priority": task.priority,
            "title": task.title,
            "agent": task.assigned_agent.name if task.assigned_agent_id else None,
            "parent": task.parent_id,
        }
        for task in tasks
    ]
    ids = {node["id"] for node in nodes}

    branches = (
        Discovery.spawned_tasks.through.objects.filter(**_prefixed("task", scope))
        .values_list(
            "discovery_id",
            "task_id",
            "discovery__source_task_id",
            "discovery__discovery_type",
            "discovery__description",
            "discovery__resolution_status",
        )
        .order_by("discovery_id", "task_id")
    )
    edges = [
        {
            "id": f"discovery-{discovery_id}-{task_id}",
            "kind": "discovery",
            "source": source_id,
            "target": task_id,
            "discovery_id": discovery_id,
            "discovery_type": discovery_type,
            "description": description,
            "resolution_status": resolution_status,
        }
        for discovery_id, task_id, source_id, discovery_type, description, resolution_status in branches
        if source_id in ids
    ]

    # Task.dependencies: from_task waits on to_task, so the edge runs to_task -> from_task.
    dependencies = (
        Task.dependencies.through.objects.filter(**_prefixed("from_task", scope), **_prefixed("to_task", scope))
        .values_list("to_task_id", "from_task_id")
        .order_by("from_task_id", "to_task_id")
    )
    edges += [
        {
            "id": f"dependency-{dependency}-{dependent}",
            "kind": "dependency",
            "source": dependency,
            "target": dependent,
            "discovery_id": None,
            "discovery_type": None,
            "description": None,
            "resolution_status": None,
        }
        for dependency, dependent in dependencies
    ]
    return {"nodes": nodes, "edges": edges}
