"""Recording what an agent found, branching the work into a new task, and resolving: each in one transaction."""

import json

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from board.errors import Refused
from board.events import EventType, actor_label, actor_user, event_emit, events_together
from board.models import Agent, Board, Priority, Task
from board.services import task_create

from .models import Discovery

DESCRIPTION_MAX = 20_000
REASON_MAX = 20_000
# Serialised size of the metadata: an agent's context, not a file store.
METADATA_MAX_BYTES = 64 * 1024
METADATA_MAX_DEPTH = 32
# How much of a description goes into an event payload: enough for a tooltip, not a copy of the row.
SUMMARY_LENGTH = 200


class DiscoveryStateError(Refused):
    """A change the discovery's resolution status does not allow; the message says why."""


def _clean_type(discovery_type):
    if discovery_type not in Discovery.Type.values:
        raise ValidationError(
            {
                "discovery_type": (
                    f"Unknown discovery type {discovery_type!r}; use one of {', '.join(Discovery.Type.values)}."
                )
            }
        )
    return discovery_type


def _required_text(value, *, field, max_length):
    """Text stored exactly as given: blank is refused, but surrounding spaces are the sender's to keep."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError({field: "This field cannot be blank."})
    if len(value) > max_length:
        raise ValidationError({field: f"At most {max_length} characters (this has {len(value)})."})
    return value


def _depth(value):
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _clean_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValidationError({"metadata": "Metadata is a JSON object."})
    if _depth(metadata) > METADATA_MAX_DEPTH:
        raise ValidationError({"metadata": f"Metadata is nested at most {METADATA_MAX_DEPTH} levels deep."})
    try:
        size = len(json.dumps(metadata, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise ValidationError({"metadata": f"Metadata must be plain JSON: {exc}"}) from None
    if size > METADATA_MAX_BYTES:
        raise ValidationError({"metadata": f"At most {METADATA_MAX_BYTES} bytes of metadata (this has {size})."})
    return metadata


def _summary(text):
    return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 1] + "…"


@transaction.atomic
def discovery_record(
    *, source_task, discovery_type, description, actor, priority_boost=False, metadata=None, event_payload=None
):
    """Record what was found while doing `source_task`; the work does not branch.

    `event_payload` adds keys to the event's payload (the rescue says it was one); it never replaces the event's own.
    """
    return _discovery_insert(
        source_task=source_task,
        discovery_type=_clean_type(discovery_type),
        description=_required_text(description, field="description", max_length=DESCRIPTION_MAX),
        actor=actor,
        priority_boost=priority_boost,
        metadata=_clean_metadata(metadata),
        event_payload=event_payload,
    )


def _discovery_insert(*, source_task, discovery_type, description, actor, priority_boost, metadata, event_payload):
    """The discovery's row and its event, from checked input, in the caller's transaction."""
    discovery = Discovery.objects.create(
        source_task=source_task,
        discovery_type=discovery_type,
        description=description,
        discovered_by=actor_label(actor),
        discovered_by_agent=actor if isinstance(actor, Agent) else None,
        priority_boost=bool(priority_boost),
        metadata=metadata,
    )
    event_emit(
        board=source_task.ticket.board,
        type=EventType.DISCOVERY_RECORDED,
        entity=discovery,
        payload={
            **(event_payload or {}),
            "source_task": source_task.pk,
            "ticket": source_task.ticket_id,
            "phase": source_task.phase.key,
            "discovery_type": discovery.discovery_type,
            "summary": _summary(discovery.description),
            "priority_boost": discovery.priority_boost,
        },
        actor=actor,
    )
    return discovery


@transaction.atomic
def discovery_branch(
    *,
    source_task,
    discovery_type,
    description,
    actor,
    phase=None,
    title=None,
    task_description=None,
    priority=None,
    priority_boost=False,
    required_capabilities=None,
    metadata=None,
    event_payload=None,
):
    """Record a discovery and spawn exactly one task for it, in any phase of the ticket's workflow.

    The allowed transitions do not apply: they govern where a ticket may move,
    and a discovery branches the work wherever it is needed (the source task's
    phase when no `phase` is given). The new task's parent is the source task.
    Its priority is `priority` when given, else the source task's, one level
    higher with `priority_boost`. `event_payload` adds keys to each of the three events' payloads.
    Returns (discovery, task).
    """
    # Its three events are written together, in one statement, as the branch ends.
    with events_together():
        # The discovery is written without a savepoint of its own (nor does task_create take one): this
        # function's transaction is the one that counts, and a refused task undoes the discovery with it.
        discovery = _discovery_insert(
            source_task=source_task,
            discovery_type=_clean_type(discovery_type),
            description=_required_text(description, field="description", max_length=DESCRIPTION_MAX),
            actor=actor,
            priority_boost=priority_boost,
            metadata=_clean_metadata(metadata),
            event_payload=event_payload,
        )
        if priority is None:
            priority = Priority.raised(source_task.priority) if priority_boost else source_task.priority
        if title is None or not str(title).strip():
            title = f"{discovery.get_discovery_type_display()}: {description.strip().splitlines()[0]}"
            title = title if len(title) <= 200 else title[:199] + "…"
        task = task_create(
            ticket=source_task.ticket,
            title=title,
            actor=actor,
            phase=phase if phase is not None else source_task.phase,
            description=description if task_description is None else task_description,
            task_type=f"discovery_{discovery.discovery_type}",
            priority=priority,
            boost=priority_boost,
            required_capabilities=required_capabilities,
            parent=source_task,
            event_payload={**(event_payload or {}), "discovery": discovery.pk},
        )
        discovery.spawned_tasks.add(task)
        event_emit(
            board=source_task.ticket.board,
            type=EventType.DISCOVERY_BRANCH_CREATED,
            entity=discovery,
            payload={
                **(event_payload or {}),
                "source_task": source_task.pk,
                "spawned_task": task.pk,
                "ticket": task.ticket_id,
                "from_phase": source_task.phase.key,
                "spawn_phase": task.phase.key,
                "discovery_type": discovery.discovery_type,
                "summary": _summary(discovery.description),
                "priority": task.priority,
            },
            actor=actor,
        )
    return discovery, task


def _check_may_resolve(discovery, actor):
    """An agent closes only what it found or is working on; the board's people close anything on their board."""
    if isinstance(actor, Agent):
        if discovery.discovered_by_agent_id == actor.pk:
            return
        holds = discovery.spawned_tasks.filter(
            assigned_agent=actor, status__in=[Task.Status.ASSIGNED, Task.Status.RUNNING]
        ).exists()
        if not holds:
            raise PermissionDenied(
                f"Agent {actor.name} may resolve only discoveries it recorded or whose spawned task it holds; "
                f"discovery {discovery.pk} was recorded by {discovery.discovered_by}."
            )
        return
    user = actor_user(actor)
    if (
        user is not None
        and not Board.objects.visible_to(user).filter(pk=discovery.source_task.ticket.board_id).exists()
    ):
        raise PermissionDenied(f"{user.get_username()} is not a member of the board of discovery {discovery.pk}.")


