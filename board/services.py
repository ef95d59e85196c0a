"""Changes to boards and tickets: each checks its rules, writes its rows and its event in one transaction."""

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from phases.models import BoardColumn, Phase

from .events import actor_label, actor_user, event_emit
from .models import Agent, IdempotencyRecord, PhaseHistory, Priority, Task, Ticket, TicketComment

# Room between neighbouring cards, so most moves rewrite one row.
POSITION_GAP = 1024


class TransitionRefused(Exception):
    """A phase change the rules do not allow; the message says why, for the person or agent who asked."""


def _resolve_phase(workflow, phase):
    """A phase of `workflow`, given as a Phase or its key."""
    if isinstance(phase, Phase):
        if phase.workflow_id != workflow.pk:
            raise TransitionRefused(f"Phase {phase.key} belongs to another workflow than {workflow.name}.")
        return phase
    try:
        return Phase.objects.get(workflow=workflow, key=phase)
    except Phase.DoesNotExist:
        raise TransitionRefused(f"Unknown phase {phase!r} in workflow {workflow.name}.") from None


def _clean_text(value, *, field, max_length=None, required=False):
    text = (value or "").strip()
    if required and not text:
        raise ValidationError({field: "This field cannot be blank."})
    if max_length and len(text) > max_length:
        raise ValidationError({field: f"At most {max_length} characters (this has {len(text)})."})
    return text


def _clean_priority(priority):
    if priority not in Priority.values:
        raise ValidationError({"priority": f"Unknown priority {priority!r}; use one of {', '.join(Priority.values)}."})
    return priority


@transaction.atomic
def ticket_create(*, board, title, actor, description="", priority=Priority.MEDIUM, phase=None):
    """Create a ticket at the end of its column, in `phase` or the workflow's first phase."""
    title = _clean_text(title, field="title", max_length=200, required=True)
    priority = _clean_priority(priority)
    if phase is None:
        phase = board.workflow.phases.in_order().first()
        if phase is None:
            raise ValidationError({"phase": f"Workflow {board.workflow.name} has no phases."})
    else:
        try:
            phase = _resolve_phase(board.workflow, phase)
        except TransitionRefused as exc:
            raise ValidationError({"phase": str(exc)}) from None

    column = _column_of(phase)
    try:
        _wip_check(board_id=board.pk, column=column, force=False, forcing_allowed=None)
    except TransitionRefused as exc:
        raise ValidationError({"phase": str(exc)}) from None
    ticket = Ticket.objects.create(
        board=board,
        title=title,
        description=description or "",
        priority=priority,
        phase=phase,
        position=_position_after_last(board_id=board.pk, column_phase_ids=_phase_ids(column, phase)),
        created_by=actor_user(actor),
    )
    PhaseHistory.objects.create(
        ticket=ticket,
        to_phase=phase,
        to_key=phase.key,
        reason="Ticket created",
        actor=actor_label(actor),
        user=actor_user(actor),
    )
    event_emit(
        board=board,
        type="ticket.created",
        entity=ticket,
        payload={"title": ticket.title, "priority": ticket.priority, "phase": phase.key, "position": ticket.position},
        actor=actor,
    )
    return ticket


