"""The stuck-ticket rescue: a ticket without progress for a window gets one diagnostic discovery and one recovery task.

OmoiOS switched its rescue off after it spawned tasks in a loop. This one is
bounded by construction, not by care:

- one rescue per ticket per window is a unique constraint (`TicketRescue`),
  so a second orchestrator's insert fails instead of rescuing again;
- under the ticket's row lock, no rescue while an earlier rescue's task is
  still open, nor within one window length of the last rescue (windows are
  fixed slices of time, and two slices meet at a boundary);
- the rescue's own task and discovery are progress, so the ticket is not
  stuck again until another whole window passes without any.
"""

import logging
from datetime import UTC

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from board.events import ORCHESTRATOR
from board.models import PhaseHistory, Task, Ticket
from board.services import task_create
from phases.models import Phase

from .models import Discovery, TicketRescue
from .services import DESCRIPTION_MAX, discovery_branch, discovery_record

logger = logging.getLogger(__name__)

RESCUE_TASK_TYPE = f"discovery_{Discovery.Type.DIAGNOSTIC_NO_RESULT}"
TITLE_MAX = 200


def rescue_window(now):
    """(the window's number, its length) for the clock `now`: windows are fixed slices of OMOI_RESCUE_WINDOW."""
    length = settings.OMOI_RESCUE_WINDOW
    return int(now.timestamp()) // int(length.total_seconds()), length


def _latest(queryset, ticket_field, field):
    """The latest `field` among a ticket's rows in `queryset`, or the ticket's own updated_at when it has none.

    Coalesced because Greatest is NULL as soon as one argument is, on SQLite.
    """
    latest = (
        queryset.filter(**{ticket_field: OuterRef("pk")})
        .order_by()
        .values(ticket_field)
        .annotate(latest=Max(field))
        .values("latest")[:1]
    )
    return Coalesce(Subquery(latest), F("updated_at"))


def with_last_progress(tickets):
    """Annotate `last_progress`: the latest change to the ticket, its phase, any of its tasks or its discoveries."""
    return tickets.annotate(
        last_progress=Greatest(
            F("updated_at"),
            _latest(PhaseHistory.objects.all(), "ticket", "created_at"),
            _latest(Task.objects.all(), "ticket", "updated_at"),
            _latest(Discovery.objects.all(), "source_task__ticket", "discovered_at"),
        )
    )


def _phase_ids():
    """(finished, working): terminal phases where work has ended (a holding phase such as Blocked is terminal
    too, but parks work), and phases that create tasks on entry. One query."""
    finished, working = [], []
    for phase in Phase.objects.only("pk", "key", "is_terminal", "configuration"):
        if phase.is_terminal and not phase.is_holding:
            finished.append(phase.pk)
        if (phase.configuration or {}).get("default_tasks"):
            working.append(phase.pk)
    return finished, working


def _expecting_work(working_phase_ids):
    """Tickets whose phase expects work: it creates tasks on entry, or the ticket has had a task in it.

    A ticket waiting in Backlog or parked in Blocked with nothing asked of it
    there is waiting on people, not stuck: rescuing it would only make noise.
    """
    in_phase = Task.objects.filter(ticket=OuterRef("pk"), phase_id=OuterRef("phase_id"))
    return Q(phase_id__in=working_phase_ids) | Q(Exists(in_phase))


def _recent_rescues(*, cutoff, window=None):
    """Rescues that hold their ticket back from another: task still open, less than a window old, or of `window`."""
    recent = Q(task__status__in=Task.OPEN_STATUSES) | Q(created_at__gt=cutoff)
    if window is not None:
        recent |= Q(window=window)
    return TicketRescue.objects.filter(recent)


def _progress_since(cutoff):
    """One condition per kind of progress, each true when the ticket made some at `cutoff` or later."""
    ticket = OuterRef("pk")
    return [
        Exists(PhaseHistory.objects.filter(ticket=ticket, created_at__gte=cutoff)),
        Exists(Task.objects.filter(ticket=ticket, updated_at__gte=cutoff)),
        Exists(Discovery.objects.filter(source_task__ticket=ticket, discovered_at__gte=cutoff)),
    ]


