"""The numbers behind the analytics page and API: a board's flow, read from its phase history, and its discoveries.

Definitions, the same on every workflow thanks to the columns' categories
(waiting, working, done):

- A ticket is in the column that shows the phase its latest history row
  entered; a phase no column shows (removed by a reload) puts it in none.
- Lead time: from the ticket's first history row (its creation) to its first
  entry into a done column. Cycle time: from its first entry into a working
  column to that same moment; a ticket that never worked has none.
- Throughput: tickets whose first entry into a done column falls in the week
  (Monday to Sunday).
- Work in progress: tickets that entered a working column and are not in a
  done column now; their age is the time since they entered the column they
  are in.
- Percentiles are nearest-rank: the p-th percentile of n values is the value
  at rank ceil(p × n / 100) in ascending order, so it is always one of the
  times measured (never a time in between that no ticket took).
- Days are calendar days in the site's time zone (TIME_ZONE); the range is the
  last `days` of them, today included.
- A discovery's branch depth is that of the task it spawned: how many
  discovery branches lead from the root task to it (a spawned task's parent
  is its discovery's source task; a task no discovery spawned is at depth 0).

Each function costs a fixed number of queries whatever the history's size:
the whole history is read in one ordered query and walked once.
"""

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta

from django.db import NotSupportedError
from django.db.models import Count, FloatField, Func, Prefetch
from django.db.models.functions import TruncDate
from django.utils import timezone

from board.models import PhaseHistory, Task, Ticket
from phases.models import BoardColumn, Phase

from .models import Discovery

PERCENTILES = (50, 85, 95)
DEFAULT_DAYS = 30
MAX_DAYS = 365
# The ranges the page offers; any whole number of days from 1 to MAX_DAYS is accepted.
RANGE_CHOICES = (7, 30, 90, 365)
# The oldest work in progress listed by name, and the open discoveries listed, newest first.
WIP_LISTED = 100
OPEN_LISTED = 50
DAY = timedelta(days=1)
_DAYS = re.compile(r"[0-9]{1,3}")


def parse_days(raw):
    """The number of days a query string asks for (`DEFAULT_DAYS` when absent); ValueError with the reason otherwise."""
    if raw is None or raw == "":
        return DEFAULT_DAYS
    if not isinstance(raw, str) or not _DAYS.fullmatch(raw) or not 1 <= int(raw) <= MAX_DAYS:
        shown = raw if isinstance(raw, str) and len(raw) <= 20 else f"{str(raw)[:19]}…"
        raise ValueError(f"The range must be a whole number of days from 1 to {MAX_DAYS}, not {shown!r}.")
    return int(raw)


def percentile(values, p):
    """The nearest-rank p-th percentile of `values` (None when there are none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-p * len(ordered) // 100))  # ceil(p × n / 100) in whole numbers: no rounding surprises
    return ordered[rank - 1]


def percentiles(values):
    return {p: percentile(values, p) for p in PERCENTILES}


def _day_start(day):
    return timezone.make_aware(datetime.combine(day, time.min))


@dataclass(frozen=True)
class Window:
    """The last `days` calendar days up to `now`, today included."""

    days: int
    now: datetime

    @property
    def last_day(self):
        return timezone.localdate(self.now)

    @property
    def first_day(self):
        return self.last_day - timedelta(days=self.days - 1)

    @property
    def start(self):
        return _day_start(self.first_day)

    @property
    def dates(self):
        return [self.first_day + timedelta(days=offset) for offset in range(self.days)]

    @property
    def weeks(self):
        """The Monday of each week the window touches."""
        monday = self.first_day - timedelta(days=self.first_day.weekday())
        return [monday + timedelta(weeks=n) for n in range((self.last_day - monday).days // 7 + 1)]


def window(days=DEFAULT_DAYS, *, now=None):
    return Window(days=days, now=now or timezone.now())


SECONDS_A_DAY = 86400


class EpochSeconds(Func):
    """A datetime column as seconds since 1970 (UTC), a float.

    The flow reads every history row of a board: 100,000 datetimes cost the
    drivers half a second to build with their time zones, and the same
    instants as numbers a tenth of that. SQLite stores UTC text, read by
    julianday (rounded to the millisecond it is exact to); PostgreSQL
    extracts the epoch.
    """

    output_field = FloatField()

    def as_postgresql(self, compiler, connection):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"EXTRACT(EPOCH FROM {sql})::float8", params

    def as_sqlite(self, compiler, connection):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"ROUND((julianday({sql}) - 2440587.5) * 86400.0, 3)", params

    def as_sql(self, compiler, connection, **extra):
        raise NotSupportedError(f"EpochSeconds is written for SQLite and PostgreSQL, not {connection.vendor}.")


# Flow


@dataclass
class FlowColumn:
    key: str
    name: str
    category: str
    color: str


@dataclass
class Finished:
    """A ticket that first entered a done column inside the window."""

    ticket_id: int
    done_at: datetime
    lead_days: float
    cycle_days: float | None
    title: str = ""


@dataclass
class Aging:
    """A ticket in progress: its column and how long it has been there."""

    ticket_id: int
    column: int
    age_days: float
    title: str = ""


@dataclass
class Flow:
    window: Window
    columns: list
    # (day, [tickets in each column at the end of the day]) for each day of the window.
    cfd: list
    finished: list
    lead: dict
    cycle: dict
    throughput: list
    wip: list
    history_rows: int = 0
    wip_by_column: list = field(default_factory=list)
    # Which column shows each phase key.
    column_of: dict = field(default_factory=dict)

    @property
    def cycle_times(self):
        return [item.cycle_days for item in self.finished if item.cycle_days is not None]

    def age_rank(self, age_days):
        """The highest cycle-time percentile an age is past, or None: how late a ticket in progress is."""
        passed = [p for p in PERCENTILES if self.cycle[p] is not None and age_days > self.cycle[p]]
        return passed[-1] if passed else None


def flow_columns(board):
    """The board's columns in order, and which column shows each phase key: two queries."""
    columns = list(
        BoardColumn.objects.filter(workflow_id=board.workflow_id)
        .prefetch_related(Prefetch("phases", queryset=Phase.objects.only("pk", "key")))
        .order_by("sequence_order", "key")
    )
    column_of = {phase.key: index for index, column in enumerate(columns) for phase in column.phases.all()}
    shown = [
        FlowColumn(key=column.key, name=column.name, category=column.category, color=column.color_hex)
        for column in columns
    ]
    return shown, column_of


