"""Agents and their tokens: register, authenticate, revoke, what staff trust them with, heartbeats."""

import hashlib
import secrets

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Case, Exists, OuterRef, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from phases.models import Phase

from ..errors import TransitionRefused
from ..events import ORCHESTRATOR, EventType, actor_user, event_emit
from ..models import Agent, Task
from .inputs import clean_capabilities, clean_text, resolve_phase
from .tasks import task_fail, task_release

TOKEN_PREFIX = "omoi_"


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def agent_create(*, name, boards, actor, phase=None, capabilities=None, agent_type="worker"):
    """Register an agent on `boards`; returns (agent, token). The token is shown once and stored hashed."""
    name = clean_text(name, field="name", max_length=100, required=True)
    if Agent.objects.filter(name=name).exists():
        raise ValidationError({"name": f"An agent named {name!r} already exists."})
    # At commit each event locks its board's row, in the order the events were written: several boards are
    # always written, and so locked, in id order, so two calls never cross.
    boards = sorted(boards, key=lambda board: board.pk)
    if not boards:
        raise ValidationError({"boards": "An agent works on at least one board."})
    if phase is not None and not isinstance(phase, Phase):
        try:
            phase = resolve_phase(boards[0].workflow, phase)
        except TransitionRefused as exc:
            raise ValidationError({"phase": str(exc)}) from None
    if phase is not None and any(board.workflow_id != phase.workflow_id for board in boards):
        raise ValidationError({"phase": f"Phase {phase.key} is not in the workflow of every board given."})
    token = _new_token()
    agent = Agent.objects.create(
        name=name,
        agent_type=clean_text(agent_type, field="agent_type", max_length=50) or "worker",
        phase=phase,
        capabilities=clean_capabilities(capabilities),
        token_hash=token_hash(token),
        token_prefix=token[: len(TOKEN_PREFIX) + 6],
    )
    agent.boards.set(boards)
    for board in boards:
        event_emit(
            board=board,
            type=EventType.AGENT_REGISTERED,
            entity=agent,
            payload={"name": agent.name, "phase": phase.key if phase else None, "capabilities": agent.capabilities},
            actor=actor,
        )
    return agent, token


def agent_authenticate(token):
    """The agent holding `token`, or None when it is unknown or revoked."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return Agent.objects.filter(token_hash=token_hash(token), revoked_at__isnull=True).order_by("pk").first()


@transaction.atomic
def agent_revoke(*, agent, actor):
    """Stop the agent's token from working, at once; its tasks in hand go back to the queue."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.revoked_at is None:
        agent.revoked_at = timezone.now()
        agent.status = Agent.Status.OFFLINE
        agent.save(update_fields=["revoked_at", "status"])
        in_hand = Task.objects.filter(assigned_agent=agent, status__in=[Task.Status.ASSIGNED, Task.Status.RUNNING])
        # Events written board by board in id order: their commit locks the boards in that order, as everywhere.
        for task in in_hand.select_related("ticket__board", "phase").order_by("ticket__board_id", "pk"):
            task_release(task, actor=actor, reason=f"Agent {agent.name} was revoked.")
    return agent


_UNCHANGED = object()


def _new_token():
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _locked_for_staff(agent, actor, what):
    """The agent's row, locked, once `actor` may `what`: staff users and system actors, never an agent."""
    user = actor_user(actor)
    if isinstance(actor, Agent) or (user is not None and not user.is_staff):
        raise PermissionDenied(f"Only staff may {what}.")
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.is_revoked:
        raise ValidationError(f"Agent {agent.name} is revoked; register a new agent instead.")
    return agent


@transaction.atomic
def agent_update(*, agent, actor, capabilities=None, agent_type=None, phase=_UNCHANGED):
    """Staff change what an agent is trusted with: its capabilities, type and phase (None: any phase).

    Capabilities gate which tasks an agent may claim, so an agent never sets
    its own: it reports only its status and heartbeat (`agent_heartbeat`).
    """
    agent = _locked_for_staff(agent, actor, f"change agent {agent.name}'s capabilities, type or phase")
    boards = list(agent.boards.select_related("workflow").order_by("pk"))
    changes = {}
    if capabilities is not None:
        changes["capabilities"] = clean_capabilities(capabilities)
    if agent_type is not None:
        changes["agent_type"] = clean_text(agent_type, field="agent_type", max_length=50, required=True)
    if phase is not _UNCHANGED:
        if phase is not None and not isinstance(phase, Phase):
            try:
                phase = resolve_phase(boards[0].workflow, phase) if boards else None
            except TransitionRefused as exc:
                raise ValidationError({"phase": str(exc)}) from None
        if phase is not None and any(board.workflow_id != phase.workflow_id for board in boards):
            raise ValidationError(
                {"phase": f"Phase {phase.key} is not in the workflow of every board of {agent.name}."}
            )
        changes["phase"] = phase
    diff = {name: value for name, value in changes.items() if getattr(agent, name) != value}
    if not diff:
        return agent
    for name, value in diff.items():
        setattr(agent, name, value)
    agent.save(update_fields=list(diff))
    payload = {name: (value.key if isinstance(value, Phase) else value) for name, value in diff.items()}
    for board in boards:
        event_emit(board=board, type=EventType.AGENT_UPDATED, entity=agent, payload=payload, actor=actor)
    return agent


