"""Small SVG charts for the analytics page, as geometry: numbers in, shapes and labels out.

No markup is written here (text would have to be escaped by hand): the
`chart` partial of templates/discoveries/analytics.html draws any `Chart`,
and the template escapes every label. Colours are the stylesheet's variables
(a column of the palette is drawn in `var(--<name>)`, which has a light and a
dark value), or a column's own #rrggbb; every chart also carries a title and a
description for screen readers, and the page shows its numbers in a table
beside it.
"""

import math
from dataclasses import dataclass, field
from datetime import timedelta

from phases.schema import PALETTE

from .analytics import PERCENTILES

WIDTH, HEIGHT = 600, 300
# Room for the y axis's numbers and label on the left, the x axis's below.
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44
# A chart draws at most this many dots; the tables beside it say how many there are in all.
MAX_POINTS = 500
# Bar charts of categories: one row each, the label in a column of its own; narrower, to scale down on a phone.
ROWS_WIDTH, ROW_HEIGHT, LABEL_WIDTH, LABEL_CHARACTERS = 440, 24, 168, 26
# Columns without a colour of their own get one of these, in order.
FALLBACK_COLORS = [
    f"var(--{name})" for name in ("slate", "blue", "violet", "amber", "teal", "pink", "indigo", "orange")
]
# A palette colour is drawn as its stylesheet variable, so that a chart follows the theme as the page does.
_PALETTE_VARIABLES = {value: f"var(--{name})" for name, value in PALETTE.items()}
PERCENTILE_STYLE = {50: "p50", 85: "p85", 95: "p95"}


@dataclass
class Tick:
    at: float
    label: str


@dataclass
class Area:
    points: str
    color: str
    label: str


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    label: str
    value: str
    # Where the value is written: above a column, after a row.
    text_x: float = 0
    text_y: float = 0


@dataclass
class Point:
    x: float
    y: float
    label: str
    color: str = "var(--accent)"


@dataclass
class Rule:
    """A horizontal line across the plot at a value, named at its right end."""

    y: float
    label: str
    style: str
    text_y: float = 0


@dataclass
class Chart:
    id: str
    title: str
    desc: str
    x_label: str = ""
    y_label: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    left: float = LEFT
    top: float = TOP
    right: float = WIDTH - RIGHT
    bottom: float = HEIGHT - BOTTOM
    x_ticks: list = field(default_factory=list)
    y_ticks: list = field(default_factory=list)
    areas: list = field(default_factory=list)
    bars: list = field(default_factory=list)
    points: list = field(default_factory=list)
    rules: list = field(default_factory=list)
    # Category labels of a horizontal bar chart, at the left of each row.
    row_labels: list = field(default_factory=list)
    empty: str = ""

    @property
    def plot_width(self):
        return self.right - self.left

    @property
    def plot_height(self):
        return self.bottom - self.top

    @property
    def y_tick_x(self):
        return self.left - 6

    @property
    def x_tick_y(self):
        return self.bottom + 16

    @property
    def x_label_y(self):
        return self.height - 6

    @property
    def rule_text_x(self):
        return self.right - 2

    @property
    def row_label_x(self):
        return self.left - 8

    @property
    def middle_y(self):
        return (self.top + self.bottom) / 2

    @property
    def y_label_x(self):
        return self.left - 44

    @property
    def y_label_y(self):
        return (self.top + self.bottom) / 2

    @property
    def x_label_x(self):
        return (self.left + self.right) / 2


def theme_color(value):
    """The colour a chart draws for a column's colour (#rrggbb): the palette's variable, else the value itself."""
    return _PALETTE_VARIABLES.get(value.lower(), value) if value else ""


