"""The workflow graph of a ticket or a board: tasks as nodes, discovery branches and dependencies as edges.

Three queries whatever the size (tasks, branches, dependencies): the graph
page and the API read it whole, and a board grows to thousands of tasks. A
live page patches its copy from events and reads one task's part of it
(`task_details`) when an event says too little. The filters of the graph
page (`graph_filtered`) and its list of branches (`branch_rows`) work on the
graph as read, with no query of their own.
"""

import json

from django.db.models import Count, IntegerField, OuterRef, Subquery
from django.db.models.functions import Coalesce, Substr

from board.models import Board, Task, Ticket

from .models import Discovery

# How much of a task's result the graph's side panel shows.
RESULT_SUMMARY_LENGTH = 500
# How much of a discovery's description an edge carries: a label's worth. A description may hold 20,000
# characters, and a board's graph has a thousand branches.
EDGE_DESCRIPTION_LENGTH = 200


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
    to each task the discovery spawned, with the first EDGE_DESCRIPTION_LENGTH
    characters of its description; dependency edges go from a dependency
    to the task waiting on it. Only edges with both ends in the graph are
    given: a ticket's graph leaves out dependencies on other tickets' tasks.
    """
    scope = _scope(of)
    nodes = _nodes(Task.objects.filter(**scope))
    ids = {node["id"] for node in nodes}

    branches = Discovery.spawned_tasks.through.objects.filter(**_prefixed("task", scope))
    edges = [edge for edge in _discovery_edges(branches) if edge["source"] in ids]
    # Task.dependencies: from_task waits on to_task.
    dependencies = Task.dependencies.through.objects.filter(
        **_prefixed("from_task", scope), **_prefixed("to_task", scope)
    )
    edges += _dependency_edges(dependencies)
    return {"nodes": nodes, "edges": edges}


def _nodes(tasks):
    """The nodes of `tasks` (a Task QuerySet), in creation order: one query."""
    recorded = (
        Discovery.objects.filter(source_task=OuterRef("pk"))
        .order_by()
        .values("source_task")
        .annotate(count=Count("pk"))
        .values("count")
    )
    tasks = (
        tasks.select_related("phase", "assigned_agent", "ticket")
        .only(
            "pk",
            "ticket_id",
            "title",
            "status",
            "priority",
            "parent_id",
            "attempt",
            "retry_count",
            "max_retries",
            "created_at",
            "phase__key",
            "phase__name",
            "assigned_agent__name",
            "ticket__title",
        )
        .annotate(discovery_count=Coalesce(Subquery(recorded, output_field=IntegerField()), 0))
        .order_by("created_at", "pk")
    )
    return [
        {
            "id": task.pk,
            "ticket": task.ticket_id,
            "ticket_title": task.ticket.title,
            "phase": task.phase.key,
            "phase_name": task.phase.name,
            "status": task.status,
            "priority": task.priority,
            "title": task.title,
            "agent": task.assigned_agent.name if task.assigned_agent_id else None,
            "parent": task.parent_id,
            "attempt": task.attempt,
            "retry_count": task.retry_count,
            "max_retries": task.max_retries,
            "discoveries": task.discovery_count,
        }
        for task in tasks
    ]


def _discovery_edges(branches):
    """An edge from the source task to each spawned task of the discovery–task rows `branches`: one query."""
    rows = (
        branches.annotate(summary=Substr("discovery__description", 1, EDGE_DESCRIPTION_LENGTH + 1))
        .values_list(
            "discovery_id",
            "task_id",
            "discovery__source_task_id",
            "discovery__discovery_type",
            "summary",
            "discovery__resolution_status",
        )
        .order_by("discovery_id", "task_id")
    )
    return [
        {
            "id": f"discovery-{discovery_id}-{task_id}",
            "kind": "discovery",
            "source": source_id,
            "target": task_id,
            "discovery_id": discovery_id,
            "discovery_type": discovery_type,
            "description": _cut(description, EDGE_DESCRIPTION_LENGTH),
            "resolution_status": resolution_status,
        }
        for discovery_id, task_id, source_id, discovery_type, description, resolution_status in rows
    ]


def _dependency_edges(dependencies):
    """An edge from each dependency to the task that waits on it, for the Task.dependencies rows given: one query."""
    rows = dependencies.values_list("to_task_id", "from_task_id").order_by("from_task_id", "to_task_id")
    return [
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
        for dependency, dependent in rows
    ]


def _cut(text, length):
    return text if len(text) <= length else text[: length - 1] + "…"


def result_summary(result):
    """A task's result as a line of text: its `summary` when it has one, else the JSON, cut short."""
    if result is None or result == "" or result == {}:
        return ""
    if isinstance(result, dict) and isinstance(result.get("summary"), str):
        text = result["summary"]
    elif isinstance(result, str):
        text = result
    else:
        text = json.dumps(result, ensure_ascii=False)
    return _cut(text, RESULT_SUMMARY_LENGTH)


