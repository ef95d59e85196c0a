"""The agent API for agents, tasks, tickets, phases and boards (django-ninja routers).

Endpoints parse the body with a schema, find objects only on the calling
agent's boards (404 otherwise), call a service and serialise the result.
Refusals from services become 409 (state), 403 (permission) or 422 (input)
with the service's own message.
"""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Count, Prefetch
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status
from ninja.security import HttpBearer
from pydantic import AfterValidator, ConfigDict, model_validator

from phases.models import Phase
from phases.schema import MAX_RETRIES, MAX_TIMEOUT_SECONDS, PHASE_ID_PATTERN, SLUG_PATTERN

from .middleware import request_agent
from .models import Agent, Board, Event, PhaseHistory, Task, Ticket
from .selectors import BoardFilters, board_columns
from .services import (
    TaskStateError,
    TransitionRefused,
    agent_heartbeat,
    task_claim,
    task_complete,
    task_create,
    task_fail,
    task_start,
    ticket_comment,
    ticket_create,
    ticket_transition,
)

# Bounds on what an agent may send, so no field can carry an unbounded payload.
TEXT_MAX = 20_000
NAME_MAX = 200
LIST_MAX = 100


class AgentAuth(HttpBearer):
    """`Authorization: Bearer <token>`; the agent is then `request.auth`."""

    def authenticate(self, request, token):
        return request_agent(request, token)


class NotFound(HttpError):
    def __init__(self, message):
        super().__init__(404, message)


def install_error_handlers(api):
    """Map the services' refusals to HTTP statuses, each with the service's message."""

    @api.exception_handler(TransitionRefused)
    def transition_refused(request, exc):
        return api.create_response(request, {"detail": str(exc)}, status=409)

    @api.exception_handler(TaskStateError)
    def task_state(request, exc):
        return api.create_response(request, {"detail": str(exc)}, status=409)

    @api.exception_handler(PermissionDenied)
    def forbidden(request, exc):
        return api.create_response(request, {"detail": str(exc) or "Forbidden."}, status=403)

    @api.exception_handler(DjangoValidationError)
    def invalid(request, exc):
        if hasattr(exc, "error_dict"):
            errors = [
                {"loc": ["body", field], "msg": message, "type": "value_error"}
                for field, messages in exc.message_dict.items()
                for message in messages
            ]
        else:
            errors = [{"loc": ["body"], "msg": message, "type": "value_error"} for message in exc.messages]
        return api.create_response(request, {"detail": errors}, status=422)


class ErrorItem(Schema):
    loc: list[str | int] = Field(description='Where: ["body", "payload", field] for the schema, ["body", field] after.')
    msg: str
    type: str


class ErrorOut(Schema):
    detail: str | list[ErrorItem] = Field(description="A sentence, or for invalid input each problem with its place.")