def stuck_tickets(*, now):
    """Tickets without progress for a rescue window that may be rescued now, the longest idle first (two queries).

    "No progress since the cutoff" is filtered as NOT EXISTS per kind rather than
    on `last_progress` itself: the database answers those with anti-joins over
    the recent rows, where the latest of each would be computed for every ticket
    there is. `last_progress` is then computed for the stuck ones only, to
    order them.
    """
    window, length = rescue_window(now)
    cutoff = now - length
    recent = _recent_rescues(window=window, cutoff=cutoff).filter(ticket=OuterRef("pk"))
    finished, working = _phase_ids()
    idle = (
        Ticket.objects.filter(is_blocked=False, updated_at__lt=cutoff)
        .filter(_expecting_work(working))
        .exclude(phase_id__in=finished)
    )
    for progress in _progress_since(cutoff):
        idle = idle.exclude(progress)
    return with_last_progress(idle.exclude(Exists(recent))).order_by("last_progress", "pk")


def _duration(seconds):
    """Two units at most, the way a person says it: "2 h 10 min", "3 d 4 h", "45 min"."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    first = next((index for index, (amount, _) in enumerate(parts) if amount), len(parts) - 1)
    shown = [f"{amount} {unit}" for amount, unit in parts[first : first + 2] if amount]
    return " ".join(shown) or "0 s"


def _task_counts(ticket):
    counts = dict(ticket.tasks.order_by().values_list("status").annotate(n=Count("pk")))
    return {status: counts.get(status, 0) for status in Task.Status.values}


def _counts_text(counts):
    total = sum(counts.values())
    if not total:
        return "no tasks yet"
    running = counts[Task.Status.ASSIGNED] + counts[Task.Status.RUNNING]
    text = (
        f"{counts[Task.Status.FAILED]} of {total} task{'s' if total != 1 else ''} failed, {running} running, "
        f"{counts[Task.Status.PENDING]} pending, {counts[Task.Status.COMPLETED]} completed"
    )
    if counts[Task.Status.CANCELLED]:
        text += f", {counts[Task.Status.CANCELLED]} cancelled"
    return text


def _recovery_phase(ticket):
    """The ticket's phase; for a ticket parked in a holding phase, the working phase it came from, or the first."""
    if not ticket.phase.is_holding:
        return ticket.phase
    workflow = ticket.board.workflow
    came_from = (
        PhaseHistory.objects.filter(ticket=ticket, from_phase__workflow=workflow, from_phase__is_terminal=False)
        .select_related("from_phase")
        .order_by("-created_at", "-id")
        .first()
    )
    if came_from is not None:
        return came_from.from_phase
    return workflow.phases.in_order().filter(is_terminal=False).first() or ticket.phase


def _clip(text, length):
    return text if len(text) <= length else text[: length - 1] + "…"


