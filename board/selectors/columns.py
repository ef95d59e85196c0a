"""Reading a board for its pages: columns with their counts and first cards, in a fixed number of queries."""

from dataclasses import dataclass, field

from django.db.models import Case, Count, F, IntegerField, Min, Q, Value, When, Window
from django.db.models.functions import RowNumber

from phases.models import BoardColumn, Phase

from ..models import Priority, Task, Ticket

# Cards shown per column before "Load more"; fewer per swimlane, as a column shows four of them.
PAGE_SIZE = 50
LANE_PAGE_SIZE = 20

LANE_ORDER = list(reversed(Priority.values))  # Critical first
# A task an agent holds, as `Task.objects.in_hand()` says.
IN_HAND = (Task.Status.ASSIGNED, Task.Status.RUNNING)


@dataclass
class BoardFilters:
    """What the board is narrowed to; every field comes from the URL."""

    priority: str = ""
    phase: Phase | None = None
    text: str = ""
    blocked: bool = False
    lanes: bool = False

    @property
    def active(self):
        return bool(self.priority or self.phase or self.text or self.blocked)

    def q(self):
        condition = Q()
        if self.priority:
            condition &= Q(priority=self.priority)
        if self.phase is not None:
            condition &= Q(phase_id=self.phase.pk)
        if self.text:
            words = Q(title__icontains=self.text) | Q(description__icontains=self.text)
            number = self.text.removeprefix("#")
            if number.isdigit() and len(number) < 12:
                words |= Q(pk=int(number))
            condition &= words
        if self.blocked:
            condition &= Q(is_blocked=True)
        return condition


@dataclass
class MoveOption:
    column: BoardColumn
    enabled: bool
    reason: str = ""


@dataclass
class Cell:
    """The cards of one column, or of one priority lane within it."""

    lane: str
    cards: list = field(default_factory=list)
    has_more: bool = False

    @property
    def lane_label(self):
        return Priority(self.lane).label if self.lane else ""


@dataclass
class ColumnView:
    column: BoardColumn
    phases: list
    index: int = 1  # place among all the board's columns, from 1
    count: int = 0
    shown: int = 0
    cells: list = field(default_factory=list)

    @property
    def limit(self):
        return self.column.wip_limit

    @property
    def blocks(self):
        return self.column.wip_policy == BoardColumn.WipPolicy.BLOCK

    @property
    def wip_state(self):
        """ "ok", "at" (the limit is reached) or "over" (it is passed)."""
        if self.limit is None or self.count < self.limit:
            return "ok"
        return "at" if self.count == self.limit else "over"

    @property
    def is_full(self):
        return self.blocks and self.wip_state != "ok"

    @property
    def phase_keys(self):
        return " ".join(p.key for p in self.phases)

    @property
    def phase_names(self):
        return ", ".join(p.name for p in self.phases)

    @property
    def shows_phase(self):
        return len(self.phases) > 1


def _column_index(columns):
    """SQL mapping a ticket's phase to the id of the column that shows it."""
    whens = [When(phase_id__in=[p.pk for p in view.phases], then=Value(view.column.pk)) for view in columns]
    return Case(*whens, default=Value(0), output_field=IntegerField()) if whens else Value(0)


def _cards_query(board, filters, columns):
    return (
        Ticket.objects.filter(board=board)
        .filter(filters.q())
        .only(
            "id",
            "title",
            "priority",
            "phase_id",
            "position",
            "is_blocked",
            "blocked_reason",
            "version",
            "board_id",
        )
        .annotate(column_id=_column_index(columns))
    )


