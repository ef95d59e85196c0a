"""Reading a board for its pages: columns with their counts and first cards, in a fixed number of queries."""

from dataclasses import dataclass, field

from django.db.models import Case, Count, F, IntegerField, Min, Q, Value, When, Window
from django.db.models.functions import RowNumber

from phases.models import BoardColumn, Phase
from phases.schema import color_css

from ..models import Priority, Task, Ticket

# Cards shown per column (per phase, in a column of several) before "Load more"; fewer per swimlane.
PAGE_SIZE = 50
LANE_PAGE_SIZE = 20

LANE_ORDER = list(reversed(Priority.values))  # Critical first
# A task an agent holds, as `Task.objects.in_hand()` says.
IN_HAND = (Task.Status.ASSIGNED, Task.Status.RUNNING)


@dataclass
class BoardFilters:
    """What the board is narrowed to; every field but `holding` comes from the URL.

    `holding` holds the ids of the workflow's holding phases (Blocked): a
    ticket parked in one counts as blocked, flagged or not.
    """

    priority: str = ""
    phase: Phase | None = None
    text: str = ""
    blocked: bool = False
    lanes: bool = False
    holding: tuple = ()

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
            blocked = Q(is_blocked=True)
            if self.holding:
                blocked |= Q(phase_id__in=self.holding)
            condition &= blocked
        return condition


@dataclass
class MoveOption:
    """A column a card may be sent to from its menu, or why not."""

    column: BoardColumn
    enabled: bool
    reason: str = ""


@dataclass
class PhaseOption:
    """Another phase of the card's own column, for a column that shows several."""

    phase: Phase
    enabled: bool
    reason: str = ""
    current: bool = False


@dataclass
class MoveChoices:
    columns: list = field(default_factory=list)
    phases: list = field(default_factory=list)


@dataclass
class Band:
    """The cards of one phase within a cell; a column of several phases shows one band per phase."""

    phase: Phase
    cards: list = field(default_factory=list)
    has_more: bool = False
    shown: int = 0


@dataclass
class Cell:
    """The cards of one column, or of one priority lane within it, in one band per phase."""

    lane: str
    bands: list = field(default_factory=list)
    page_size: int = PAGE_SIZE

    @property
    def lane_label(self):
        return Priority(self.lane).label if self.lane else ""

    def band_of(self, phase_id):
        return next(band for band in self.bands if band.phase.pk == phase_id)

    @property
    def cards(self):
        """The cell's first cards in position order, whatever their phase (a page, as `has_more` counts it)."""
        every = sorted((card for band in self.bands for card in band.cards), key=lambda card: (card.position, card.pk))
        return every[: self.page_size]

    @property
    def has_more(self):
        return any(band.has_more for band in self.bands) or sum(len(band.cards) for band in self.bands) > self.page_size

    @property
    def shown(self):
        return sum(band.shown for band in self.bands)


@dataclass
class Lane:
    """A swimlane across the board: one priority, with the number of its tickets the filters show."""

    key: str
    index: int
    shown: int = 0

    @property
    def label(self):
        return Priority(self.key).label


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

    @property
    def color(self):
        """The column's colour as a CSS value: a palette name as its theme variable, a #rrggbb as itself."""
        return color_css(self.column.color)


@dataclass
class BoardView:
    """Every column of the board with its counts, the columns asked for with their first cards, and the lanes."""

    columns: list
    shown: list
    lanes: list


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