ERROR_ANSWERS = {
    401: "No token, or an unknown or revoked one.",
    403: "Not allowed for this agent, e.g. closing a discovery it neither recorded nor works on.",
    404: "Nothing of that id or key on this agent's boards, or no such endpoint.",
    409: "The object's state refuses it: a move the workflow does not allow, a task the agent does not hold, "
    "a discovery already closed, a phase key found in several of the agent's workflows.",
    413: "The body is larger than the limit (OMOI_API_MAX_BODY_BYTES, 256 KiB by default).",
    422: "Invalid input: the body is not a JSON object, breaks the schema (or holds NUL, NaN, an infinity or "
    "nesting past 64 levels), or a service refused a value, e.g. an unknown phase key.",
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": "Makes a retry safe: the same key and body get the first answer again (Idempotent-Replayed: "
    "true) for 24 hours; the same key with another body is refused (422).",
}


def document_errors(schema):
    """Add to each operation of the OpenAPI schema the errors it may answer, with their body, and Idempotency-Key."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error = ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error.pop("$defs", {}))
    components["Error"] = error
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if not operation.get("security"):
                continue  # the health check answers everyone, always 200
            codes = {401, 404, 422}
            if method == "post":
                codes |= {403, 409, 413}
                operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
            if "{key}" in path:
                codes.add(409)
            for code in sorted(codes):
                operation["responses"].setdefault(code, {"description": ERROR_ANSWERS[code], "content": body})
    return schema


# Lookups, always through the agent's boards


def agent_board(agent, slug):
    board = Board.objects.filter(agents=agent, slug=slug).select_related("workflow").first()
    if board is None:
        raise NotFound(f"No board {slug!r} among this agent's boards.")
    return board


def agent_ticket(agent, ticket_id):
    ticket = Ticket.objects.filter(board__agents=agent, pk=ticket_id).select_related("board__workflow", "phase").first()
    if ticket is None:
        raise NotFound(f"No ticket {ticket_id} on this agent's boards.")
    return ticket


def agent_task(agent, task_id):
    task = (
        Task.objects.filter(ticket__board__agents=agent, pk=task_id)
        .select_related("ticket__board__workflow", "phase", "assigned_agent", "ticket__phase")
        .first()
    )
    if task is None:
        raise NotFound(f"No task {task_id} on this agent's boards.")
    return task


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
        raise HttpError(409, f"Phase {key!r} is in several of this agent's workflows; say which with ?board=<slug>.")
    return found[0]


# Schemas
#
# The constraints the services enforce are stated here too, so that a request
# valid for the OpenAPI schema is not refused for its shape: no NUL character
# in any text (PostgreSQL cannot store one), no blank required text, keys and
# slugs in their own alphabet.

NO_NUL = r"^[^\x00]*$"
# At least one character that is not a space, and no NUL: linear for a backtracking engine too.
NOT_BLANK = r"^\s*[^\s\x00][^\x00]*$"


def _no_nul(value):
    if "\x00" in value:
        raise ValueError("A NUL character (\\u0000) cannot be stored.")
    return value


def _not_blank(value):
    if not value.strip():
        raise ValueError("This field cannot be blank.")
    return _no_nul(value)


def _capability(value):
    if not value.strip() or "\x00" in value:
        raise ValueError(f"Each capability is a name of 1 to 64 characters, not {value!r}.")
    return value


# The pattern goes into the schema; the validator checks the same rule with the services' own wording.
Text = Annotated[str, Field(max_length=TEXT_MAX, json_schema_extra={"pattern": NO_NUL}), AfterValidator(_no_nul)]
RequiredText = Annotated[
    str, Field(min_length=1, max_length=TEXT_MAX, json_schema_extra={"pattern": NOT_BLANK}), AfterValidator(_not_blank)
]
Title = Annotated[
    str, Field(min_length=1, max_length=NAME_MAX, json_schema_extra={"pattern": NOT_BLANK}), AfterValidator(_not_blank)
]
# A title that may be only spaces: the service then puts a default in its place.
TitleOrDefault = Annotated[
    str, Field(min_length=1, max_length=NAME_MAX, json_schema_extra={"pattern": NO_NUL}), AfterValidator(_no_nul)
]
Capability = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": NOT_BLANK},
        description="A capability name; surrounding spaces are dropped.",
    ),
    AfterValidator(_capability),
]
Capabilities = Annotated[list[Capability], Field(max_length=50)]


def _in_alphabet(pattern, what):
    def check(value):
        if not re.fullmatch(pattern, value):
            raise ValueError(f"{value!r} is not {what}.")
        return value

    return check


PhaseKey = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        json_schema_extra={"pattern": PHASE_ID_PATTERN},
        description="The key of a phase of the workflow, e.g. PHASE_TESTING (GET /phases lists them).",
    ),
    AfterValidator(
        _in_alphabet(PHASE_ID_PATTERN, "a phase key: a letter, then letters, digits or _ (e.g. PHASE_TESTING)")
    ),
]
BoardSlug = Annotated[
    str,
    Field(min_length=1, max_length=100, json_schema_extra={"pattern": SLUG_PATTERN}),
    AfterValidator(_in_alphabet(SLUG_PATTERN, "a board slug: letters, digits, - and _ only")),
]
AnyJSON = Annotated[
    Any,
    Field(description="Any JSON value, stored as sent: no NUL character, NaN or infinity, at most 64 levels deep."),
]


class AgentOut(Schema):
    id: int
    name: str
    agent_type: str
    status: str
    phase: str | None
    capabilities: list[str]
    boards: list[str]
    last_heartbeat: datetime | None

    @staticmethod
    def from_agent(agent):
        return {
            "id": agent.pk,
            "name": agent.name,
            "agent_type": agent.agent_type,
            "status": agent.status,
            "phase": agent.phase.key if agent.phase_id else None,
            "capabilities": agent.capabilities,
            "boards": [board.slug for board in agent.boards.all()],
            "last_heartbeat": agent.last_heartbeat,
        }


# Set by staff in the admin or with `manage.py create_agent`: an agent that could set them would pass every gate.
STAFF_FIELDS = ("capabilities", "agent_type", "phase", "boards", "name")


class HeartbeatIn(Schema):
    model_config = ConfigDict(extra="forbid")

    status: Literal["idle", "busy", "offline"] | None = None

    @model_validator(mode="before")
    @classmethod
    def refuse_staff_fields(cls, data):
        given = [name for name in STAFF_FIELDS if isinstance(data, dict) and name in data]
        if given:
            raise ValueError(
                f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} set by staff (the admin or "
                "manage.py create_agent); an agent reports only its status"
            )
        return data


class TaskOut(Schema):
    id: int
    ticket_id: int
    board: str
    phase: str
    task_type: str
    title: str
    description: str
    status: str
    priority: str
    score: float
    dependencies: list[int]
    required_capabilities: list[str]
    assigned_agent: str | None
    retry_count: int
    max_retries: int
    timeout_seconds: int
    next_attempt_at: datetime | None
    result: Any = None
    artifacts: list[Any]
    completed_criteria: list[str]
    error: str
    parent_task_id: int | None
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def from_task(task, dependencies=None):
        if dependencies is None:
            dependencies = list(task.dependencies.values_list("pk", flat=True))
        return {
            "id": task.pk,
            "ticket_id": task.ticket_id,
            "board": task.ticket.board.slug,
            "phase": task.phase.key,
            "task_type": task.task_type,
            "title": task.title,
            "description": task.description,
            "status": task.status,
            "priority": task.priority,
            "score": task.score,
            "dependencies": dependencies,
            "required_capabilities": task.required_capabilities,
            "assigned_agent": task.assigned_agent.name if task.assigned_agent_id else None,
            "retry_count": task.retry_count,
            "max_retries": task.max_retries,
            "timeout_seconds": task.timeout_seconds,
            "next_attempt_at": task.next_attempt_at,
            "result": task.result,
            "artifacts": task.artifacts,
            "completed_criteria": task.completed_criteria,
            "error": task.error,
            "parent_task_id": task.parent_id,
            "created_at": task.created_at,
            "updated_at": task.updated_at,
        }


PriorityName = Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"]


class ClaimIn(Schema):
    board: BoardSlug | None = Field(default=None, description="Only claim from this board.")


class TaskCreateIn(Schema):
    ticket_id: int = Field(gt=0, lt=2**53)
    title: Title
    phase: PhaseKey | None = Field(default=None, description="Any phase of the ticket's workflow.")
    description: Text = ""
    task_type: Annotated[str, Field(max_length=64, json_schema_extra={"pattern": NO_NUL}), AfterValidator(_no_nul)] = (
        "work"
    )
    priority: PriorityName | None = None
    score: float | None = Field(default=None, ge=-1e9, le=1e9)
    dependencies: list[Annotated[int, Field(gt=0, lt=2**53)]] = Field(default_factory=list, max_length=LIST_MAX)
    required_capabilities: Capabilities = Field(default_factory=list)
    parent_task_id: int | None = Field(default=None, gt=0, lt=2**53)
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_SECONDS)


class TaskCompleteIn(Schema):
    result: AnyJSON = None
    artifacts: list[AnyJSON] = Field(default_factory=list, max_length=LIST_MAX)
    completed_criteria: list[Text] = Field(
        default_factory=list, max_length=LIST_MAX, description="The done-definitions of the phase this task met."
    )


class TaskFailIn(Schema):
    error: RequiredText
    retryable: bool = True


def _tasks_by_ids(agent, ids, field):
    ids = list(dict.fromkeys(ids))
    found = {
        task.pk: task for task in Task.objects.filter(ticket__board__agents=agent, pk__in=ids).select_related("ticket")
    }
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise NotFound(f"{field}: no task {', '.join(map(str, missing))} on this agent's boards.")
    return [found[pk] for pk in ids]


# Agents

agents = Router(tags=["agents"])


@agents.get("/me", response=AgentOut, summary="The calling agent")
def agent_me(request):
    agent = Agent.objects.prefetch_related("boards").select_related("phase").get(pk=request.auth.pk)
    return AgentOut.from_agent(agent)


@agents.post("/me", response=AgentOut, summary="Report the calling agent's status (capabilities are set by staff)")
def agent_report(request, payload: HeartbeatIn):
    agent_heartbeat(agent=request.auth, status=payload.status)
    return agent_me(request)


@agents.post("/me/heartbeat", response=AgentOut, summary="Tell the orchestrator the agent is alive")
def agent_beat(request, payload: HeartbeatIn):
    agent_heartbeat(agent=request.auth, status=payload.status)
    return agent_me(request)


# Tasks

tasks = Router(tags=["tasks"])


@tasks.post("/next", response={200: TaskOut, 204: None}, summary="Claim the best ready task")
def task_next(request, payload: ClaimIn):
    board = agent_board(request.auth, payload.board) if payload.board else None
    task = task_claim(agent=request.auth, board=board)
    if task is None:
        return Status(204, None)
    return TaskOut.from_task(task)


@tasks.post("", response={201: TaskOut}, summary="Create a task in any phase of the ticket's workflow")
def task_new(request, payload: TaskCreateIn):
    ticket = agent_ticket(request.auth, payload.ticket_id)
    dependencies = _tasks_by_ids(request.auth, payload.dependencies, "dependencies")
    parent = (
        _tasks_by_ids(request.auth, [payload.parent_task_id], "parent_task_id")[0] if payload.parent_task_id else None
    )
    task = task_create(
        ticket=ticket,
        title=payload.title,
        actor=request.auth,
        phase=payload.phase,
        description=payload.description,
        task_type=payload.task_type,
        priority=payload.priority,
        score=payload.score,
        dependencies=dependencies,
        required_capabilities=payload.required_capabilities,
        parent=parent,
        max_retries=payload.max_retries,
        timeout_seconds=payload.timeout_seconds,
    )
    return Status(201, TaskOut.from_task(task))


@tasks.get("/{int:task_id}", response=TaskOut, summary="A task")
def task_get(request, task_id: int):
    return TaskOut.from_task(agent_task(request.auth, task_id))


@tasks.post("/{int:task_id}/start", response=TaskOut, summary="Start a task the agent holds")
def task_begin(request, task_id: int):
    task = task_start(task=agent_task(request.auth, task_id), agent=request.auth)
    return TaskOut.from_task(task)


@tasks.post("/{int:task_id}/complete", response=TaskOut, summary="Complete a task the agent holds")
def task_done(request, task_id: int, payload: TaskCompleteIn):
    task = task_complete(
        task=agent_task(request.auth, task_id),
        agent=request.auth,
        result=payload.result,
        artifacts=payload.artifacts,
        completed_criteria=payload.completed_criteria,
    )
    return TaskOut.from_task(task)


@tasks.post("/{int:task_id}/fail", response=TaskOut, summary="Report a failure of a task the agent holds")
def task_failed(request, task_id: int, payload: TaskFailIn):
    task = task_fail(
        task=agent_task(request.auth, task_id), agent=request.auth, error=payload.error, retryable=payload.retryable
    )
    return TaskOut.from_task(task)


# Tickets

tickets = Router(tags=["tickets"])


class TicketCreateIn(Schema):
    board: BoardSlug
    title: Title
    description: Text = ""
    priority: PriorityName = "MEDIUM"
    phase: PhaseKey | None = Field(default=None, description="The first phase of the workflow by default.")


class TransitionIn(Schema):
    to_phase: PhaseKey
    reason: Text = ""


class CommentIn(Schema):
    body: RequiredText


class HistoryOut(Schema):
    from_phase: str
    to_phase: str
    kind: str
    reason: str
    actor: str
    at: datetime


class CommentOut(Schema):
    id: int
    ticket_id: int
    body: str
    author: str
    created_at: datetime


class TicketOut(Schema):
    id: int
    board: str
    title: str
    description: str
    priority: str
    phase: str
    is_blocked: bool
    blocked_reason: str
    version: int
    created_at: datetime
    updated_at: datetime


class TicketDetailOut(TicketOut):
    tasks: list[TaskOut]
    history: list[HistoryOut]
    comments: list[CommentOut]


def _ticket_out(ticket):
    return {
        "id": ticket.pk,
        "board": ticket.board.slug,
        "title": ticket.title,
        "description": ticket.description,
        "priority": ticket.priority,
        "phase": ticket.phase.key,
        "is_blocked": ticket.is_blocked,
        "blocked_reason": ticket.blocked_reason,
        "version": ticket.version,
        "created_at": ticket.created_at,
        "updated_at": ticket.updated_at,
    }


@tickets.post("", response={201: TicketOut}, summary="Create a ticket")
def ticket_new(request, payload: TicketCreateIn):
    board = agent_board(request.auth, payload.board)
    ticket = ticket_create(
        board=board,
        title=payload.title,
        description=payload.description,
        priority=payload.priority,
        phase=payload.phase,
        actor=request.auth,
    )
    return Status(201, _ticket_out(ticket))


@tickets.get("/{int:ticket_id}", response=TicketDetailOut, summary="A ticket with its tasks, history and comments")
def ticket_get(request, ticket_id: int):
    ticket = agent_ticket(request.auth, ticket_id)
    task_list = list(
        ticket.tasks.select_related("phase", "assigned_agent")
        .prefetch_related(Prefetch("dependencies", queryset=Task.objects.only("pk")))
        .order_by("created_at", "id")
    )
    for task in task_list:
        task.ticket = ticket
    history = PhaseHistory.objects.filter(ticket=ticket).order_by("created_at", "id")
    return {
        **_ticket_out(ticket),
        "tasks": [TaskOut.from_task(task, [dep.pk for dep in task.dependencies.all()]) for task in task_list],
        "history": [
            {
                "from_phase": entry.from_key,
                "to_phase": entry.to_key,
                "kind": entry.kind,
                "reason": entry.reason,
                "actor": entry.actor,
                "at": entry.created_at,
            }
            for entry in history
        ],
        "comments": list(ticket.comments.order_by("created_at", "id")),
    }


@tickets.post("/{int:ticket_id}/transition", response=TicketOut, summary="Move a ticket to another phase")
def ticket_move_phase(request, ticket_id: int, payload: TransitionIn):
    ticket = agent_ticket(request.auth, ticket_id)
    moved = ticket_transition(ticket=ticket, to_phase=payload.to_phase, actor=request.auth, reason=payload.reason)
    moved.phase = Phase.objects.get(pk=moved.phase_id)
    return _ticket_out(moved)


@tickets.post("/{int:ticket_id}/comments", response={201: CommentOut}, summary="Comment on a ticket")
def ticket_add_comment(request, ticket_id: int, payload: CommentIn):
    comment = ticket_comment(ticket=agent_ticket(request.auth, ticket_id), body=payload.body, actor=request.auth)
    return Status(201, comment)


# Phases

phases = Router(tags=["phases"])


class PhaseOut(Schema):
    key: str
    name: str
    workflow: str
    description: str
    sequence_order: int
    is_terminal: bool
    allowed_transitions: list[str]
    done_definitions: list[str]
    expected_outputs: list[dict]
    phase_prompt: str
    next_steps_guide: list[str]
    configuration: dict


class ValidateDoneIn(Schema):
    completed_criteria: list[Text] = Field(default_factory=list, max_length=LIST_MAX)


class ValidateDoneOut(Schema):
    phase: str
    done: bool
    met: list[str]
    missing: list[str]


def _phase_out(phase):
    return {
        "key": phase.key,
        "name": phase.name,
        "workflow": phase.workflow.slug,
        "description": phase.description,
        "sequence_order": phase.sequence_order,
        "is_terminal": phase.is_terminal,
        "allowed_transitions": [target.key for target in phase.allowed_transitions.all()],
        "done_definitions": phase.done_definitions,
        "expected_outputs": phase.expected_outputs,
        "phase_prompt": phase.phase_prompt,
        "next_steps_guide": phase.next_steps_guide,
        "configuration": phase.configuration,
    }


@phases.get("", response=list[PhaseOut], summary="The phases of the agent's boards' workflows")
def phase_list(request, board: BoardSlug | None = None):
    found = Phase.objects.filter(workflow__boards__agents=request.auth)
    if board:
        found = found.filter(workflow__boards=agent_board(request.auth, board))
    found = found.distinct().select_related("workflow").with_transitions().order_by("workflow__slug", "sequence_order")
    return [_phase_out(phase) for phase in found]


@phases.get("/{key}", response=PhaseOut, summary="A phase")
def phase_get(request, key: str, board: BoardSlug | None = None):
    phase = agent_phase(request.auth, key, board)
    return _phase_out(phase)


@phases.get("/{key}/instructions", summary="The phase's instructions for an agent, in Markdown")
def phase_instructions(request, key: str, board: BoardSlug | None = None):
    phase = agent_phase(request.auth, key, board)
    return {"phase": phase.key, "format": "markdown", "instructions": phase.agent_instructions()}


@phases.post("/{key}/validate-done", response=ValidateDoneOut, summary="Which done-definitions are met")
def phase_validate_done(request, key: str, payload: ValidateDoneIn, board: BoardSlug | None = None):
    phase = agent_phase(request.auth, key, board)
    missing = phase.missing_done_criteria(payload.completed_criteria)
    met = [item for item in phase.done_definitions if item not in missing]
    return {"phase": phase.key, "done": not missing, "met": met, "missing": missing}


# Boards

boards = Router(tags=["boards"])


class BoardTicketOut(Schema):
    id: int
    title: str
    priority: str
    phase: str
    is_blocked: bool
    blocked_reason: str
    position: int
    version: int
    tasks_done: int
    tasks_total: int
    open_discoveries: int


class BoardColumnOut(Schema):
    key: str
    name: str
    phases: list[str]
    count: int
    wip_limit: int | None
    wip_policy: str
    wip_state: str
    tickets: list[BoardTicketOut]
    has_more: bool


class BoardOut(Schema):
    slug: str
    name: str
    workflow: str
    last_event_id: int
    columns: list[BoardColumnOut]


@boards.get("", summary="The agent's boards")
def board_list(request):
    rows = Board.objects.filter(agents=request.auth).annotate(tickets_count=Count("tickets")).order_by("name")
    return [{"slug": b.slug, "name": b.name, "tickets": b.tickets_count} for b in rows]


@boards.get("/{slug}", response=BoardOut, summary="The board: columns, counts, limits and the first tickets of each")
def board_get(request, slug: str):
    board = agent_board(request.auth, slug)
    last = Event.objects.filter(board=board).order_by("-id").values_list("id", flat=True).first() or 0
    views = board_columns(board, BoardFilters())
    phase_keys = {phase.pk: phase.key for view in views for phase in view.phases}
    return {
        "slug": board.slug,
        "name": board.name,
        "workflow": board.workflow.slug,
        "last_event_id": last,
        "columns": [
            {
                "key": view.column.key,
                "name": view.column.name,
                "phases": [phase.key for phase in view.phases],
                "count": view.count,
                "wip_limit": view.limit,
                "wip_policy": view.column.wip_policy,
                "wip_state": view.wip_state,
                "tickets": [
                    {
                        "id": card.pk,
                        "title": card.title,
                        "priority": card.priority,
                        "phase": phase_keys[card.phase_id],
                        "is_blocked": card.is_blocked,
                        "blocked_reason": card.blocked_reason,
                        "position": card.position,
                        "version": card.version,
                        "tasks_done": card.tasks_done,
                        "tasks_total": card.tasks_total,
                        "open_discoveries": card.open_discoveries,
                    }
                    for card in view.cells[0].cards
                ],
                "has_more": view.cells[0].has_more,
            }
            for view in views
        ],
    }