def board_columns(board, filters, *, only=None, cards=True):
    """The board's columns in workflow order, each with its counts and first page of cards.

    Three queries whatever the number of tickets: columns (with their phases),
    counts per phase, and the first cards of every column in one windowed
    query. `only` limits the result to the columns with those keys;
    `cards=False` leaves the cards out.
    """
    columns = BoardColumn.objects.filter(workflow_id=board.workflow_id).order_by("sequence_order", "pk")
    views = [
        ColumnView(
            column=column,
            phases=sorted(column.phases.all(), key=lambda p: (p.sequence_order, p.pk)),
            index=index,
        )
        for index, column in enumerate(columns.prefetch_related("phases"), start=1)
    ]
    if only is not None:
        views = [view for view in views if view.column.key in only]
    if not views:
        return views
    by_phase = {phase.pk: view for view in views for phase in view.phases}

    counts = (
        Ticket.objects.filter(board=board, phase_id__in=list(by_phase))
        .values("phase_id")
        .annotate(total=Count("id"), shown=Count("id", filter=filters.q()))
        .order_by()
    )
    for row in counts:
        view = by_phase[row["phase_id"]]
        view.count += row["total"]
        view.shown += row["shown"]

    lanes = LANE_ORDER if filters.lanes else [""]
    for view in views:
        view.cells = [Cell(lane=lane) for lane in lanes]
    if not cards:
        return views
    partition = [F("column_id"), F("priority")] if filters.lanes else [F("column_id")]
    page_size = LANE_PAGE_SIZE if filters.lanes else PAGE_SIZE
    ranked = (
        _cards_query(board, filters, views)
        .filter(phase_id__in=list(by_phase))
        .annotate(rank=Window(RowNumber(), partition_by=partition, order_by=[F("position").asc(), F("id").asc()]))
        .filter(rank__lte=page_size + 1)
        .order_by("position", "id")
    )
    by_id = {view.column.pk: view for view in views}
    shown = []
    for card in ranked:
        view = by_id[card.column_id]
        cell = view.cells[lanes.index(card.priority) if filters.lanes else 0]
        if card.rank > page_size:
            cell.has_more = True
        else:
            cell.cards.append(card)
            shown.append(card)
    _add_work_counts(shown)
    return views


def _add_work_counts(cards):
    """Tasks done/total, failed for good, waiting to retry, open discoveries and who works on each card, in one query.

    Discoveries are reached through the relation the discoveries app adds to
    Task, by name, so this module does not import the app above it. Of the
    agents holding a task of the card (assigned or running), the first by
    name is named and the others counted: a card has room for one name.
    """
    for card in cards:
        card.tasks_total = card.tasks_done = card.tasks_failed = card.tasks_retrying = card.open_discoveries = 0
        card.agent_name, card.other_agents = "", 0
    if not cards:
        return
    rows = (
        Task.objects.filter(ticket_id__in=[card.pk for card in cards])
        .values("ticket_id")
        .annotate(
            total=Count("id", distinct=True),
            done=Count("id", filter=Q(status=Task.Status.COMPLETED), distinct=True),
            failed=Count("id", filter=Q(status=Task.Status.FAILED), distinct=True),
            retrying=Count("id", filter=Q(status=Task.Status.PENDING, retry_count__gt=0), distinct=True),
            open_discoveries=Count("discoveries", filter=Q(discoveries__resolution_status="open"), distinct=True),
            agent_name=Min("assigned_agent__name", filter=Q(status__in=IN_HAND)),
            agents=Count("assigned_agent", filter=Q(status__in=IN_HAND), distinct=True),
        )
        .order_by()
    )
    counts = {row["ticket_id"]: row for row in rows}
    for card in cards:
        row = counts.get(card.pk)
        if row:
            card.tasks_total, card.tasks_done, card.open_discoveries = (
                row["total"],
                row["done"],
                row["open_discoveries"],
            )
            card.tasks_failed, card.tasks_retrying = row["failed"], row["retrying"]
            card.agent_name, card.other_agents = row["agent_name"] or "", max(row["agents"] - 1, 0)


def column_cards_after(board, filters, *, view, after, lane=""):
    """The next page of a column (or lane) after the card `after`, and whether more follow."""
    cards = _cards_query(board, filters, [view]).filter(phase_id__in=[p.pk for p in view.phases])
    if lane:
        cards = cards.filter(priority=lane)
    if after is not None:
        cards = cards.filter(Q(position__gt=after.position) | Q(position=after.position, pk__gt=after.pk))
    size = LANE_PAGE_SIZE if lane else PAGE_SIZE
    page = list(cards.order_by("position", "id")[: size + 1])
    _add_work_counts(page[:size])
    return page[:size], len(page) > size


def move_options(phases, views, *, may_force=False):
    """For each phase, the columns a ticket in it may be moved to, with the reason when it may not.

    Computed once per phase, not per card; `phases` must have their
    transitions prefetched. Staff (`may_force`) keep refused columns
    selectable, labelled: the server then asks them for an override reason.
    """
    options = {}
    for phase in phases:
        row = []
        for view in views:
            if phase in view.phases:
                row.append(MoveOption(view.column, False, "current column"))
            elif not any(phase.can_transition_to(p) for p in view.phases):
                row.append(MoveOption(view.column, may_force, f"not allowed from {phase.name}"))
            elif view.is_full:
                row.append(MoveOption(view.column, may_force, f"full ({view.count}/{view.limit})"))
            else:
                row.append(MoveOption(view.column, True))
        options[phase.pk] = row
    return options