@transaction.atomic
def ticket_rescue(*, ticket, now, actor=ORCHESTRATOR):
    """Rescue `ticket` if it is stuck at `now`: one `diagnostic_no_result` discovery and one recovery task.

    Returns the TicketRescue, or None when there is nothing to do: the ticket
    is gone, finished, blocked by a person, not idle for a whole window, its
    last rescue's task is still open, its last rescue is less than a window
    old, or another orchestrator rescued it in this window first.
    """
    window, length = rescue_window(now)
    cutoff = now - length
    # The row lock serialises rescuers of one ticket: the second one to get it sees the first one's rescue.
    ticket = (
        Ticket.objects.select_for_update(of=("self",))
        .select_related("board__workflow", "phase")
        .filter(pk=ticket.pk)
        .first()
    )
    if ticket is None or ticket.is_blocked or (ticket.phase.is_terminal and not ticket.phase.is_holding):
        return None
    last_progress = with_last_progress(Ticket.objects.filter(pk=ticket.pk)).values_list("last_progress", flat=True)[0]
    if last_progress >= cutoff:
        return None
    # Not the window itself: a rescue of this window is refused by the table (below), which is the rule's home.
    if _recent_rescues(cutoff=cutoff).filter(ticket=ticket).exists():
        return None
    try:
        # A savepoint: the refused insert must not take the caller's transaction down with it.
        with transaction.atomic():
            rescue = TicketRescue.objects.create(ticket=ticket, window=window)
    except IntegrityError:
        return None

    idle = int((now - last_progress).total_seconds())
    phase = _recovery_phase(ticket)
    counts = _task_counts(ticket)
    since = last_progress.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    description = (
        f"No progress on #{ticket.pk} “{ticket.title}” in {ticket.phase.name} for {_duration(idle)} "
        f"(since {since}): {_counts_text(counts)}."
    )
    if phase != ticket.phase:
        description += f" It is parked in {ticket.phase.name}; the recovery task is in {phase.name}."
    description = _clip(description, DESCRIPTION_MAX)
    task_description = (
        f"{description}\n\nFind out why the ticket is not moving (a failed task, a missing input, a gate "
        "that never passes), then get it moving again or record what blocks it."
    )
    title = _clip(f"Recover #{ticket.pk}: no progress in {ticket.phase.name} for {_duration(idle)}", TITLE_MAX)
    metadata = {
        "rescue": True,
        "idle_seconds": idle,
        "last_progress": last_progress.isoformat(),
        "window": window,
        "phase": ticket.phase.key,
        "recovery_phase": phase.key,
        "tasks": counts,
    }
    said = {"rescue": True, "idle_seconds": idle}

    source = ticket.tasks.select_related("phase").order_by("-created_at", "-id").first()
    if source is not None:
        source.ticket = ticket
        discovery, task = discovery_branch(
            source_task=source,
            discovery_type=Discovery.Type.DIAGNOSTIC_NO_RESULT,
            description=description,
            actor=actor,
            phase=phase,
            title=title,
            task_description=task_description,
            priority=ticket.priority,
            metadata=metadata,
            event_payload=said,
        )
    else:
        # Nothing to branch from: the recovery task is the first task, and the diagnosis is recorded on it.
        task = task_create(
            ticket=ticket,
            title=title,
            actor=actor,
            phase=phase,
            description=task_description,
            task_type=RESCUE_TASK_TYPE,
            priority=ticket.priority,
            event_payload=said,
        )
        discovery = discovery_record(
            source_task=task,
            discovery_type=Discovery.Type.DIAGNOSTIC_NO_RESULT,
            description=description,
            actor=actor,
            metadata=metadata,
            event_payload=said,
        )
    # created_at on the orchestrator's clock, the one the next rescue's "a window later" is measured with.
    TicketRescue.objects.filter(pk=rescue.pk).update(discovery=discovery, task=task, created_at=now)
    rescue.discovery, rescue.task, rescue.created_at = discovery, task, now
    logger.info("Rescued ticket %s after %s without progress: task %s", ticket.pk, _duration(idle), task.pk)
    return rescue


def rescue_stuck_tickets(*, now=None, batch=None):
    """The orchestrator's step: rescue up to `batch` stuck tickets; True when there may be more right now.

    Finding them is a fixed number of queries whatever the number of tickets;
    each rescue is its own transaction, so one that fails leaves the others.
    """
    now = now or timezone.now()
    batch = batch or settings.OMOI_ORCHESTRATOR_BATCH
    candidates = list(stuck_tickets(now=now).only("pk")[:batch])
    for ticket in candidates:
        try:
            ticket_rescue(ticket=ticket, now=now)
        except Exception:
            # One ticket the services refuse (a hand-edited workflow, say) must not stop every other rescue.
            logger.exception("Could not rescue ticket %s", ticket.pk)
    return len(candidates) == batch