def column_colors(columns):
    """Each column's colour: its own, else the next of FALLBACK_COLORS."""
    spare = iter(FALLBACK_COLORS * (len(columns) // len(FALLBACK_COLORS) + 1))
    return [theme_color(column.color) or next(spare) for column in columns]


def number(value):
    """A figure as the page writes it: whole numbers plain, others to one decimal."""
    if value is None:
        return "–"
    rounded = round(value, 1)
    return f"{rounded:,.0f}" if rounded == int(rounded) else f"{rounded:,.1f}"


def short_date(day):
    return f"{day.day} {day:%b}"


def long_date(day):
    return f"{day.day} {day:%b %Y}"


def nice_scale(top, *, whole=True, count=5):
    """(maximum, tick values) of an axis from 0 that covers `top` in about `count` round steps."""
    if not top or top <= 0:
        return 1, [0, 1]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if whole:
        step = max(1, math.ceil(step))
    steps = math.ceil(top / step - 1e-9)
    return steps * step, [n * step for n in range(steps + 1)]


def _y_axis(chart, top, *, whole):
    maximum, values = nice_scale(top, whole=whole)
    chart.y_ticks = [Tick(round(_scale_y(chart, value, maximum), 1), number(value)) for value in values]
    return maximum


def _scale_y(chart, value, maximum):
    return chart.bottom - value / maximum * chart.plot_height


def _every(count, most=7):
    """The step between labelled items so that at most `most` of `count` get a label."""
    return max(1, math.ceil(count / most))


def _date_ticks(chart, days, x_of):
    step = _every(len(days))
    chart.x_ticks = [
        Tick(round(x_of(index), 1), short_date(day)) for index, day in enumerate(days) if index % step == 0
    ]


# Flow


def cfd_chart(flow):
    """Stacked areas of the tickets in each column at the end of each day; done columns at the bottom."""
    days = [day for day, _ in flow.cfd]
    colors = column_colors(flow.columns)
    order = [i for i, c in enumerate(flow.columns) if c.category == "done"]
    order += [i for i in reversed(range(len(flow.columns))) if flow.columns[i].category != "done"]
    last = flow.cfd[-1][1] if flow.cfd else [0] * len(flow.columns)
    chart = Chart(
        id="cfd",
        title="Cumulative flow",
        desc=(
            f"Stacked areas, one per column, of the tickets in each column at the end of each day from "
            f"{long_date(days[0])} to {long_date(days[-1])}, done columns at the bottom. On {long_date(days[-1])}: "
            + ", ".join(f"{column.name} {count}" for column, count in zip(flow.columns, last, strict=True))
            + "."
        ),
        x_label="Day",
        y_label="Tickets",
    )
    maximum = _y_axis(chart, max((sum(counts) for _, counts in flow.cfd), default=0), whole=True)

    def x_of(index):
        if len(days) == 1:
            return chart.left + chart.plot_width / 2
        return chart.left + index / (len(days) - 1) * chart.plot_width

    # A single day is drawn as a band across the plot.
    xs = [x_of(i) for i in range(len(days))] if len(days) > 1 else [chart.left, chart.right]
    below = [0] * len(xs)
    for index in order:
        counts = [counts[index] for _, counts in flow.cfd]
        if len(days) == 1:
            counts = counts * 2
        above = [low + count for low, count in zip(below, counts, strict=True)]
        if any(counts):
            upper = [f"{x:.1f},{_scale_y(chart, value, maximum):.1f}" for x, value in zip(xs, above, strict=True)]
            lower = [f"{x:.1f},{_scale_y(chart, value, maximum):.1f}" for x, value in zip(xs, below, strict=True)]
            chart.areas.append(Area(" ".join(upper + lower[::-1]), colors[index], flow.columns[index].name))
        below = above
    _date_ticks(chart, days, x_of)
    if not any(sum(counts) for _, counts in flow.cfd):
        chart.empty = "No ticket was on the board in this range."
    return chart


def _rules(chart, values, maximum, unit="d"):
    """Percentile lines; their names move apart when two would overlap, and stay inside the plot."""
    placed = []
    for p in PERCENTILES:
        value = values.get(p)
        if value is None:
            continue
        y = round(_scale_y(chart, value, maximum), 1)
        text_y = y - 4
        # Apart by more than a line of the larger type a phone's charts use.
        for other in placed:
            if abs(other - text_y) < 16:
                text_y = other - 16
        placed.append(text_y)
        chart.rules.append(Rule(y=y, label=f"{p}th {number(value)} {unit}", style=PERCENTILE_STYLE[p], text_y=text_y))
    # Names pushed above the plot (lines near its top) come down together, below their lines if need be.
    below_top = chart.top + 12 - min(placed, default=chart.top + 12)
    if below_top > 0:
        for rule in chart.rules:
            rule.text_y = round(rule.text_y + below_top, 1)


def time_scatter(flow, *, kind):
    """One dot per ticket finished in the range, at the day it finished, with percentile lines.

    `kind` is "cycle" (first working column to done) or "lead" (created to done).
    """
    span = flow.window
    if kind == "cycle":
        items = [item for item in flow.finished if item.cycle_days is not None]
        value = "cycle_days"
        title = "Cycle time"
        what = "the days from its first working column to done"
    else:
        items = list(flow.finished)
        value = "lead_days"
        title = "Lead time"
        what = "the days from its creation to done"
    values = getattr(flow, kind)
    shown = items[-MAX_POINTS:]
    summary = ", ".join(f"{p}th percentile {number(values[p])} days" for p in PERCENTILES if values[p] is not None)
    chart = Chart(
        id=f"{kind}-time",
        title=title,
        desc=(
            f"One dot per ticket finished from {long_date(span.first_day)} to {long_date(span.last_day)} "
            f"({len(items)} tickets), placed by the day it finished, at {what}. "
            + (f"{summary}." if summary else "")
            + (f" The {len(shown)} latest are drawn." if len(shown) < len(items) else "")
        ),
        x_label="Finished",
        y_label="Days",
    )
    top = max([getattr(item, value) for item in items] + [v for v in values.values() if v is not None], default=0)
    maximum = _y_axis(chart, top, whole=False)
    start, seconds = span.start, (span.now - span.start).total_seconds() or 1

    def x_at(moment):
        return chart.left + (moment - start).total_seconds() / seconds * chart.plot_width

    for item in shown:
        days = getattr(item, value)
        chart.points.append(
            Point(
                x=round(x_at(item.done_at), 1),
                y=round(_scale_y(chart, days, maximum), 1),
                label=f"#{item.ticket_id} {item.title}: {number(days)} days, finished {short_date(item.done_at)}",
            )
        )
    _rules(chart, values, maximum)
    step = _every(span.days)
    chart.x_ticks = [
        Tick(round(x_at(span.start + timedelta(days=offset)), 1), short_date(span.first_day + timedelta(days=offset)))
        for offset in range(0, span.days, step)
    ]
    if not items:
        chart.empty = "No ticket was finished in this range."
    return chart


def throughput_chart(flow):
    weeks = flow.throughput
    chart = Chart(
        id="throughput",
        title="Throughput per week",
        desc=(
            "Tickets finished (first entry into a done column) in each week, Monday to Sunday: "
            + ", ".join(f"week of {short_date(week)} {count}" for week, count in weeks)
            + ". The range may start or end inside a week: such a week counts only its days in the range."
        ),
        x_label="Week starting",
        y_label="Tickets",
    )
    _columns(chart, [(short_date(week), count, "var(--accent)", f"Week of {long_date(week)}") for week, count in weeks])
    if not any(count for _, count in weeks):
        chart.empty = "No ticket was finished in this range."
    return chart


def _columns(chart, items):
    """Vertical bars, one per (tick label, value, colour, title) item, each with its value above."""
    maximum = _y_axis(chart, max((value for _, value, _, _ in items), default=0), whole=True)
    band = chart.plot_width / max(len(items), 1)
    width = max(1.0, band * 0.7)
    step = _every(len(items), most=10)
    for index, (label, value, color, title) in enumerate(items):
        x = chart.left + index * band + (band - width) / 2
        top = _scale_y(chart, value, maximum)
        chart.bars.append(
            Bar(
                x=round(x, 1),
                y=round(top, 1),
                width=round(width, 1),
                height=round(chart.bottom - top, 1),
                color=color,
                label=title,
                # Values are written above bars wide enough to hold them.
                value=number(value) if value and band >= 14 else "",
                text_x=round(x + width / 2, 1),
                text_y=round(top - 4, 1),
            )
        )
        if index % step == 0:
            chart.x_ticks.append(Tick(round(x + width / 2, 1), label))


def aging_chart(flow):
    """Each ticket in progress as a dot above its column, at its age there, against the cycle-time percentiles."""
    colors = column_colors(flow.columns)
    shown_columns = [i for i, column in enumerate(flow.columns) if column.category != "done"]
    shown = flow.wip[:MAX_POINTS]
    summary = ", ".join(
        f"{row['column'].name} {row['count']} (oldest {number(row['oldest_days'])} days)" for row in flow.wip_by_column
    )
    chart = Chart(
        id="wip-aging",
        title="Work in progress: age in its column",
        desc=(
            f"One dot per ticket in progress ({len(flow.wip)}), above the column it is in, at the days it has "
            "been there; lines mark the cycle time's percentiles. "
            + (f"{summary}." if summary else "Nothing is in progress.")
            + (f" The {len(shown)} oldest are drawn." if len(shown) < len(flow.wip) else "")
        ),
        x_label="Column",
        y_label="Days in column",
    )
    top = max([item.age_days for item in shown] + [v for v in flow.cycle.values() if v is not None], default=0)
    maximum = _y_axis(chart, top, whole=False)
    band = chart.plot_width / max(len(shown_columns), 1)
    place = {index: position for position, index in enumerate(shown_columns)}
    crowd = {}
    for item in shown:
        # Dots of one column fan out sideways, in a fixed pattern, so equal ages stay visible.
        nth = crowd[item.column] = crowd.get(item.column, -1) + 1
        offset = ((nth % 7) - 3) * min(band / 9, 8)
        chart.points.append(
            Point(
                x=round(chart.left + (place[item.column] + 0.5) * band + offset, 1),
                y=round(_scale_y(chart, item.age_days, maximum), 1),
                label=f"#{item.ticket_id} {item.title}: {number(item.age_days)} days in {flow.columns[item.column].name}",
                color=colors[item.column],
            )
        )
    chart.x_ticks = [
        Tick(round(chart.left + (position + 0.5) * band, 1), _shorten(flow.columns[index].name, 14))
        for position, index in enumerate(shown_columns)
    ]
    _rules(chart, flow.cycle, maximum)
    if not flow.wip:
        chart.empty = "No ticket is in progress."
    return chart


# Discoveries


def _shorten(text, limit=LABEL_CHARACTERS):
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rows_chart(chart_id, title, desc, items):
    """Horizontal bars, one row per (label, value, colour) item, the label on the left and the value after the bar."""
    chart = Chart(
        id=chart_id,
        title=title,
        desc=desc,
        width=ROWS_WIDTH,
        height=ROW_HEIGHT * max(len(items), 1) + 8,
        left=LABEL_WIDTH,
        top=4,
        bottom=4 + ROW_HEIGHT * max(len(items), 1),
        right=ROWS_WIDTH - 44,  # room for the value after the longest bar
    )
    maximum = max((value for _, value, _ in items), default=0) or 1
    for index, (label, value, color) in enumerate(items):
        y = chart.top + index * ROW_HEIGHT
        width = value / maximum * chart.plot_width
        chart.bars.append(
            Bar(
                x=chart.left,
                y=y + 4,
                width=round(width, 1),
                height=ROW_HEIGHT - 8,
                color=color,
                label=label,
                value=number(value),
                text_x=round(chart.left + width + 6, 1),
                text_y=y + ROW_HEIGHT / 2 + 4,
            )
        )
        chart.row_labels.append(Tick(y + ROW_HEIGHT / 2 + 4, _shorten(label)))
    if not any(value for _, value, _ in items):
        chart.empty = "No discovery yet."
    return chart


def _counted(pairs):
    return ", ".join(f"{label} {count}" for label, count in pairs) or "none"


def discovery_charts(stats, *, type_labels, status_labels, phase_colors):
    """The discovery charts: by type, by phase found in, by status, per day."""
    types = [(type_labels[key], count) for key, count in stats["by_type"].items() if count]
    phases = [(row["name"], row["count"], row["phase"]) for row in stats["by_phase"]]
    statuses = [(status_labels[key], count, key) for key, count in stats["by_status"].items()]
    status_colors = {"open": "var(--amber)", "resolved": "var(--green)", "invalid": "var(--gray)"}
    per_day = stats["per_day"]
    days = [row["date"] for row in per_day]
    daily = Chart(
        id="discoveries-per-day",
        title="Discoveries per day",
        desc=(
            f"Discoveries recorded each day from {long_date(days[0])} to {long_date(days[-1])}: "
            f"{sum(row['count'] for row in per_day)} in all"
            + (
                "; on "
                + ", ".join(f"{short_date(row['date'])} {row['count']}" for row in per_day if row["count"])
                + "."
                if any(row["count"] for row in per_day)
                else "."
            )
        ),
        x_label="Day",
        y_label="Discoveries",
    )
    _columns(
        daily,
        [(short_date(row["date"]), row["count"], "var(--accent)", long_date(row["date"])) for row in per_day],
    )
    if not any(row["count"] for row in per_day):
        daily.empty = "No discovery in this range."
    return {
        "by_type": rows_chart(
            "discoveries-by-type",
            "Discoveries by type",
            f"Discoveries of each type found, all time: {_counted(types)}.",
            [(label, count, "var(--accent)") for label, count in types],
        ),
        "by_phase": rows_chart(
            "discoveries-by-phase",
            "Discoveries by the phase they were found in",
            f"Discoveries by the phase of the task that found them, all time: {_counted(p[:2] for p in phases)}.",
            [(name, count, phase_colors.get(key) or "var(--accent)") for name, count, key in phases],
        ),
        "by_status": rows_chart(
            "discoveries-by-status",
            "Discoveries by status",
            f"Discoveries by resolution status, all time: {_counted(s[:2] for s in statuses)}.",
            [(label, count, status_colors.get(key, "var(--accent)")) for label, count, key in statuses],
        ),
        "per_day": daily,
    }