@transaction.atomic
def ticket_update(*, ticket, actor, **changes):
    """Change a ticket's title, description, priority or blocked state; phases change only by transition."""
    editable = {"title", "description", "priority", "is_blocked", "blocked_reason"}
    unknown = set(changes) - editable
    if unknown:
        raise ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed here."))
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)

    if "title" in changes:
        changes["title"] = _clean_text(changes["title"], field="title", max_length=200, required=True)
    if "priority" in changes:
        changes["priority"] = _clean_priority(changes["priority"])
    if "description" in changes:
        changes["description"] = changes["description"] or ""
    blocked = changes.get("is_blocked", ticket.is_blocked)
    if "blocked_reason" in changes or "is_blocked" in changes:
        reason = _clean_text(changes.get("blocked_reason", ticket.blocked_reason), field="blocked_reason")
        if blocked and not reason:
            raise ValidationError({"blocked_reason": "Say what blocks the ticket."})
        changes["blocked_reason"] = reason if blocked else ""

    diff = {name: [getattr(ticket, name), value] for name, value in changes.items() if getattr(ticket, name) != value}
    if not diff:
        return ticket
    for name, (_, value) in diff.items():
        setattr(ticket, name, value)
    ticket.version += 1
    ticket.save(update_fields=[*diff, "version", "updated_at"])
    event_emit(
        board=ticket.board,
        type="ticket.updated",
        entity=ticket,
        payload={"changes": diff, "phase": ticket.phase.key, "version": ticket.version},
        actor=actor,
    )
    return ticket


def _column_of(phase):
    """The board column showing `phase` (None when a hand-edited workflow left it out), locked for the move.

    Locking the column row serialises every move into it, so the WIP count
    read below cannot be overtaken by a concurrent drop.
    """
    return BoardColumn.objects.select_for_update().filter(phases=phase).first()


def _phase_ids(column, phase):
    return list(column.phases.values_list("pk", flat=True)) if column else [phase.pk]


def _position_after_last(*, board_id, column_phase_ids, exclude=None):
    cards = Ticket.objects.filter(board_id=board_id, phase_id__in=column_phase_ids)
    if exclude is not None:
        cards = cards.exclude(pk=exclude)
    return (cards.aggregate(Max("position"))["position__max"] or 0) + POSITION_GAP


def _wip_check(*, board_id, column, force, forcing_allowed):
    """Refuse entering a full `block` column unless forced; describe the WIP state for the event."""
    if column is None or column.wip_limit is None:
        return None
    count = Ticket.objects.filter(board_id=board_id, phase__columns=column).count()
    wip = {"column": column.key, "count": count + 1, "limit": column.wip_limit, "policy": column.wip_policy}
    if count < column.wip_limit:
        return wip
    if column.wip_policy == BoardColumn.WipPolicy.BLOCK:
        if not force:
            raise TransitionRefused(f"{column.name} is full ({count}/{column.wip_limit}).")
        forcing_allowed(f"{column.name} is full ({count}/{column.wip_limit})")
        wip["overridden"] = True
    wip["exceeded"] = True
    return wip


def _forcing_rule(actor, reason):
    """Who may force a refused move: staff users with a reason (override), system processes (jump)."""

    def allowed(what):
        user = actor_user(actor)
        if user is not None and not user.is_staff:
            raise TransitionRefused(f"{what}; only staff may force it.")
        if user is None and not isinstance(actor, str):
            raise TransitionRefused(f"{what}; {actor_label(actor)} may not force it.")
        if not reason:
            raise TransitionRefused(f"{what}; a forced move needs a written reason.")

    return allowed


def _position_between(*, ticket, column_phase_ids, previous_id, next_id):
    """A position between the given neighbours in the column, renumbering the column if the gap is used up.

    Neighbours come from the client and may be stale: one that is no longer in
    the column is ignored, and the real neighbour of the one kept is used.
    """
    cards = Ticket.objects.filter(board_id=ticket.board_id, phase_id__in=column_phase_ids).exclude(pk=ticket.pk)
    given = {card.pk: card.position for card in cards.filter(pk__in=[i for i in (previous_id, next_id) if i])}
    if previous_id in given:
        low = given[previous_id]
        following = cards.filter(position__gt=low).order_by("position", "pk").values_list("position", flat=True)
        high = following.first()
    elif next_id in given:
        high = given[next_id]
        preceding = cards.filter(position__lt=high).order_by("-position", "-pk").values_list("position", flat=True)
        low = preceding.first()
    else:
        return _position_after_last(board_id=ticket.board_id, column_phase_ids=column_phase_ids, exclude=ticket.pk)
    if high is None:
        return low + POSITION_GAP
    if low is None:
        low = high - 2 * POSITION_GAP
    if high - low > 1:
        return (low + high) // 2
    # The gap is used up: spread this column out again, leaving room where the card goes.
    # One statement, however long the column: row by row, a 5,000-card column took seconds
    # under the column lock.
    insert_at = cards.filter(position__lt=high).count()
    _renumber(cards, insert_at)
    return (insert_at + 1) * POSITION_GAP


