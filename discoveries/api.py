"""The agent API for discoveries: record, branch, resolve, list, and the workflow graph (a django-ninja router).

As in board.api: every lookup goes through the calling agent's boards (404
otherwise), the body is bounded by its schema, and the services' refusals keep
their message (422 for input, 409 for a discovery already closed).
"""

from datetime import date as Date
from datetime import datetime
from typing import Any, Literal

from django.db.models import Prefetch
from ninja import Field, Query, Router, Schema, Status

from board.api import (
    AnyJSON,
    BoardSlug,
    Capabilities,
    PhaseKey,
    PriorityName,
    RequiredText,
    TaskOut,
    Text,
    TitleOrDefault,
)
from board.errors import NotFound
from board.models import Board, Task
from board.selectors import agent_board, agent_task, agent_ticket

from .analytics import DEFAULT_DAYS, MAX_DAYS, OPEN_LISTED, discovery_analytics
from .graph import workflow_graph
from .models import Discovery
from .services import discovery_branch, discovery_record, discovery_resolve

router = Router(tags=["discoveries"])

PAGE_MAX = 200

# A Literal, so an unknown type is refused with the list of valid ones, and the OpenAPI schema lists them too.
DiscoveryTypeName = Literal[tuple(Discovery.Type.values)]
ResolutionName = Literal[tuple(Discovery.Resolution.values)]

_RELATED = ("source_task__ticket__board",)
_SPAWNED = Prefetch("spawned_tasks", queryset=Task.objects.only("pk").order_by("pk"))


def agent_discovery(agent, discovery_id):
    discovery = (
        _discoveries_of(agent)
        .filter(pk=discovery_id)
        .prefetch_related(_SPAWNED)
        .select_related(*_RELATED)
        .order_by("pk")
        .first()
    )
    if discovery is None:
        raise NotFound(f"No discovery {discovery_id} on this agent's boards.")
    return discovery


def _discoveries_of(agent):
    return Discovery.objects.filter(source_task__ticket__board__agents=agent)


# Schemas


class RecordIn(Schema):
    source_task_id: int = Field(gt=0, lt=2**53, description="The task the agent was doing; it need not hold it.")
    discovery_type: DiscoveryTypeName
    description: RequiredText = Field(description="What was found, stored as given.")
    priority_boost: bool = False
    metadata: dict[str, AnyJSON] = Field(
        default_factory=dict,
        description="Any JSON object, kept exactly as sent: at most 64 KiB as JSON and 32 levels deep, no NUL.",
    )


class BranchIn(RecordIn):
    phase: PhaseKey | None = Field(
        default=None,
        description="Any phase key of the ticket's workflow (allowed transitions do not apply); "
        "the source task's phase by default.",
    )
    title: TitleOrDefault | None = Field(
        default=None, description="By default (or when only spaces) the type and first line found."
    )
    task_description: Text | None = Field(
        default=None, description="The new task's description; the discovery's by default."
    )
    priority: PriorityName | None = Field(
        default=None, description="By default the source task's, one level higher with priority_boost."
    )
    required_capabilities: Capabilities = Field(default_factory=list)


class ResolveIn(Schema):
    status: Literal["resolved", "invalid"]
    reason: RequiredText


class DiscoveryOut(Schema):
    id: int
    source_task_id: int
    ticket_id: int
    board: str
    discovery_type: str
    description: str
    spawned_task_ids: list[int]
    discovered_at: datetime
    discovered_by: str
    priority_boost: bool
    resolution_status: str
    resolved_by: str
    resolution_note: str
    resolved_at: datetime | None
    metadata: dict[str, Any]

    @staticmethod
    def from_discovery(discovery, spawned=None):
        """The answer for `discovery`; `spawned` (task ids) when the caller knows them, else they are read."""
        if spawned is None:
            spawned = [task.pk for task in discovery.spawned_tasks.all()]
        return {
            "id": discovery.pk,
            "source_task_id": discovery.source_task_id,
            "ticket_id": discovery.source_task.ticket_id,
            "board": discovery.source_task.ticket.board.slug,
            "discovery_type": discovery.discovery_type,
            "description": discovery.description,
            "spawned_task_ids": spawned,
            "discovered_at": discovery.discovered_at,
            "discovered_by": discovery.discovered_by,
            "priority_boost": discovery.priority_boost,
            "resolution_status": discovery.resolution_status,
            "resolved_by": discovery.resolved_by,
            "resolution_note": discovery.resolution_note,
            "resolved_at": discovery.resolved_at,
            "metadata": discovery.metadata,
        }