def task_details(board, task_id):
    """One task of `board` as the live graph needs it, or None when the board has no such task.

    {"node": the task's node as in `workflow_graph`, "edges": every edge with
    the task at one end (the page keeps those whose other end it shows),
    "task": what the side panel adds (description, result summary, error,
    attempts, dates), "discoveries": what the task found, each with the tasks
    it spawned}. Six queries whatever the board's size.
    """
    nodes = _nodes(Task.objects.filter(ticket__board_id=board.pk, pk=task_id))
    if not nodes:
        return None
    task = (
        Task.objects.filter(pk=task_id)
        .only("pk", "description", "result", "error", "created_at", "started_at", "finished_at", "next_attempt_at")
        .get()
    )
    edges = _discovery_edges(
        Discovery.spawned_tasks.through.objects.filter(task_id=task_id)
        | Discovery.spawned_tasks.through.objects.filter(discovery__source_task_id=task_id)
    )
    edges += _dependency_edges(
        Task.dependencies.through.objects.filter(from_task_id=task_id)
        | Task.dependencies.through.objects.filter(to_task_id=task_id)
    )
    found = Discovery.objects.filter(source_task_id=task_id).prefetch_related("spawned_tasks").order_by("pk")
    discoveries = [
        {
            "id": discovery.pk,
            "discovery_type": discovery.discovery_type,
            "type_name": discovery.get_discovery_type_display(),
            "description": discovery.description,
            "resolution_status": discovery.resolution_status,
            "discovered_by": discovery.discovered_by,
            "spawned": sorted(spawned.pk for spawned in discovery.spawned_tasks.all()),
        }
        for discovery in found
    ]
    return {
        "node": nodes[0],
        "edges": edges,
        "task": {
            "description": task.description,
            "status_name": Task.Status(nodes[0]["status"]).label,
            "result_summary": result_summary(task.result),
            "error": task.error,
            "created_at": task.created_at.isoformat(),
            "started_at": task.started_at.isoformat() if task.started_at else None,
            "finished_at": task.finished_at.isoformat() if task.finished_at else None,
            "next_attempt_at": task.next_attempt_at.isoformat() if task.next_attempt_at else None,
        },
        "discoveries": discoveries,
    }


def graph_filtered(graph, *, phases=(), statuses=(), types=()):
    """The part of `graph` the page's filters keep; an empty filter keeps everything.

    A task stays when its phase is among `phases` and its status among
    `statuses`; with discovery `types`, only branches of those types stay,
    and only the tasks at either end of one. A dependency stays when both
    its tasks do. static/js/graph.js applies the same rule to the live graph.
    """
    phases, statuses, types = set(phases), set(statuses), set(types)
    kept = {
        node["id"]
        for node in graph["nodes"]
        if (not phases or node["phase"] in phases) and (not statuses or node["status"] in statuses)
    }
    edges = [edge for edge in graph["edges"] if edge["source"] in kept and edge["target"] in kept]
    if types:
        branches = [edge for edge in edges if edge["kind"] == "discovery" and edge["discovery_type"] in types]
        kept = {end for edge in branches for end in (edge["source"], edge["target"])}
        edges = [edge for edge in edges if edge["source"] in kept and edge["target"] in kept]
        edges = [edge for edge in edges if edge["kind"] == "dependency" or edge["discovery_type"] in types]
    return {"nodes": [node for node in graph["nodes"] if node["id"] in kept], "edges": edges}


def branch_rows(graph):
    """The graph as nested lists, a task above the branches it spawned: [(ticket id, ticket title, rows)].

    Tickets come in order of their first task; each row is {"node", "depth",
    "branch" (the edge that spawned it, None for a root), "opens" (it has
    branches: a nested list follows), "closes" (how many nested lists end
    after it)}, so a template writes the nesting without recursion. A task
    whose spawning task is not in `graph` is a root. Each task appears once.
    """
    by_id = {node["id"]: node for node in graph["nodes"]}
    children, spawned_by = {}, {}
    for edge in graph["edges"]:
        if edge["kind"] == "discovery" and edge["target"] not in spawned_by and edge["target"] != edge["source"]:
            spawned_by[edge["target"]] = edge
            children.setdefault(edge["source"], []).append(edge["target"])
    tickets = {}
    for node in graph["nodes"]:
        tickets.setdefault(node["ticket"], node["ticket_title"])
    placed, order = set(), []
    for node in graph["nodes"]:
        if node["id"] in spawned_by:
            continue
        stack = [(node["id"], 0)]
        while stack:
            task_id, depth = stack.pop()
            if task_id in placed:
                continue
            placed.add(task_id)
            order.append((task_id, depth))
            stack.extend((child, depth + 1) for child in reversed(children.get(task_id, [])))
    # A cycle of branches has no root: its tasks are roots where they stand.
    order += [(node["id"], 0) for node in graph["nodes"] if node["id"] not in placed]

    grouped = {}
    for task_id, depth in order:
        node = by_id[task_id]
        grouped.setdefault(node["ticket"], []).append({"node": node, "depth": depth, "branch": spawned_by.get(task_id)})
    result = []
    for ticket_id, title in tickets.items():
        rows = grouped[ticket_id]
        for index, row in enumerate(rows):
            following = rows[index + 1]["depth"] if index + 1 < len(rows) else 0
            row["opens"] = following > row["depth"]
            row["closes"] = range(max(0, row["depth"] - following))
            if row["depth"] == 0:
                row["branch"] = None
        result.append((ticket_id, title, rows))
    return result