def board_view(board, filters, *, only=None, cards=True):
    """The board's columns in workflow order with their counts; the first page of cards of those in `only`.

    Five queries whatever the number of tickets or columns asked for: the
    columns and their phases (two), counts per phase and priority, the first
    cards of every band in one windowed query, and those cards' tasks. Every column is
    counted even when only some are rendered, so a card's menu can say which
    of them is full. `only` limits the rendered columns to those keys;
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
    shown = views if only is None else [view for view in views if view.column.key in only]
    lanes = [Lane(key=key, index=index) for index, key in enumerate(LANE_ORDER, start=1)] if filters.lanes else []
    page_size = LANE_PAGE_SIZE if filters.lanes else PAGE_SIZE
    for view in shown:
        view.cells = [
            Cell(lane=lane, bands=[Band(phase=phase) for phase in view.phases], page_size=page_size)
            for lane in [lane.key for lane in lanes] or [""]
        ]
    result = BoardView(columns=views, shown=shown, lanes=lanes)
    if not views:
        return result
    by_phase = {phase.pk: view for view in views for phase in view.phases}

    counts = (
        Ticket.objects.filter(board=board, phase_id__in=list(by_phase))
        .values("phase_id", "priority")
        .annotate(total=Count("id"), shown=Count("id", filter=filters.q()))
        .order_by()
    )
    lane_of = {lane.key: lane for lane in lanes}
    for row in counts:
        view = by_phase[row["phase_id"]]
        view.count += row["total"]
        view.shown += row["shown"]
        lane = lane_of.get(row["priority"])
        if lane is not None:
            lane.shown += row["shown"]
        if view.cells:
            cell = view.cells[lane.index - 1 if lane is not None else 0]
            cell.band_of(row["phase_id"]).shown += row["shown"]

    if not cards or not shown:
        return result
    # One page per band: a column of several phases pages each of them, so every band starts full.
    partition = [F("phase_id"), F("priority")] if filters.lanes else [F("phase_id")]
    shown_phases = [phase.pk for view in shown for phase in view.phases]
    ranked = (
        _cards_query(board, filters, shown)
        .filter(phase_id__in=shown_phases)
        .annotate(rank=Window(RowNumber(), partition_by=partition, order_by=[F("position").asc(), F("id").asc()]))
        .filter(rank__lte=page_size + 1)
        .order_by("position", "id")
    )
    by_id = {view.column.pk: view for view in shown}
    lane_keys = [lane.key for lane in lanes]
    rendered = []
    for card in ranked:
        view = by_id[card.column_id]
        cell = view.cells[lane_keys.index(card.priority) if lanes else 0]
        band = cell.band_of(card.phase_id)
        if card.rank > page_size:
            band.has_more = True
        else:
            band.cards.append(card)
            rendered.append(card)
    _add_work_counts(rendered)
    return result


def board_columns(board, filters, *, only=None, cards=True):
    """The columns in `only` (or all), as `board_view` reads them."""
    return board_view(board, filters, only=only, cards=cards).shown


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
        # Whole percent for the progress bar's width; the card's text gives the exact numbers.
        card.tasks_percent = round(100 * card.tasks_done / card.tasks_total) if card.tasks_total else 0


def column_cards_after(board, filters, *, view, after, lane="", phase=None):
    """The next page of a column (or of one lane, or one phase's band of it) after the card `after`.

    Returns the cards and whether more follow.
    """
    phases = [phase] if phase is not None else view.phases
    cards = _cards_query(board, filters, [view]).filter(phase_id__in=[p.pk for p in phases])
    if lane:
        cards = cards.filter(priority=lane)
    if after is not None:
        cards = cards.filter(Q(position__gt=after.position) | Q(position=after.position, pk__gt=after.pk))
    size = LANE_PAGE_SIZE if lane else PAGE_SIZE
    page = list(cards.order_by("position", "id")[: size + 1])
    _add_work_counts(page[:size])
    return page[:size], len(page) > size


def move_choices(phases, columns, *, may_force=False):
    """For each phase, where a card in it may be moved from its menu, with the reason where it may not.

    `columns` are every column of the board, with their counts: a card
    offers each of them but its own, whichever columns a page re-renders.
    In a column of several phases the card also offers that column's other
    phases. A refusal is said in a word or two ("not allowed", "full 8/8"):
    the menu is the card's, so the phase it is not allowed from goes without
    saying. Computed once per phase, not per card; `phases` must have their
    transitions prefetched. Staff (`may_force`) keep refused choices
    selectable, labelled: the server then asks them for an override reason.
    """
    choices = {}
    for phase in phases:
        row = MoveChoices()
        for view in columns:
            if phase in view.phases:
                if view.shows_phase:
                    row.phases = [_phase_option(phase, other, may_force) for other in view.phases]
            elif not any(phase.can_transition_to(p) for p in view.phases):
                row.columns.append(MoveOption(view.column, may_force, "not allowed"))
            elif view.is_full:
                row.columns.append(MoveOption(view.column, may_force, f"full {view.count}/{view.limit}"))
            else:
                row.columns.append(MoveOption(view.column, True))
        choices[phase.pk] = row
    return choices


def _phase_option(phase, other, may_force):
    if other == phase:
        return PhaseOption(other, False, "current phase", current=True)
    if phase.can_transition_to(other):
        return PhaseOption(other, True)
    return PhaseOption(other, may_force, "not allowed")