@transaction.atomic
def discovery_resolve(*, discovery, status, reason, actor):
    """Close an open discovery as `resolved` or `invalid`, saying why; a closed one stays closed.

    An agent may close a discovery it recorded, or one whose spawned task it holds; members and staff
    close any discovery on their boards (PermissionDenied otherwise).
    """
    closing = (Discovery.Resolution.RESOLVED, Discovery.Resolution.INVALID)
    if status not in closing:
        raise ValidationError({"status": f"Unknown status {status!r}; use one of {', '.join(closing)}."})
    reason = _required_text(reason, field="reason", max_length=REASON_MAX)
    discovery = (
        Discovery.objects.select_for_update(of=("self",))
        .select_related("source_task__ticket__board")
        .get(pk=discovery.pk)
    )
    _check_may_resolve(discovery, actor)
    if discovery.resolution_status != Discovery.Resolution.OPEN:
        raise DiscoveryStateError(
            f"Discovery {discovery.pk} is already {discovery.resolution_status} "
            f"(by {discovery.resolved_by or 'unknown'}); only an open discovery can be resolved."
        )
    discovery.resolution_status = status
    discovery.resolution_note = reason
    discovery.resolved_by = actor_label(actor)
    discovery.resolved_by_user = actor_user(actor)
    discovery.resolved_at = timezone.now()
    discovery.save(
        update_fields=["resolution_status", "resolution_note", "resolved_by", "resolved_by_user", "resolved_at"]
    )
    event_emit(
        board=discovery.source_task.ticket.board,
        type=EventType.DISCOVERY_RESOLVED,
        entity=discovery,
        payload={
            "source_task": discovery.source_task_id,
            "ticket": discovery.source_task.ticket_id,
            "status": status,
            "reason": _summary(reason),
        },
        actor=actor,
    )
    return discovery