def flow_analytics(board, *, days=DEFAULT_DAYS, now=None):
    """The board's flow over the last `days` days: its cumulative flow, lead and cycle times, throughput and WIP.

    Three queries: the columns, their phases and the history; `name_tickets` adds one for the titles shown.
    """
    span = window(days, now=now)
    columns, column_of = flow_columns(board)
    category = [column.category for column in columns]
    rows = (
        PhaseHistory.objects.filter(ticket__board_id=board.pk, created_at__lte=span.now)
        .order_by("created_at", "id")
        .values_list("ticket_id", "to_key", EpochSeconds("created_at"))
    )
    # The end of each day of the window: a row at or after it belongs to a later day.
    ends = [_day_start(day + DAY).timestamp() for day in span.dates]

    counts = [0] * len(columns)
    where, created, entered, first_working, first_done = {}, {}, {}, {}, {}
    cfd, day, rows_read = [], 0, 0
    for ticket, key, at in rows:
        rows_read += 1
        while day < len(ends) and at >= ends[day]:
            cfd.append((span.dates[day], counts.copy()))
            day += 1
        column = column_of.get(key)
        if ticket not in where:
            created[ticket] = at
            previous = None
        else:
            previous = where[ticket]
            if column == previous:
                continue  # a move between phases of one column: the ticket stays where it was
        if previous is not None:
            counts[previous] -= 1
        if column is not None:
            counts[column] += 1
            if category[column] == "working":
                first_working.setdefault(ticket, at)
            elif category[column] == "done":
                first_done.setdefault(ticket, at)
        where[ticket] = column
        entered[ticket] = at
    while day < len(ends):
        cfd.append((span.dates[day], counts.copy()))
        day += 1

    finished, start = [], span.start.timestamp()
    for ticket, done_at in first_done.items():
        if done_at < start:
            continue
        started = first_working.get(ticket)
        finished.append(
            Finished(
                ticket_id=ticket,
                done_at=datetime.fromtimestamp(done_at, tz=UTC),
                lead_days=(done_at - created[ticket]) / SECONDS_A_DAY,
                cycle_days=(done_at - started) / SECONDS_A_DAY if started is not None and started <= done_at else None,
            )
        )
    finished.sort(key=lambda item: (item.done_at, item.ticket_id))

    weekly = dict.fromkeys(span.weeks, 0)
    for item in finished:
        done_day = timezone.localdate(item.done_at)
        weekly[done_day - timedelta(days=done_day.weekday())] += 1

    now_seconds = span.now.timestamp()
    wip = [
        Aging(ticket_id=ticket, column=column, age_days=(now_seconds - entered[ticket]) / SECONDS_A_DAY)
        for ticket, column in where.items()
        if column is not None and category[column] != "done" and ticket in first_working
    ]
    wip.sort(key=lambda item: (-item.age_days, item.ticket_id))

    flow = Flow(
        window=span,
        columns=columns,
        cfd=cfd,
        finished=finished,
        lead=percentiles([item.lead_days for item in finished]),
        cycle=percentiles([item.cycle_days for item in finished if item.cycle_days is not None]),
        throughput=list(weekly.items()),
        wip=wip,
        history_rows=rows_read,
        column_of=column_of,
    )
    flow.wip_by_column = _wip_by_column(flow)
    return flow


