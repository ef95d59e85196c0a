"""The orchestrator's ticket steps: apply accepted results, give tickets their phase's tasks, advance through gates.

Each step finds its candidates with one bounded query that asks the database
which tickets need work ("needs work" conditions over the state the services
record), never by visiting every ticket: a board of 10,000 tickets costs the
same few queries per pass as one of ten, plus the service calls for the
tickets that do need work.
"""

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import BigIntegerField, F, IntegerField, Q, Value
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from phases.models import Phase

from ..errors import Refused
from ..events import ORCHESTRATOR
from ..models import Ticket, TicketResult
from ..selectors.gates import phase_default_tasks, recorded, ticket_gates, with_gate_facts, with_task_counts
from ..services import ticket_advance, ticket_phase_enter, ticket_result_apply

logger = logging.getLogger(__name__)

# Where each process's advance step goes on from: tickets that stay candidates (waiting for room in a full
# column) are taken in turn, so more of them than a batch never starve the ones after them.
_cursor = {"advance": 0}


def _stored(name, output_field):
    # -1 where the key is missing: a comparison with NULL would be neither equal nor different.
    return Coalesce(Cast(KT(f"gate_state__{name}"), output_field), Value(-1), output_field=output_field)


def _advance_candidates():
    """Tickets whose gate may judge differently from what their gate_state says, by id.

    Never judged in this visit of their phase, edited, their workflow
    reloaded, their phase's tasks changed in number or state (created,
    finished, failed for good, reopened), or only waiting for room in the next
    column (which another ticket may have made).
    """
    tickets = with_task_counts(with_gate_facts(Ticket.objects.filter(phase__is_terminal=False))).annotate(
        seen_visit=_stored("visit", BigIntegerField()),
        seen_phase=_stored("phase", BigIntegerField()),
        seen_version=_stored("version", IntegerField()),
        seen_workflow=_stored("workflow_version", IntegerField()),
        seen_done=_stored("tasks__done", IntegerField()),
        seen_open=_stored("tasks__open", IntegerField()),
        seen_other=_stored("tasks__other", IntegerField()),
    )
    unchanged = Q(
        seen_visit=F("gate_visit"),
        seen_phase=F("phase_id"),
        seen_version=F("version"),
        seen_workflow=F("phase__workflow__version"),
        seen_done=F("gate_done"),
        seen_open=F("gate_open"),
        seen_other=F("gate_other"),
    )
    return tickets.filter(
        Q(gate_state__isnull=True) | ~unchanged | Q(gate_state__outcome__waiting_for_room=True)
    ).order_by("pk")


def advance_tickets(*, now=None, batch=None):
    """Move on every ticket (up to `batch`) whose phase gate passes, and record the gates that changed.

    The batch's gates are judged together in a fixed number of queries; only
    a ticket whose gate passes or judges differently from its record goes to
    `ticket_advance`, which judges again under the ticket's lock.
    """
    now = now or timezone.now()
    batch = batch or settings.OMOI_ORCHESTRATOR_BATCH
    candidates = _advance_candidates()
    after = _cursor["advance"]
    tickets = list(candidates.filter(pk__gt=after)[:batch])
    if len(tickets) < batch and after:
        # Round to the start: those before the cursor are next in turn.
        tickets += list(candidates.filter(pk__lte=after)[: batch - len(tickets)])
    _cursor["advance"] = tickets[-1].pk if len(tickets) == batch else 0
    worked = False
    for gate in ticket_gates(tickets):
        ticket = gate.ticket
        stored = ticket.gate_state if isinstance(ticket.gate_state, dict) else {}
        if not gate.passed and recorded(stored) == gate.state(stored):
            continue  # still waiting, for the same reasons
        try:
            ticket_advance(ticket=ticket, actor=ORCHESTRATOR, now=now)
        except (Refused, ValidationError):
            logger.warning("Could not advance ticket #%s", ticket.pk, exc_info=True)
            continue
        worked = True
    return worked


def _entry_candidates():
    """Tickets in a phase with default tasks whose current visit has not had them yet, by id."""
    phases = [
        phase.pk
        for phase in Phase.objects.filter(configuration__has_key="default_tasks").only("pk", "configuration")
        if phase_default_tasks(phase)
    ]
    entered = Q(
        seen_visit=F("gate_visit"),
        seen_phase=F("phase_id"),
        gate_state__entered=True,
    )
    return (
        with_gate_facts(Ticket.objects.filter(phase_id__in=phases))
        .annotate(seen_visit=_stored("visit", BigIntegerField()), seen_phase=_stored("phase", BigIntegerField()))
        .filter(Q(gate_state__isnull=True) | ~entered)
        .order_by("pk")
    )


def enter_phases(*, now=None, batch=None):
    """Give tickets (up to `batch`) the default tasks of the phase they are in, once per visit.

    Covers tickets moved by anyone: the orchestrator's gates, a person's drag,
    a ticket created before the orchestrator ran.
    """
    batch = batch or settings.OMOI_ORCHESTRATOR_BATCH
    tickets = list(_entry_candidates()[:batch])
    entered = 0
    for ticket in tickets:
        try:
            ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
        except (Refused, ValidationError):
            logger.warning("Could not enter ticket #%s into its phase", ticket.pk, exc_info=True)
        else:
            entered += 1
    # Each ticket entered leaves the candidates: a full batch of them means more may be waiting.
    return entered == batch


def apply_results(*, now=None, batch=None):
    """Apply accepted results (up to `batch`) not applied yet, as their workflows' `on_result_found` says."""
    now = now or timezone.now()
    batch = batch or settings.OMOI_ORCHESTRATOR_BATCH
    results = list(
        TicketResult.objects.filter(status=TicketResult.Status.ACCEPTED, applied_at__isnull=True).order_by("pk")[:batch]
    )
    applied = False
    for result in results:
        try:
            applied |= ticket_result_apply(result=result, actor=ORCHESTRATOR, now=now)
        except (Refused, ValidationError):
            logger.warning("Could not apply result %s", result.pk, exc_info=True)
    return applied