def _renumber(cards, insert_at):
    """Positions 1, 2, 3… × POSITION_GAP in the current order, skipping one slot after the first `insert_at`."""
    inner, params = cards.order_by().values("pk").query.sql_with_params()
    table = connection.ops.quote_name(Ticket._meta.db_table)
    order = f"ORDER BY {connection.ops.quote_name('position')}, {connection.ops.quote_name('id')}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET position = (n.rn + CASE WHEN n.rn > %s THEN 1 ELSE 0 END) * %s "
            f"FROM (SELECT id, ROW_NUMBER() OVER ({order}) AS rn FROM {table} WHERE id IN ({inner})) AS n "
            f"WHERE {table}.id = n.id",
            [insert_at, POSITION_GAP, *params],
        )


def _not_allowed(from_phase, target):
    allowed = ", ".join(t.name for t in from_phase.allowed_transitions.all()) or "nowhere"
    return f"{from_phase.name} cannot move to {target}; from {from_phase.name} a ticket may move to: {allowed}"


def _lock_columns(*, column, phase, from_phase_id):
    """Lock the target column and the ticket's current one, in id order; return the target (None: none shows it).

    Columns are locked before the ticket's row, on every path: a renumber
    rewrites every card of its column, so a mover holding its own card while
    waiting for that column would deadlock with the one renumbering it. With
    the source column locked too, nobody else can be moving a card out of the
    column being renumbered.
    """

    def showing(phase_id):
        return Exists(BoardColumn.phases.through.objects.filter(boardcolumn_id=OuterRef("pk"), phase_id=phase_id))

    target = Q(pk=column.pk) if column is not None else Q(showing(phase.pk))
    locked = BoardColumn.objects.select_for_update().filter(target | Q(showing(from_phase_id))).order_by("pk")
    if column is not None:
        return next((found for found in locked if found.pk == column.pk), None)
    return next((found for found in locked.annotate(is_target=showing(phase.pk)) if found.is_target), None)


