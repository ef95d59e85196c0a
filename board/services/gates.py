"""Phase gates and phase entry: a ticket moves on once its phase's work is done, and gets its phase's default tasks.

Both are called by the orchestrator (`board.orchestration.tickets`) for many
tickets at once, by several processes at once: each works under the ticket's
row lock and re-reads what it judges there, so a ticket is advanced once and
a phase's tasks are created once per visit.
"""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from ..errors import TransitionRefused
from ..events import EventType, event_emit
from ..models import Priority, Task, Ticket
from ..selectors.gates import TICKET_ID, phase_default_tasks, recorded, ticket_gate, with_gate_facts
from .tasks import task_create
from .tickets import _lock_columns, _phase_wanted, ticket_transition

logger = logging.getLogger(__name__)


def _fresh(pk):
    """The ticket as it is now, with what its gate reads from its history."""
    tickets = with_gate_facts(Ticket.objects.filter(pk=pk).select_related("board__workflow", "phase"))
    return tickets.first()


def _lock(pk):
    """Lock the ticket's row until the transaction ends; its (phase, version), or None when it is gone."""
    return Ticket.objects.select_for_update().filter(pk=pk).values_list("phase_id", "version").first()


@transaction.atomic
def ticket_advance(*, ticket, actor, now=None):
    """Move `ticket` to its next phase when its phase gate passes; else record the gate's judgement once per change.

    Acts only on the ticket as the caller saw it: if its phase or version
    changed meanwhile (another orchestrator advanced it, a person moved or
    edited it), nothing happens and the next pass judges it afresh. The move
    is a normal transition (`ticket_transition`), so the workflow's rules and
    WIP limits apply as for anyone. A gate that does not pass is stored in
    `Ticket.gate_state` and recorded as `phase_gate.evaluated` only when its
    outcome differs from the one stored. Returns the moved ticket, or None.
    """
    now = now or timezone.now()
    seen = (ticket.phase_id, ticket.version)
    first = _fresh(ticket.pk)
    if first is None or (first.phase_id, first.version) != seen:
        return None
    gate = ticket_gate(first)
    if gate.passed:
        # Columns before the ticket, in the order ticket_transition takes them: a mover holding a column
        # while waiting for this ticket must not wait on us the other way round.
        _lock_columns(column=None, wanted=_phase_wanted(None, gate.target), from_phase_id=first.phase_id)
    if _lock(ticket.pk) != seen:
        return None
    current = _fresh(ticket.pk)  # under the lock: tasks, history and gate_state as they are now
    judged = ticket_gate(current)
    if judged.passed:
        if not gate.passed or judged.target != gate.target:
            return None  # its columns are not locked; the next pass moves it
        try:
            moved = ticket_transition(
                ticket=current, to_phase=judged.target, actor=actor, reason=f"Phase gate passed: {judged.summary()}"
            )
        except TransitionRefused as exc:
            judged.refused = str(exc)
        else:
            # The stored judgement was of the phase it left.
            Ticket.objects.filter(pk=moved.pk).update(gate_state=None)
            moved.gate_state = None
            return moved
    _record(current, judged, actor, now)
    return None


def _record(ticket, gate, actor, now):
    stored = ticket.gate_state if isinstance(ticket.gate_state, dict) else {}
    state = gate.state(stored)
    if recorded(stored) == state:
        return
    Ticket.objects.filter(pk=ticket.pk).update(gate_state={**state, "at": now.isoformat()})
    ticket.gate_state = state
    if gate.same_visit(stored) and stored.get("outcome") == state["outcome"]:
        return  # only the bookkeeping changed (a pending task added, a title edited): nothing new to say
    event_emit(
        board=ticket.board,
        type=EventType.PHASE_GATE_EVALUATED,
        entity=ticket,
        payload={"phase": gate.phase.key, **state["outcome"]},
        actor=actor,
    )


def _same_title(title):
    return " ".join(title.split()).casefold()


@transaction.atomic
def ticket_phase_enter(*, ticket, actor):
    """Give `ticket` the default tasks of its current phase (`configuration["default_tasks"]`), once per visit.

    Each task's description is the entry's own followed by the phase's agent
    instructions, `<ticket-id>` standing for the ticket's id. A default task is
    not created when a task of the same title already counts for this visit
    of the phase (open, or finished since the ticket last left the phase), so
    nothing is duplicated, whoever else created tasks meanwhile. An entry the
    task service refuses is skipped and logged: one bad line in a workflow
    must not hold up its other tasks on every pass. Returns the tasks created.
    """
    if _lock(ticket.pk) is None:
        return []
    current = _fresh(ticket.pk)
    phase = current.phase
    defaults = phase_default_tasks(phase)
    stored = current.gate_state if isinstance(current.gate_state, dict) else {}
    same_visit = stored.get("visit") == current.gate_visit and stored.get("phase") == phase.pk
    if not defaults or (same_visit and stored.get("entered") is True):
        return []

    present = current.phase_tasks(
        Task.objects.filter(ticket=current, phase=phase).only("pk", "phase_id", "title", "finished_at"),
        left_at=current.gate_left_at,
    )
    titles = {_same_title(task.title) for task in present}
    instructions = phase.agent_instructions()
    created = []
    for entry in defaults:
        title = entry["title"].strip().replace(TICKET_ID, str(current.pk))
        if _same_title(title) in titles:
            continue
        own = entry.get("description") if isinstance(entry.get("description"), str) else ""
        description = "\n\n".join(part.strip() for part in (own, instructions) if part.strip())
        task_type = entry.get("task_type")
        capabilities = entry.get("required_capabilities")
        priority = entry.get("priority")
        try:
            task = task_create(
                ticket=current,
                title=title,
                actor=actor,
                phase=phase,
                description=description.replace(TICKET_ID, str(current.pk)),
                task_type=task_type if isinstance(task_type, str) else "work",
                priority=priority if priority in Priority.values else None,
                required_capabilities=capabilities if isinstance(capabilities, list) else None,
                event_payload={"source": "phase entry"},
            )
        except ValidationError as exc:
            logger.warning("Default task %r of phase %s not created: %s", title, phase.key, " ".join(exc.messages))
            continue
        titles.add(_same_title(title))
        created.append(task)

    base = stored if same_visit else {"visit": current.gate_visit, "phase": phase.pk}
    Ticket.objects.filter(pk=current.pk).update(gate_state={**base, "entered": True})
    return created