class BranchOut(Schema):
    discovery: DiscoveryOut
    task: TaskOut


class DiscoveryPage(Schema):
    items: list[DiscoveryOut]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class DiscoveryFilters(Schema):
    type: DiscoveryTypeName | None = None
    status: ResolutionName | None = None
    ticket: int | None = Field(default=None, gt=0, lt=2**53)
    board: BoardSlug | None = None
    after: int = Field(default=0, ge=0, lt=2**53, description="Only discoveries with a larger id.")
    limit: int = Field(default=50, ge=1, le=PAGE_MAX)


class NodeOut(Schema):
    id: int
    ticket: int
    ticket_title: str
    phase: str
    phase_name: str
    status: str
    priority: str
    title: str
    agent: str | None
    parent: int | None
    attempt: int = Field(description="How many times the task was claimed.")
    retry_count: int
    max_retries: int
    discoveries: int = Field(description="How many discoveries the task recorded, branching or not.")


class EdgeOut(Schema):
    id: str
    kind: Literal["discovery", "dependency"]
    source: int
    target: int
    discovery_id: int | None
    discovery_type: str | None
    description: str | None = Field(
        description="The discovery's description, cut to 200 characters (GET /discoveries/{id} has all of it)."
    )
    resolution_status: str | None


class GraphOut(Schema):
    nodes: list[NodeOut]
    edges: list[EdgeOut]


class AnalyticsFilters(Schema):
    board: BoardSlug | None = Field(default=None, description="Only this board; by default every board of the agent.")
    days: int = Field(default=DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="The days `per_day` covers, today included.")


class PhaseCountOut(Schema):
    phase: str
    name: str
    count: int


class BranchDepthOut(Schema):
    spawned_tasks: int = Field(description="Tasks a discovery spawned.")
    average: float | None = Field(description="Their average depth; null when there are none.")
    max: int


class DayCountOut(Schema):
    date: Date
    count: int


class OpenDiscoveryOut(Schema):
    id: int
    board: str
    ticket_id: int
    source_task_id: int
    phase: str
    discovery_type: str
    description: str
    discovered_at: datetime
    discovered_by: str
    priority_boost: bool


class AnalyticsOut(Schema):
    boards: list[str] = Field(description="The boards counted, by slug.")
    days: int
    total: int
    by_type: dict[str, int] = Field(description="Every discovery type, with how many were found (0 included).")
    by_phase: list[PhaseCountOut] = Field(description="By the phase of the source task, in workflow order.")
    by_status: dict[str, int]
    resolution_rate: float | None = Field(
        description="The share of discoveries no longer open (resolved or invalid), 0 to 1; null when there are none."
    )
    branch_depth: BranchDepthOut = Field(
        description="Depth of each spawned task: the discovery branches from its root task to it."
    )
    per_day: list[DayCountOut] = Field(description="Discoveries recorded each day, in the site's time zone.")
    open: list[OpenDiscoveryOut] = Field(description=f"The open discoveries, newest first: at most {OPEN_LISTED}.")


# Endpoints


@router.post("/record", response={201: DiscoveryOut}, summary="Record a discovery without branching the work")
def record_discovery(request, payload: RecordIn):
    return Status(201, discovery_recorded(request.auth, payload))


def discovery_recorded(agent, payload):
    """A discovery recorded from RecordIn on a task of the agent's boards, as DiscoveryOut answers it."""
    source = agent_task(agent, payload.source_task_id)
    discovery = discovery_record(
        source_task=source,
        discovery_type=payload.discovery_type,
        description=payload.description,
        actor=agent,
        priority_boost=payload.priority_boost,
        metadata=payload.metadata,
    )
    # The discovery as written, with the source task the lookup read: nothing to read again.
    return DiscoveryOut.from_discovery(discovery, spawned=[])