def _move(*, ticket, column, phase, actor, previous_id=None, next_id=None, reason="", force=False, transition=False):
    reason = (reason or "").strip()
    # Lock order: columns, then the ticket, then the board row (event_emit, last).
    seen = Ticket.objects.select_related("board__workflow").get(pk=ticket.pk)
    workflow = seen.board.workflow
    if phase is not None:
        phase = _resolve_phase(workflow, phase)
    if column is not None and column.workflow_id != workflow.pk:
        raise TransitionRefused(f"Column {column.name} belongs to another workflow than {workflow.name}.")
    column = _lock_columns(column=column, phase=phase, from_phase_id=seen.phase_id)
    ticket = Ticket.objects.select_for_update().get(pk=ticket.pk)
    if ticket.phase_id != seen.phase_id:
        # Moved by someone else between the read and the lock: the columns locked are no longer its own.
        raise TransitionRefused(f"“{ticket.title}” was moved by someone else meanwhile; look again and retry.")
    ticket.board = seen.board
    from_phase = Phase.objects.with_transitions().get(pk=ticket.phase_id)
    if transition and phase == from_phase:
        raise TransitionRefused(f"The ticket is already in {from_phase.name}.")
    column_phases = list(column.phases.in_order()) if column else [phase]
    forcing_allowed = _forcing_rule(actor, reason)

    if phase is None:
        if from_phase in column_phases:
            phase = from_phase
        else:
            # A column showing several phases takes the ticket into the first one it may enter.
            phase = next((p for p in column_phases if from_phase.can_transition_to(p)), None)
            if phase is None:
                what = _not_allowed(from_phase, column.name)
                if not force:
                    raise TransitionRefused(f"{what}.")
                forcing_allowed(what)
                phase = column_phases[0]
    elif phase not in column_phases:
        raise TransitionRefused(f"{phase.name} is not shown in column {column.name}.")

    kind = PhaseHistory.Kind.NORMAL
    if phase != from_phase and not from_phase.can_transition_to(phase):
        what = _not_allowed(from_phase, phase.name)
        if not force:
            raise TransitionRefused(f"{what}.")
        forcing_allowed(what)
        kind = PhaseHistory.Kind.OVERRIDE if actor_user(actor) else PhaseHistory.Kind.JUMP

    entering = from_phase not in column_phases
    if phase == from_phase and not (previous_id or next_id):
        return ticket  # dropped back where it was
    wip = (
        _wip_check(board_id=ticket.board_id, column=column, force=force, forcing_allowed=forcing_allowed)
        if entering
        else None
    )
    if wip and wip.get("overridden"):
        kind = PhaseHistory.Kind.OVERRIDE if actor_user(actor) else PhaseHistory.Kind.JUMP

    if entering or previous_id or next_id:
        ticket.position = _position_between(
            ticket=ticket, column_phase_ids=[p.pk for p in column_phases], previous_id=previous_id, next_id=next_id
        )
    ticket.version += 1
    payload = {
        "column": column.key if column else None,
        "position": ticket.position,
        "previous_id": previous_id,
        "next_id": next_id,
        "version": ticket.version,
    }
    if phase == from_phase:
        ticket.save(update_fields=["position", "version", "updated_at"])
        event_emit(board=ticket.board, type="ticket.moved", entity=ticket, payload=payload, actor=actor)
        return ticket

    ticket.phase = phase
    ticket.save(update_fields=["phase", "position", "version", "updated_at"])
    PhaseHistory.objects.create(
        ticket=ticket,
        from_phase=from_phase,
        to_phase=phase,
        from_key=from_phase.key,
        to_key=phase.key,
        kind=kind,
        reason=reason,
        actor=actor_label(actor),
        user=actor_user(actor),
    )
    payload.update({"from": from_phase.key, "to": phase.key, "kind": kind, "reason": reason})
    if wip:
        payload["wip"] = wip
    event_emit(board=ticket.board, type="ticket.transitioned", entity=ticket, payload=payload, actor=actor)
    return ticket


@transaction.atomic
def ticket_transition(*, ticket, to_phase, actor, reason="", force=False):
    """Move a ticket to another phase of its workflow, at the end of that phase's column.

    This and `ticket_move` are the paths every move takes: an allowed
    transition into a column with room is recorded as `normal`. A transition
    the workflow does not allow, or a drop into a full `block` column, is
    refused with TransitionRefused, unless `force` is given with a written
    reason by a staff user (`override`) or by a system process named by a
    string such as "orchestrator" (`jump`).
    """
    return _move(ticket=ticket, column=None, phase=to_phase, actor=actor, reason=reason, force=force, transition=True)


@transaction.atomic
def ticket_move(*, ticket, column, actor, previous_id=None, next_id=None, phase=None, reason="", force=False):
    """Drop a ticket into `column` between the cards `previous_id` (above) and `next_id` (below).

    Within its own column this reorders; into another column it is a phase
    transition under the same rules as `ticket_transition`, WIP limits
    included. A column showing several phases takes the ticket into the
    first one it may enter, or into `phase` when given.
    """
    return _move(
        ticket=ticket,
        column=column,
        phase=phase,
        actor=actor,
        previous_id=previous_id,
        next_id=next_id,
        reason=reason,
        force=force,
    )