def _wip_by_column(flow):
    """For each column holding work in progress: how many tickets, the oldest and the median age, and how many are late."""
    ages = defaultdict(list)
    for item in flow.wip:
        ages[item.column].append(item.age_days)
    late = flow.cycle[85]
    return [
        {
            "column": flow.columns[index],
            "index": index,
            "count": len(ages[index]),
            "oldest_days": max(ages[index]),
            "median_days": percentile(ages[index], 50),
            "past_85": sum(1 for age in ages[index] if late is not None and age > late),
        }
        for index in sorted(ages)
    ]


def name_tickets(items):
    """Fill in the titles of the tickets in `items` (Finished or Aging rows), in one query."""
    ids = {item.ticket_id for item in items}
    titles = dict(Ticket.objects.filter(pk__in=ids).values_list("pk", "title")) if ids else {}
    for item in items:
        item.title = titles.get(item.ticket_id, "")
    return items


# Discoveries


def branch_depths(parents, spawned):
    """{spawned task: depth}: how many discovery branches lead from its root task to it.

    `parents` maps each task that has a parent to it (Task.parent); `spawned`
    holds the tasks a discovery spawned. Walking up from a task, each spawned
    task on the way (itself included) is one branch; a task with no parent is
    a root. Only a hand-made parent could close a loop: a task met again on
    the way up counts as a root, so the walk always ends.
    """
    depths = {}
    for start in spawned:
        chain, seen, task = [], set(), start
        while task is not None and task not in depths and task not in seen:
            chain.append(task)
            seen.add(task)
            task = parents.get(task)
        depth = depths.get(task, 0)
        for task in reversed(chain):
            depth += task in spawned
            depths[task] = depth
    return {task: depths[task] for task in spawned}


def discovery_analytics(boards, *, days=DEFAULT_DAYS, now=None, open_listed=OPEN_LISTED):
    """What was found on `boards` (a QuerySet of boards): counts, resolution, branch depth, per day, the open ones.

    Counts, the resolution rate and depths cover every discovery; `per_day`
    covers the last `days` days. Five queries.
    """
    span = window(days, now=now)
    found = Discovery.objects.filter(source_task__ticket__board__in=boards)

    by_type = dict.fromkeys(Discovery.Type.values, 0)
    by_status = dict.fromkeys(Discovery.Resolution.values, 0)
    phases = {}
    grouped = (
        found.values(
            "discovery_type",
            "resolution_status",
            "source_task__phase__key",
            "source_task__phase__name",
            "source_task__phase__sequence_order",
        )
        .annotate(count=Count("id"))
        .order_by()
    )
    for row in grouped:
        count = row["count"]
        by_type[row["discovery_type"]] = by_type.get(row["discovery_type"], 0) + count
        by_status[row["resolution_status"]] = by_status.get(row["resolution_status"], 0) + count
        # Boards of different workflows may share a phase key: counted together, under the first name met.
        key = row["source_task__phase__key"]
        entry = phases.setdefault(key, {"phase": key, "name": row["source_task__phase__name"], "count": 0})
        entry["count"] += count
        order = row["source_task__phase__sequence_order"]
        entry["order"] = min(entry.get("order", order), order)
    by_phase = sorted(phases.values(), key=lambda entry: (entry["order"], entry["phase"]))
    total = sum(by_status.values())
    closed = total - by_status.get(Discovery.Resolution.OPEN, 0)

    per_day = dict.fromkeys(span.dates, 0)
    daily = (
        found.filter(discovered_at__gte=span.start, discovered_at__lte=span.now)
        .annotate(day=TruncDate("discovered_at", tzinfo=timezone.get_current_timezone()))
        .values("day")
        .annotate(count=Count("id"))
        .order_by()
    )
    for row in daily:
        if row["day"] in per_day:
            per_day[row["day"]] += row["count"]

    spawned = set(Discovery.spawned_tasks.through.objects.filter(discovery__in=found).values_list("task_id", flat=True))
    parents = dict(Task.objects.filter(ticket__board__in=boards, parent__isnull=False).values_list("pk", "parent_id"))
    depths = list(branch_depths(parents, spawned).values())

    open_ones = list(
        found.filter(resolution_status=Discovery.Resolution.OPEN)
        .select_related("source_task__ticket__board", "source_task__phase")
        .order_by("-discovered_at", "-id")[:open_listed]
    )
    return {
        "days": days,
        "first_day": span.first_day,
        "last_day": span.last_day,
        "total": total,
        "by_type": by_type,
        "by_phase": [{key: entry[key] for key in ("phase", "name", "count")} for entry in by_phase],
        "by_status": by_status,
        "closed": closed,
        "resolution_rate": closed / total if total else None,
        "branch_depth": {
            "spawned_tasks": len(depths),
            "average": sum(depths) / len(depths) if depths else None,
            "max": max(depths, default=0),
        },
        "per_day": [{"date": day, "count": count} for day, count in per_day.items()],
        "open": open_ones,
    }