@router.post("/branch", response={201: BranchOut}, summary="Record a discovery and spawn one task for it, in any phase")
def branch_discovery(request, payload: BranchIn):
    return Status(201, discovery_branched(request.auth, payload))


def discovery_branched(agent, payload):
    """A discovery from BranchIn and the one task it spawns, as BranchOut answers them."""
    source = agent_task(agent, payload.source_task_id)
    discovery, task = discovery_branch(
        source_task=source,
        discovery_type=payload.discovery_type,
        description=payload.description,
        actor=agent,
        phase=payload.phase,
        title=payload.title,
        task_description=payload.task_description,
        priority=payload.priority,
        priority_boost=payload.priority_boost,
        required_capabilities=payload.required_capabilities,
        metadata=payload.metadata,
    )
    return {
        "discovery": DiscoveryOut.from_discovery(discovery, spawned=[task.pk]),
        "task": TaskOut.from_task(task, dependencies=[]),
    }


@router.post("/{int:discovery_id}/resolve", response=DiscoveryOut, summary="Close a discovery as resolved or invalid")
def resolve_discovery(request, discovery_id: int, payload: ResolveIn):
    discovery = agent_discovery(request.auth, discovery_id)
    discovery_resolve(discovery=discovery, status=payload.status, reason=payload.reason, actor=request.auth)
    return DiscoveryOut.from_discovery(agent_discovery(request.auth, discovery_id))


@router.get("", response=DiscoveryPage, summary="Discoveries on the agent's boards, oldest first")
def list_discoveries(request, filters: Query[DiscoveryFilters]):
    found = _discoveries_of(request.auth)
    if filters.board:
        found = found.filter(source_task__ticket__board=agent_board(request.auth, filters.board))
    if filters.ticket:
        found = found.filter(source_task__ticket=agent_ticket(request.auth, filters.ticket))
    if filters.type:
        found = found.filter(discovery_type=filters.type)
    if filters.status:
        found = found.filter(resolution_status=filters.status)
    # By id, not discovered_at: the cursor must be unique and follow insertion.
    page = list(
        found.filter(pk__gt=filters.after)
        .select_related(*_RELATED)
        .prefetch_related(_SPAWNED)
        .order_by("pk")[: filters.limit + 1]
    )
    more = len(page) > filters.limit
    page = page[: filters.limit]
    return {
        "items": [DiscoveryOut.from_discovery(discovery) for discovery in page],
        "next_after": page[-1].pk if more else None,
    }


@router.get("/{int:discovery_id}", response=DiscoveryOut, summary="A discovery")
def get_discovery(request, discovery_id: int):
    return DiscoveryOut.from_discovery(agent_discovery(request.auth, discovery_id))


@router.get("/graph/{int:ticket_id}", response=GraphOut, summary="A ticket's workflow graph: tasks and branches")
def graph_of_ticket(request, ticket_id: int):
    return workflow_graph(agent_ticket(request.auth, ticket_id))


@router.get("/graph/board/{slug}", response=GraphOut, summary="A board's workflow graph: every ticket's tasks")
def graph_of_board(request, slug: str):
    return workflow_graph(agent_board(request.auth, slug))


@router.get(
    "/analytics",
    response=AnalyticsOut,
    summary="Discovery analytics of the agent's boards: counts by type, phase and status, resolution, branch depth",
)
def analytics(request, filters: Query[AnalyticsFilters]):
    if filters.board:
        boards = Board.objects.filter(pk=agent_board(request.auth, filters.board).pk)
    else:
        boards = Board.objects.filter(agents=request.auth)
    stats = discovery_analytics(boards, days=filters.days)
    return {
        **stats,
        "boards": list(boards.order_by("slug").values_list("slug", flat=True)),
        "open": [
            {
                "id": discovery.pk,
                "board": discovery.source_task.ticket.board.slug,
                "ticket_id": discovery.source_task.ticket_id,
                "source_task_id": discovery.source_task_id,
                "phase": discovery.source_task.phase.key,
                "discovery_type": discovery.discovery_type,
                "description": discovery.description,
                "discovered_at": discovery.discovered_at,
                "discovered_by": discovery.discovered_by,
                "priority_boost": discovery.priority_boost,
            }
            for discovery in stats["open"]
        ],
    }