# Agents and tasks


class TaskStateError(Exception):
    """A task change its current state or holder does not allow; the message says why."""


TOKEN_PREFIX = "omoi_"
PRIORITY_SCORE = {Priority.LOW: 1.0, Priority.MEDIUM: 2.0, Priority.HIGH: 3.0, Priority.CRITICAL: 4.0}


def token_hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def _clean_capabilities(capabilities, *, field="capabilities"):
    if capabilities is None:
        return []
    if isinstance(capabilities, str):
        capabilities = capabilities.split(",")
    cleaned = []
    for item in capabilities:
        if not isinstance(item, str) or not item.strip() or len(item.strip()) > 64:
            raise ValidationError({field: f"Each capability is a name of 1 to 64 characters, not {item!r}."})
        if item.strip() not in cleaned:
            cleaned.append(item.strip())
    if len(cleaned) > 50:
        raise ValidationError({field: "At most 50 capabilities."})
    return cleaned


@transaction.atomic
def agent_create(*, name, boards, actor, phase=None, capabilities=None, agent_type="worker"):
    """Register an agent on `boards`; returns (agent, token). The token is shown once and stored hashed."""
    name = _clean_text(name, field="name", max_length=100, required=True)
    if Agent.objects.filter(name=name).exists():
        raise ValidationError({"name": f"An agent named {name!r} already exists."})
    # Events lock their board row: several boards are always locked in id order, so two calls never cross.
    boards = sorted(boards, key=lambda board: board.pk)
    if not boards:
        raise ValidationError({"boards": "An agent works on at least one board."})
    if phase is not None and not isinstance(phase, Phase):
        phase = _resolve_phase(boards[0].workflow, phase) if boards else None
    if phase is not None and any(board.workflow_id != phase.workflow_id for board in boards):
        raise ValidationError({"phase": f"Phase {phase.key} is not in the workflow of every board given."})
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    agent = Agent.objects.create(
        name=name,
        agent_type=_clean_text(agent_type, field="agent_type", max_length=50) or "worker",
        phase=phase,
        capabilities=_clean_capabilities(capabilities),
        token_hash=token_hash(token),
        token_prefix=token[: len(TOKEN_PREFIX) + 6],
    )
    agent.boards.set(boards)
    for board in boards:
        event_emit(
            board=board,
            type="agent.registered",
            entity=agent,
            payload={"name": agent.name, "phase": phase.key if phase else None, "capabilities": agent.capabilities},
            actor=actor,
        )
    return agent, token


def idempotency_prune(*, now=None, batch=1000):
    """Delete up to `batch` Idempotency-Key records older than OMOI_IDEMPOTENCY_TTL, oldest first; return how many.

    A retry after that long is a new request. Fewer than `batch` deleted means
    nothing is left to prune.
    """
    expired = (now or timezone.now()) - settings.OMOI_IDEMPOTENCY_TTL
    oldest = IdempotencyRecord.objects.filter(created_at__lt=expired).order_by("created_at")
    ids = list(oldest.values_list("pk", flat=True)[:batch])
    return IdempotencyRecord.objects.filter(pk__in=ids).delete()[0] if ids else 0


def agent_authenticate(token):
    """The agent holding `token`, or None when it is unknown or revoked."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    return Agent.objects.filter(token_hash=token_hash(token), revoked_at__isnull=True).first()


@transaction.atomic
def agent_revoke(*, agent, actor):
    """Stop the agent's token from working, at once; its tasks in hand go back to the queue."""
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.revoked_at is None:
        agent.revoked_at = timezone.now()
        agent.status = Agent.Status.OFFLINE
        agent.save(update_fields=["revoked_at", "status"])
        in_hand = Task.objects.filter(assigned_agent=agent, status__in=[Task.Status.ASSIGNED, Task.Status.RUNNING])
        # Board rows are locked by the events in id order, as everywhere.
        for task in in_hand.select_related("ticket__board", "phase").order_by("ticket__board_id", "pk"):
            _task_release(task, actor=actor, reason=f"Agent {agent.name} was revoked.")
    return agent


