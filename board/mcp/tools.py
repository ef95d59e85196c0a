"""The board's MCP tools: who am I, the task a holder works on, tickets, gates and phases.

Each is the API operation of the same name by another road (see `toolbox`):
its arguments are the API's body schema plus the ids the API takes in its
path, and it answers what the API answers.
"""

from typing import Annotated

from ninja import Schema
from pydantic import ConfigDict, Field

from ..api.agents import agent_me
from ..api.phases import agent_phases, instructions_out
from ..api.schemas import (
    AgentOut,
    BoardSlug,
    ClaimIn,
    CommentIn,
    CommentOut,
    GateOut,
    HeartbeatIn,
    InstructionsOut,
    PhaseOut,
    TaskCompleteIn,
    TaskCreateIn,
    TaskFailIn,
    TaskOut,
    TaskStartIn,
    TicketDetailOut,
    TicketOut,
    TransitionIn,
)
from ..api.tasks import task_claimed, task_created, task_report
from ..api.tickets import ticket_commented, ticket_detail, ticket_gate_out, ticket_transitioned
from ..selectors import agent_task
from ..services import (
    agent_heartbeat,
    task_complete,
    task_fail,
    task_start,
)
from .toolbox import Toolbox

toolbox = Toolbox()

# The ids the API takes in its paths, bounded as the bodies bound theirs.
ObjectId = Annotated[int, Field(gt=0, lt=2**53)]
# Arguments are refused when unknown: a misspelt argument silently ignored is a bug an agent cannot see.
STRICT = ConfigDict(extra="forbid")


class TaskIdIn(Schema):
    model_config = STRICT
    task_id: ObjectId


class TicketIdIn(Schema):
    model_config = STRICT
    ticket_id: ObjectId


class ClaimArgs(ClaimIn):
    model_config = STRICT


class StartArgs(TaskStartIn):
    model_config = STRICT
    task_id: ObjectId


class CompleteArgs(TaskCompleteIn):
    model_config = STRICT
    task_id: ObjectId


class FailArgs(TaskFailIn):
    model_config = STRICT
    task_id: ObjectId


class HeartbeatArgs(HeartbeatIn):
    model_config = STRICT


class CreateTaskArgs(TaskCreateIn):
    model_config = STRICT


class CommentArgs(CommentIn):
    model_config = STRICT
    ticket_id: ObjectId


class MoveArgs(TransitionIn):
    model_config = STRICT
    ticket_id: ObjectId


class PhasesArgs(Schema):
    model_config = STRICT
    board: BoardSlug | None = Field(default=None, description="Only the phases of this board's workflow.")


class TaskWithInstructionsOut(Schema):
    task: TaskOut
    instructions: InstructionsOut


@toolbox.tool(title="Who am I", answer=AgentOut, read_only=True)
def whoami(agent, arguments):
    """The calling agent (the holder of the token): its name, status, phase, capabilities and boards."""
    return agent_me(agent)


@toolbox.tool(
    title="Claim the next task",
    arguments=ClaimArgs,
    answer=TaskOut,
    empty="No task is ready for this agent now; try again later.",
)
def claim_next_task(agent, arguments):
    """The task this agent holds, if any (also one the orchestrator assigned to it), else claim the best ready one.

    Each claim is a new attempt: send the task's `attempt` back with start, complete and fail.
    """
    return task_claimed(agent, arguments)


@toolbox.tool(
    title="Get a task with its phase instructions", arguments=TaskIdIn, answer=TaskWithInstructionsOut, read_only=True
)
def get_task(agent, arguments):
    """A task on this agent's boards, with the instructions of its phase (what to do, what done means) in Markdown."""
    task = agent_task(agent, arguments.task_id)
    return {"task": TaskOut.from_task(task), "instructions": instructions_out(task.phase)}


@toolbox.tool(title="Start a task", arguments=StartArgs, answer=TaskOut)
def start_task(agent, arguments):
    """Start a task this agent holds (claimed or assigned)."""
    return task_report(agent, arguments.task_id, task_start, attempt=arguments.attempt)


@toolbox.tool(title="Heartbeat", arguments=HeartbeatArgs, answer=AgentOut, idempotent=True)
def heartbeat(agent, arguments):
    """Tell the orchestrator this agent is alive, optionally with its status (idle, busy or offline)."""
    agent_heartbeat(agent=agent, status=arguments.status)
    return agent_me(agent)


@toolbox.tool(title="Complete a task", arguments=CompleteArgs, answer=TaskOut, destructive=True)
def complete_task(agent, arguments):
    """Complete a task this agent holds, with its result, artifacts and the phase's completion criteria it met."""
    return task_report(
        agent,
        arguments.task_id,
        task_complete,
        result=arguments.result,
        artifacts=arguments.artifacts,
        completed_criteria=arguments.completed_criteria,
        attempt=arguments.attempt,
    )


@toolbox.tool(title="Fail a task", arguments=FailArgs, answer=TaskOut, destructive=True)
def fail_task(agent, arguments):
    """Report that a task this agent holds failed: it is retried later when `retryable` and retries are left."""
    return task_report(
        agent,
        arguments.task_id,
        task_fail,
        error=arguments.error,
        retryable=arguments.retryable,
        attempt=arguments.attempt,
    )


@toolbox.tool(title="Create a task", arguments=CreateTaskArgs, answer=TaskOut)
def create_task(agent, arguments):
    """Create a task on a ticket of this agent's boards, in any phase of the ticket's workflow."""
    return task_created(agent, arguments)


@toolbox.tool(title="Comment on a ticket", arguments=CommentArgs, answer=CommentOut)
def comment_on_ticket(agent, arguments):
    """Add a comment to a ticket on this agent's boards; the body is stored as given (Markdown)."""
    return ticket_commented(agent, arguments.ticket_id, arguments)


@toolbox.tool(title="Get a ticket", arguments=TicketIdIn, answer=TicketDetailOut, read_only=True)
def get_ticket(agent, arguments):
    """A ticket on this agent's boards with its tasks, phase history and comments."""
    return ticket_detail(agent, arguments.ticket_id)


@toolbox.tool(title="Move a ticket", arguments=MoveArgs, answer=TicketOut, destructive=True)
def move_ticket(agent, arguments):
    """Move a ticket to another phase, with a reason; the workflow's transitions and column limits apply."""
    return ticket_transitioned(agent, arguments.ticket_id, arguments)


@toolbox.tool(title="The gate of a ticket", arguments=TicketIdIn, answer=GateOut, read_only=True)
def get_ticket_gate(agent, arguments):
    """The ticket's phase gate: which criteria and outputs are met or missing, where it goes next, what holds it."""
    return ticket_gate_out(agent, arguments.ticket_id)


@toolbox.tool(title="List phases", arguments=PhasesArgs, answer=list[PhaseOut], read_only=True)
def list_phases(agent, arguments):
    """The phases of the workflows of this agent's boards (or of one board), with their prompts and done criteria."""
    return agent_phases(agent, arguments.board)
