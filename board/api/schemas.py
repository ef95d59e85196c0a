"""The agent API's schemas: bounded field types shared by every router, and the bodies and answers.

The constraints the services enforce are stated here too, so that a request
valid for the OpenAPI schema is not refused for its shape: no NUL character
in any text (PostgreSQL cannot store one), no blank required text, keys and
slugs in their own alphabet.
"""

import functools
import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from ninja.responses import NinjaJSONEncoder
from pydantic import AfterValidator, ConfigDict, TypeAdapter, model_validator

from phases.schema import MAX_RETRIES, MAX_TIMEOUT_SECONDS, PHASE_ID_PATTERN, SLUG_PATTERN

from ..services import task_score_now

# Bounds on what an agent may send, so no field can carry an unbounded payload.
TEXT_MAX = 20_000
NAME_MAX = 200
LIST_MAX = 100

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
    attempt: int = Field(
        description="Which claim holds the task: each claim starts a new attempt. Send it back with start, "
        "complete and fail; a report from a superseded attempt is refused (409)."
    )
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
        """The answer for `task`; its dependencies are given, or read with it (`with_dependency_ids`), or read now."""
        if dependencies is None:
            dependencies = getattr(task, "dependency_ids", None)
        if dependencies is None:
            dependencies = list(task.dependencies.order_by("pk").values_list("pk", flat=True))
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
            "score": task_score_now(task),
            "dependencies": dependencies,
            "required_capabilities": task.required_capabilities,
            "assigned_agent": task.assigned_agent.name if task.assigned_agent_id else None,
            "retry_count": task.retry_count,
            "attempt": task.attempt,
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
    score: float | None = Field(
        default=None, ge=-1e9, le=1e9, description="Replaces the priority's weight in the task's queue score."
    )
    dependencies: list[Annotated[int, Field(gt=0, lt=2**53)]] = Field(default_factory=list, max_length=LIST_MAX)
    required_capabilities: Capabilities = Field(default_factory=list)
    parent_task_id: int | None = Field(default=None, gt=0, lt=2**53)
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES)
    timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_SECONDS)


Attempt = Annotated[
    int,
    Field(
        ge=1,
        le=2**31 - 1,
        description="The task's attempt as the claim gave it; a superseded attempt is refused (409) and changes nothing.",
    ),
]


class TaskStartIn(Schema):
    attempt: Attempt | None = None


class TaskCompleteIn(Schema):
    attempt: Attempt | None = None
    result: AnyJSON = None
    artifacts: list[AnyJSON] = Field(default_factory=list, max_length=LIST_MAX)
    completed_criteria: list[Text] = Field(
        default_factory=list, max_length=LIST_MAX, description="The done-definitions of the phase this task met."
    )


class TaskFailIn(Schema):
    attempt: Attempt | None = None
    error: RequiredText
    retryable: bool = True


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


def ticket_out(ticket):
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


class InstructionsOut(Schema):
    phase: str
    format: Literal["markdown"]
    instructions: str


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
    validation_criteria: list[dict]
    configuration: dict


class ValidateDoneIn(Schema):
    completed_criteria: list[Text] = Field(default_factory=list, max_length=LIST_MAX)


class ValidateDoneOut(Schema):
    phase: str
    done: bool
    met: list[str]
    missing: list[str]


def phase_out(phase):
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
        "validation_criteria": phase.validation_criteria,
        "configuration": phase.configuration,
    }


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


class GateCriterionOut(Schema):
    text: str
    met: bool


class GateOutputOut(Schema):
    type: str
    pattern: str = Field(description="The glob artifact paths are matched against, <ticket-id> filled in.")
    required: bool
    validation_rule: str
    description: str
    satisfied: bool
    checked: bool = Field(description="False when the validation rule is for a person to check, not the gate.")
    matches: list[str] = Field(description="Paths of the reported artifacts that match.")
    why: str


class GateTasksOut(Schema):
    done: int
    total: int = Field(description="Tasks counting for the phase, cancelled ones aside.")
    open: int
    failed: list[int] = Field(description="Tasks that failed after their retries: a person must act.")


class GateOut(Schema):
    ticket_id: int
    phase: str
    terminal: bool = Field(description="Terminal phases have no gate: the ticket stays.")
    passed: bool
    tasks: GateTasksOut
    met: list[str]
    missing: list[str]
    criteria: list[GateCriterionOut]
    outputs: list[GateOutputOut]
    target_phase: str | None = Field(description="Where the ticket goes once the gate passes.")
    hold: str = Field(description="Why the ticket may not enter the target phase now (blocked, a full column).")
    blockers: list[str] = Field(description="Every reason the gate does not pass, in words; empty when it passes.")

    @staticmethod
    def from_gate(gate):
        return {
            "ticket_id": gate.ticket.pk,
            "phase": gate.phase.key,
            "terminal": gate.terminal,
            "passed": gate.passed,
            "tasks": {
                "done": gate.tasks_done,
                "total": gate.tasks_total,
                "open": gate.tasks_open,
                "failed": [task.pk for task in gate.failed],
            },
            "met": gate.met,
            "missing": gate.missing,
            "criteria": gate.criteria,
            "outputs": [
                {
                    "type": check.type,
                    "pattern": check.pattern,
                    "required": check.required,
                    "validation_rule": check.validation_rule,
                    "description": check.description,
                    "satisfied": check.satisfied,
                    "checked": check.checked,
                    "matches": check.matches,
                    "why": check.why,
                }
                for check in gate.outputs
            ],
            "target_phase": gate.target.key if gate.target else None,
            "hold": gate.hold or gate.refused,
            "blockers": gate.blockers,
        }


class ResultIn(Schema):
    summary: RequiredText
    artifacts: list[AnyJSON] = Field(
        default_factory=list,
        max_length=LIST_MAX,
        description='What the result consists of, e.g. {"type": "document", "path": "docs/answer.md"}.',
    )


class ResultOut(Schema):
    id: int
    ticket_id: int
    summary: str
    artifacts: list[Any]
    status: str
    submitted_by: str | None
    submitted_at: datetime
    reviewed_at: datetime | None
    review_note: str

    @staticmethod
    def from_result(result):
        return {
            "id": result.pk,
            "ticket_id": result.ticket_id,
            "summary": result.summary,
            "artifacts": result.artifacts,
            "status": result.status,
            "submitted_by": result.submitted_by.name if result.submitted_by_id else None,
            "submitted_at": result.submitted_at,
            "reviewed_at": result.reviewed_at,
            "review_note": result.review_note,
        }


@functools.cache
def _adapter(schema):
    return TypeAdapter(schema)


def answer_json(schema, value):
    """`value` as the API answers it under `schema`: checked and cut to the schema, then encoded as the API encodes.

    Another interface answering with this gives the same JSON as the API,
    dates and all, with no second serialisation to keep in step.
    """
    adapter = _adapter(schema)
    return json.loads(json.dumps(adapter.dump_python(adapter.validate_python(value)), cls=NinjaJSONEncoder))


def answer_schema(schema):
    """The JSON Schema of what `answer_json(schema, …)` gives."""
    return _adapter(schema).json_schema(mode="serialization")