_UNCHANGED = object()


@transaction.atomic
def agent_update(*, agent, actor, capabilities=None, agent_type=None, phase=_UNCHANGED):
    """Staff change what an agent is trusted with: its capabilities, type and phase (None: any phase).

    Capabilities gate which tasks an agent may claim, so an agent never sets
    its own: it reports only its status and heartbeat (`agent_heartbeat`).
    """
    user = actor_user(actor)
    if isinstance(actor, Agent) or (user is not None and not user.is_staff):
        raise PermissionDenied(f"Only staff may change agent {agent.name}'s capabilities, type or phase.")
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    if agent.is_revoked:
        raise ValidationError(f"Agent {agent.name} is revoked; register a new agent instead.")
    boards = list(agent.boards.select_related("workflow").order_by("pk"))
    changes = {}
    if capabilities is not None:
        changes["capabilities"] = _clean_capabilities(capabilities)
    if agent_type is not None:
        changes["agent_type"] = _clean_text(agent_type, field="agent_type", max_length=50, required=True)
    if phase is not _UNCHANGED:
        if phase is not None and not isinstance(phase, Phase):
            try:
                phase = _resolve_phase(boards[0].workflow, phase) if boards else None
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
        event_emit(board=board, type="agent.updated", entity=agent, payload=payload, actor=actor)
    return agent


def agent_heartbeat(*, agent, status=None):
    """Record that the agent is alive (one conditional update, no lock)."""
    changes = {"last_heartbeat": timezone.now()}
    if status is not None:
        if status not in Agent.Status.values:
            raise ValidationError(
                {"status": f"Unknown status {status!r}; use one of {', '.join(Agent.Status.values)}."}
            )
        changes["status"] = status
    Agent.objects.filter(pk=agent.pk).update(**changes)
    for name, value in changes.items():
        setattr(agent, name, value)
    return agent


def _task_payload(task, **extra):
    return {
        "ticket": task.ticket_id,
        "phase": task.phase.key,
        "status": task.status,
        "title": task.title,
        "agent": task.assigned_agent.name if task.assigned_agent_id else None,
        **extra,
    }


@transaction.atomic
def task_create(
    *,
    ticket,
    title,
    actor,
    phase=None,
    description="",
    task_type="work",
    priority=None,
    score=None,
    dependencies=(),
    required_capabilities=None,
    max_retries=None,
    timeout_seconds=None,
    parent=None,
    event_payload=None,
):
    """Create a task in any phase of the ticket's workflow (the ticket's own phase by default).

    Tasks are free to start in another phase than the ticket's: an agent
    spawns work wherever it is needed, and the ticket's own phase moves only
    through the transition service.
    """
    title = _clean_text(title, field="title", max_length=200, required=True)
    task_type = _clean_text(task_type, field="task_type", max_length=64) or "work"
    workflow = ticket.board.workflow
    if phase is None:
        phase = ticket.phase
    else:
        try:
            phase = _resolve_phase(workflow, phase)
        except TransitionRefused as exc:
            raise ValidationError({"phase": str(exc)}) from None
    priority = _clean_priority(priority or ticket.priority)
    dependencies = list(dependencies)
    foreign = [dep.pk for dep in dependencies if dep.ticket.board_id != ticket.board_id]
    if foreign:
        raise ValidationError({"dependencies": f"Tasks {foreign} are on another board."})
    if parent is not None and parent.ticket.board_id != ticket.board_id:
        raise ValidationError({"parent_task": f"Task {parent.pk} is on another board."})
    if max_retries is None:
        max_retries = phase.max_retries if phase.max_retries is not None else 3
    if timeout_seconds is None:
        timeout_seconds = phase.timeout_seconds or 3600
    task = Task.objects.create(
        ticket=ticket,
        phase=phase,
        title=title,
        description=description or "",
        task_type=task_type,
        priority=priority,
        score=PRIORITY_SCORE[priority] if score is None else float(score),
        required_capabilities=_clean_capabilities(required_capabilities, field="required_capabilities"),
        max_retries=max_retries,
        timeout_seconds=timeout_seconds,
        parent=parent,
        created_by=actor_label(actor),
    )
    if dependencies:
        task.dependencies.set(dependencies)
    event_emit(
        board=ticket.board,
        type="task.created",
        entity=task,
        payload=_task_payload(
            task,
            priority=task.priority,
            parent=parent.pk if parent else None,
            dependencies=[dep.pk for dep in dependencies],
            **(event_payload or {}),
        ),
        actor=actor,
    )
    return task


