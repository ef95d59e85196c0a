"""Task endpoints: claim the next ready task, create one in any phase, and the holder's start, complete and fail.

An agent holds one task at a time: `/tasks/next` answers the task it holds,
if any (also one the orchestrator assigned to it), else claims the best ready
one. Each claim is a new attempt; start, complete and fail may say which
attempt they report on, and a superseded one is refused (409). Those three
find the task with its row locked, in the transaction their service then
works in, so it is read once.
"""

from django.db import transaction
from ninja import Router
from ninja.responses import Status

from ..selectors import agent_board, agent_task, agent_tasks, agent_ticket
from ..services import task_claim, task_complete, task_create, task_fail, task_start
from .schemas import ClaimIn, TaskCompleteIn, TaskCreateIn, TaskFailIn, TaskOut, TaskStartIn

router = Router(tags=["tasks"])


@router.post(
    "/next", response={200: TaskOut, 204: None}, summary="The task the agent holds, else claim the best ready one"
)
def claim_next(request, payload: ClaimIn):
    answer = task_claimed(request.auth, payload)
    return Status(204, None) if answer is None else answer


def task_claimed(agent, payload):
    """The task the agent holds or now claims (ClaimIn), as TaskOut answers it; None when there is none."""
    board = agent_board(agent, payload.board) if payload.board else None
    task = task_claim(agent=agent, board=board)
    return None if task is None else TaskOut.from_task(task)


@router.post("", response={201: TaskOut}, summary="Create a task in any phase of the ticket's workflow")
def create_task(request, payload: TaskCreateIn):
    return Status(201, task_created(request.auth, payload))


def task_created(agent, payload):
    """A new task from TaskCreateIn, on a ticket of the agent's boards, as TaskOut answers it."""
    ticket = agent_ticket(agent, payload.ticket_id)
    dependencies = agent_tasks(agent, payload.dependencies, field="dependencies")
    parent = agent_tasks(agent, [payload.parent_task_id], field="parent_task_id")[0] if payload.parent_task_id else None
    task = task_create(
        ticket=ticket,
        title=payload.title,
        actor=agent,
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
    return TaskOut.from_task(task, dependencies=sorted(dep.pk for dep in dependencies))


@router.get("/{int:task_id}", response=TaskOut, summary="A task")
def get_task(request, task_id: int):
    return TaskOut.from_task(agent_task(request.auth, task_id))


@router.post("/{int:task_id}/start", response=TaskOut, summary="Start a task the agent holds")
def start_task(request, task_id: int, payload: TaskStartIn | None = None):
    attempt = payload.attempt if payload is not None else None
    return task_report(request.auth, task_id, task_start, attempt=attempt)


@router.post("/{int:task_id}/complete", response=TaskOut, summary="Complete a task the agent holds")
def complete_task(request, task_id: int, payload: TaskCompleteIn):
    return task_report(
        request.auth,
        task_id,
        task_complete,
        result=payload.result,
        artifacts=payload.artifacts,
        completed_criteria=payload.completed_criteria,
        attempt=payload.attempt,
    )


@router.post("/{int:task_id}/fail", response=TaskOut, summary="Report a failure of a task the agent holds")
def fail_task(request, task_id: int, payload: TaskFailIn):
    return task_report(
        request.auth, task_id, task_fail, error=payload.error, retryable=payload.retryable, attempt=payload.attempt
    )


def task_report(agent, task_id, report, **arguments):
    """The holder's `report` (task_start, task_complete or task_fail) on the task, answered as the task.

    The task is found on the agent's boards with its row locked, in the
    transaction the service then works in.
    """
    with transaction.atomic():
        task = agent_task(agent, task_id, for_update=True)
        task = report(task=task, agent=agent, locked=True, **arguments)
    return TaskOut.from_task(task)