@transaction.atomic
def agent_heartbeat(*, agent, status=None, now=None):
    """Record that the agent is alive: conditional updates, no row lock.

    An agent that was offline (taken off the queue for its silence, or that
    said so itself) is back: idle, or busy if it still holds a task, or the
    status it reports; each of its boards hears `agent.online`.
    """
    now = now or timezone.now()
    if status is not None and status not in Agent.Status.values:
        raise ValidationError({"status": f"Unknown status {status!r}; use one of {', '.join(Agent.Status.values)}."})
    came_back = 0
    if status != Agent.Status.OFFLINE:
        holding = Exists(Task.objects.in_hand().filter(assigned_agent=agent))
        back = (
            Value(status)
            if status
            else Case(When(holding, then=Value(Agent.Status.BUSY)), default=Value(Agent.Status.IDLE))
        )
        came_back = Agent.objects.filter(pk=agent.pk, status=Agent.Status.OFFLINE, revoked_at__isnull=True).update(
            status=back, last_heartbeat=now
        )
    if came_back:
        agent.status, agent.last_heartbeat = Agent.objects.values_list("status", flat=True).get(pk=agent.pk), now
        for board in agent.boards.order_by("pk"):
            event_emit(
                board=board, type=EventType.AGENT_ONLINE, entity=agent, payload={"name": agent.name}, actor=agent
            )
        return agent
    changes = {"last_heartbeat": now}
    if status is not None:
        changes["status"] = status
    Agent.objects.filter(pk=agent.pk).update(**changes)
    for name, value in changes.items():
        setattr(agent, name, value)
    return agent


def agent_silence_limit():
    """How long an agent may go without a heartbeat: OMOI_MISSED_HEARTBEATS missed, OMOI_HEARTBEAT_INTERVAL apart."""
    return settings.OMOI_HEARTBEAT_INTERVAL * settings.OMOI_MISSED_HEARTBEATS


def agents_silent(*, now):
    """Agents on the queue (not offline, not revoked) with no sign of life for longer than `agent_silence_limit`.

    The last sign of life is the last heartbeat; for an agent that never sent
    one, the assignment of the task it holds, else its registration.
    """
    latest_assignment = (
        Task.objects.in_hand().filter(assigned_agent=OuterRef("pk")).order_by("-assigned_at").values("assigned_at")[:1]
    )
    return (
        Agent.objects.filter(revoked_at__isnull=True)
        .exclude(status=Agent.Status.OFFLINE)
        .alias(seen=Coalesce("last_heartbeat", Subquery(latest_assignment), "created_at"))
        .filter(seen__lt=now - agent_silence_limit())
    )


@transaction.atomic
def agent_mark_offline(*, agent, now=None, actor=ORCHESTRATOR):
    """Take a silent agent off the queue: it goes offline and the tasks it holds go back to the queue.

    Only while the agent is still silent at `now` (`agents_silent`): a
    heartbeat that arrived meanwhile, or another orchestrator that was first,
    leaves everything as it is and False is returned. Each task it held fails
    through `task_fail` ("Agent X went silent"), so it counts as a retry and
    waits its back-off; a task out of retries stays failed. Each of the
    agent's boards hears `agent.offline`.
    """
    now = now or timezone.now()
    # The tasks first, then the agent: the order task_fail locks them in, so the two never wait on each other.
    held = list(
        Task.objects.in_hand()
        .filter(assigned_agent=agent)
        .select_for_update(of=("self",))
        .select_related("ticket__board", "phase")
        .order_by("pk")
    )
    silent = agents_silent(now=now).filter(pk=agent.pk).select_for_update().values_list("last_heartbeat", flat=True)
    if not silent:
        return False
    last_heartbeat = silent[0]
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.OFFLINE)
    agent.status = Agent.Status.OFFLINE
    error = f"Agent {agent.name} went silent: no heartbeat for {int(agent_silence_limit().total_seconds())} s."
    # Events lock their board: the boards go in id order, each with its released tasks and its notice.
    its_boards = {board.pk: board for board in agent.boards.all()}
    boards = {**{task.ticket.board_id: task.ticket.board for task in held}, **its_boards}
    for board_id in sorted(boards):
        released = [task for task in held if task.ticket.board_id == board_id]
        for task in released:
            task_fail(task=task, agent=agent, attempt=task.attempt, error=error, now=now, actor=actor, locked=True)
        if board_id in its_boards:
            event_emit(
                board=boards[board_id],
                type=EventType.AGENT_OFFLINE,
                entity=agent,
                payload={
                    "name": agent.name,
                    "last_heartbeat": last_heartbeat.isoformat() if last_heartbeat else None,
                    "tasks": [task.pk for task in released],
                },
                actor=actor,
            )
    return True


@transaction.atomic
def agent_token_rotate(*, agent, actor):
    """Give the agent a new token and return it; the old one stops working at once. Staff and system actors only.

    The token is stored hashed, so a lost token cannot be shown again: this is
    how one is replaced (and how `make run` hands its demo agents theirs).
    """
    agent = _locked_for_staff(agent, actor, f"issue a new token for agent {agent.name}")
    token = _new_token()
    agent.token_hash = token_hash(token)
    agent.token_prefix = token[: len(TOKEN_PREFIX) + 6]
    agent.save(update_fields=["token_hash", "token_prefix"])
    return agent, token