def task_claim(*, agent, board=None):
    """Hand the best ready task to `agent`, or None when there is none.

    Best is the highest score, then the oldest. The claim is a conditional
    update (`status = pending` still true), so two agents asking at once never
    get the same task, on any database. Where the database can skip locked
    rows, each claimer first locks its candidate with SKIP LOCKED: concurrent
    agents then take different tasks instead of queueing behind the same one.
    """
    if board is not None and not agent.boards.filter(pk=board.pk).exists():
        raise PermissionDenied(f"Agent {agent.name} is not on board {board.slug}.")
    candidates = Task.objects.ready().for_agent(agent)
    if board is not None:
        candidates = candidates.filter(ticket__board=board)
    candidates = candidates.order_by("-score", "created_at", "id")
    if connection.features.has_select_for_update_skip_locked and connection.vendor == "postgresql":
        return _task_claim_skip_locked(candidates, agent)
    candidates = candidates.values_list("pk", "required_capabilities")
    offset, batch = 0, 100
    while True:
        rows = list(candidates[offset : offset + batch])
        if not rows:
            return None
        for pk, required in rows:
            if not agent.has_capabilities(required):
                continue
            task = _task_take(pk, agent)
            if task is not None:
                return task
        offset += batch


@transaction.atomic
def _task_claim_skip_locked(candidates, agent):
    mine = candidates.filter(required_capabilities__contained_by=agent.capabilities or [])
    pk = mine.select_for_update(skip_locked=True, of=("self",)).values_list("pk", flat=True).first()
    return _task_take(pk, agent) if pk is not None else None


@transaction.atomic
def _task_take(pk, agent):
    now = timezone.now()
    taken = Task.objects.filter(pk=pk, status=Task.Status.PENDING).update(
        status=Task.Status.ASSIGNED, assigned_agent=agent, assigned_at=now, updated_at=now
    )
    if not taken:
        return None  # another agent was quicker
    task = Task.objects.select_related("ticket__board", "phase", "assigned_agent").get(pk=pk)
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.BUSY, last_heartbeat=now)
    event_emit(board=task.ticket.board, type="task.assigned", entity=task, payload=_task_payload(task), actor=agent)
    return task


def _held_task(task, agent, allowed):
    task = Task.objects.select_for_update(of=("self",)).select_related("ticket__board", "phase").get(pk=task.pk)
    if task.assigned_agent_id != agent.pk:
        holder = "nobody" if task.assigned_agent_id is None else "another agent"
        raise TaskStateError(f"Task {task.pk} is held by {holder}, not by {agent.name}.")
    if task.status not in allowed:
        raise TaskStateError(f"Task {task.pk} is {task.status}; this needs it {' or '.join(str(s) for s in allowed)}.")
    task.assigned_agent = agent
    return task


@transaction.atomic
def task_start(*, task, agent):
    task = _held_task(task, agent, [Task.Status.ASSIGNED])
    task.status = Task.Status.RUNNING
    task.started_at = timezone.now()
    task.save(update_fields=["status", "started_at", "updated_at"])
    event_emit(board=task.ticket.board, type="task.started", entity=task, payload=_task_payload(task), actor=agent)
    return task


@transaction.atomic
def task_complete(*, task, agent, result=None, artifacts=(), completed_criteria=()):
    """The holder reports the task done, with its result, artifacts and the done-definitions it met."""
    task = _held_task(task, agent, [Task.Status.ASSIGNED, Task.Status.RUNNING])
    task.status = Task.Status.COMPLETED
    task.result = result
    task.artifacts = list(artifacts)
    task.completed_criteria = list(completed_criteria)
    task.finished_at = timezone.now()
    task.error = ""
    task.save(
        update_fields=["status", "result", "artifacts", "completed_criteria", "finished_at", "error", "updated_at"]
    )
    _agent_free(agent)
    missing = task.phase.missing_done_criteria(task.completed_criteria)
    event_emit(
        board=task.ticket.board,
        type="task.completed",
        entity=task,
        payload=_task_payload(task, missing_criteria=missing),
        actor=agent,
    )
    return task


@transaction.atomic
def task_fail(*, task, agent, error, retryable=True):
    """The holder reports failure. A retryable failure goes back to the queue after a back-off, while retries last."""
    task = _held_task(task, agent, [Task.Status.ASSIGNED, Task.Status.RUNNING])
    error = _clean_text(error, field="error", required=True)
    return _task_failed(task, actor=agent, error=error, retryable=retryable)


def _retry_delay(task):
    base = task.phase.retry_backoff_seconds or 30
    return timedelta(seconds=min(base * 2**task.retry_count, 24 * 3600))


def _task_failed(task, *, actor, error, retryable):
    now = timezone.now()
    will_retry = retryable and task.retry_count < task.max_retries
    task.error = error
    task.finished_at = None if will_retry else now
    if will_retry:
        task.next_attempt_at = now + _retry_delay(task)
        task.retry_count += 1
        task.status = Task.Status.PENDING
    else:
        task.status = Task.Status.FAILED
    agent = task.assigned_agent
    task.assigned_agent = None
    task.save(
        update_fields=[
            "status",
            "error",
            "finished_at",
            "next_attempt_at",
            "retry_count",
            "assigned_agent",
            "updated_at",
        ]
    )
    if agent is not None:
        _agent_free(agent)
    event_emit(
        board=task.ticket.board,
        type="task.failed",
        entity=task,
        payload=_task_payload(
            task,
            error=error,
            will_retry=will_retry,
            retry_count=task.retry_count,
            next_attempt_at=task.next_attempt_at.isoformat() if will_retry else None,
        ),
        actor=actor,
    )
    return task


def _task_release(task, *, actor, reason):
    """Put a task in hand back in the queue, without counting a retry."""
    task.status = Task.Status.PENDING
    task.assigned_agent = None
    task.save(update_fields=["status", "assigned_agent", "updated_at"])
    event_emit(
        board=task.ticket.board,
        type="task.released",
        entity=task,
        payload=_task_payload(task, reason=reason),
        actor=actor,
    )


def _agent_free(agent):
    still_busy = Task.objects.filter(
        assigned_agent=agent, status__in=[Task.Status.ASSIGNED, Task.Status.RUNNING]
    ).exists()
    if not still_busy:
        Agent.objects.filter(pk=agent.pk, status=Agent.Status.BUSY).update(status=Agent.Status.IDLE)


@transaction.atomic
def ticket_comment(*, ticket, body, actor):
    body = _clean_text(body, field="body", max_length=20000, required=True)
    comment = TicketComment.objects.create(ticket=ticket, body=body, author=actor_label(actor))
    event_emit(
        board=ticket.board,
        type="ticket.commented",
        entity=ticket,
        payload={"comment": comment.pk, "phase": ticket.phase.key},
        actor=actor,
    )
    return comment
