"""Analytics numbers: the cumulative flow, lead and cycle times, percentiles, throughput, WIP aging, branch depth.

Built by hand on a small workflow of its own, so the numbers are known: a
history written row by row, at chosen times.
"""

import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from board.models import Board, PhaseHistory, Task, Ticket
from board.services import task_create, ticket_create
from discoveries.analytics import (
    DEFAULT_DAYS,
    branch_depths,
    discovery_analytics,
    flow_analytics,
    name_tickets,
    parse_days,
    percentile,
)
from discoveries.charts import (
    FALLBACK_COLORS,
    aging_chart,
    cfd_chart,
    nice_scale,
    rows_chart,
    throughput_chart,
    time_scatter,
)
from discoveries.services import discovery_branch, discovery_record, discovery_resolve

from .workflow_samples import load

pytestmark = pytest.mark.django_db

# Two phases share the Doing column: moving between them is no move on the board.
FLOW = textwrap.dedent(
    """\
    slug: flow
    name: Flow
    phases:
      - id: PHASE_TODO
        name: To do
        allowed_transitions: [PHASE_BUILD, PHASE_PARKED]
      - id: PHASE_BUILD
        name: Build
        allowed_transitions: [PHASE_REVIEW, PHASE_PARKED]
      - id: PHASE_REVIEW
        name: Review
        allowed_transitions: [PHASE_DONE, PHASE_BUILD, PHASE_PARKED]
      - id: PHASE_DONE
        name: Done
        is_terminal: true
      - id: PHASE_PARKED
        name: Parked
        allowed_transitions: [PHASE_TODO, PHASE_BUILD, PHASE_REVIEW]
      - id: PHASE_LIMBO
        name: Limbo
    board_columns:
      - id: todo
        name: To do
        phase_mapping: [PHASE_TODO]
        category: waiting
        color_theme: slate
      - id: doing
        name: Doing
        phase_mapping: [PHASE_BUILD, PHASE_REVIEW]
        category: working
        color_theme: blue
      - id: done
        name: Done
        phase_mapping: [PHASE_DONE]
        is_terminal: true
        category: done
      - id: parked
        name: Parked
        phase_mapping: [PHASE_PARKED]
        category: waiting
      - id: limbo
        name: Limbo
        phase_mapping: [PHASE_LIMBO]
        category: working
    """
)
KEYS = {
    "todo": "PHASE_TODO",
    "build": "PHASE_BUILD",
    "review": "PHASE_REVIEW",
    "done": "PHASE_DONE",
    "parked": "PHASE_PARKED",
}
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)  # a Wednesday; the window of 3 days is Monday 2 to Wednesday 4


def at(day, hour=0, minute=0):
    """A moment in March 2026 (February for days below 1: 0 is the 28th)."""
    return datetime(2026, 3, 1, hour, minute, tzinfo=UTC) + timedelta(days=day - 1)


@pytest.fixture
def flow_board(alice):
    board = Board.objects.create(name="Flow", slug="flow", workflow=load(FLOW).workflow)
    board.members.add(alice)
    return board


@pytest.fixture
def story(flow_board):
    """Make a ticket whose history is `steps`: (phase short name, moment), the first being its creation."""
    phases = {phase.key: phase for phase in flow_board.workflow.phases.all()}

    def story(title, *steps):
        first = KEYS.get(steps[0][0], steps[0][0])
        ticket = Ticket.objects.create(board=flow_board, title=title, phase=phases.get(first, phases["PHASE_TODO"]))
        previous = ""
        for name, moment in steps:
            key = KEYS.get(name, name)
            row = PhaseHistory.objects.create(
                ticket=ticket, from_key=previous, to_key=key, to_phase=phases.get(key), actor="test"
            )
            # auto_now_add stamps the row with the clock: the moment is set afterwards.
            PhaseHistory.objects.filter(pk=row.pk).update(created_at=moment)
            previous = key
        return ticket

    return story


def cfd_of(flow):
    keys = [column.key for column in flow.columns]
    return {day.isoformat(): dict(zip(keys, counts, strict=True)) for day, counts in flow.cfd}


def test_the_cumulative_flow_counts_each_column_at_the_end_of_each_day(flow_board, story):
    story("A", ("todo", at(1, 10)), ("build", at(2, 9)), ("review", at(2, 17)), ("done", at(3, 15)))
    story("B", ("todo", at(2, 11)), ("review", at(2, 12)), ("parked", at(4, 8)))
    story("C", ("todo", at(3, 10)))
    story("D", ("todo", at(-8)), ("build", at(-7)), ("review", at(-6)), ("done", at(-3)))
    # After now: not seen yet.
    story("E", ("todo", at(4, 13)))

    flow = flow_analytics(flow_board, days=3, now=NOW)

    assert [column.key for column in flow.columns] == ["todo", "doing", "done", "parked", "limbo"]
    assert cfd_of(flow) == {
        "2026-03-02": {"todo": 0, "doing": 2, "done": 1, "parked": 0, "limbo": 0},
        "2026-03-03": {"todo": 1, "doing": 1, "done": 2, "parked": 0, "limbo": 0},
        "2026-03-04": {"todo": 1, "doing": 0, "done": 2, "parked": 1, "limbo": 0},
    }
    assert flow.history_rows == 12


def test_a_row_at_midnight_belongs_to_the_day_it_starts(flow_board, story):
    story("A", ("todo", at(2, 0)), ("build", at(3, 0)))

    assert cfd_of(flow_analytics(flow_board, days=3, now=NOW))["2026-03-02"]["todo"] == 1
    assert cfd_of(flow_analytics(flow_board, days=3, now=NOW))["2026-03-03"] == {
        "todo": 0,
        "doing": 1,
        "done": 0,
        "parked": 0,
        "limbo": 0,
    }


def test_a_phase_no_column_shows_takes_the_ticket_off_the_flow(flow_board, story):
    # A phase a reload removed: its key is in the history, in no column.
    story("A", ("todo", at(1)), ("PHASE_GONE", at(2, 12)), ("build", at(3, 12)))

    assert [sum(counts) for _, counts in flow_analytics(flow_board, days=3, now=NOW).cfd] == [0, 1, 1]


def test_lead_and_cycle_time_end_at_the_first_entry_into_a_done_column(flow_board, story):
    story("A", ("todo", at(1, 10)), ("build", at(2, 9)), ("review", at(2, 17)), ("done", at(3, 15)))
    # Reopened and done again: its first finish counts, once.
    story("R", ("todo", at(1)), ("build", at(1, 12)), ("done", at(2)), ("review", at(2, 6)), ("done", at(3)))
    # Never worked on: a lead time, no cycle time.
    story("S", ("todo", at(2)), ("done", at(2, 12)))
    # Finished before the window.
    story("D", ("todo", at(-8)), ("build", at(-7)), ("done", at(-3)))

    flow = name_tickets(flow_analytics(flow_board, days=3, now=NOW).finished)

    assert [(item.title, item.lead_days, item.cycle_days) for item in flow] == [
        ("R", 1.0, 0.5),
        ("S", 0.5, None),
        ("A", 2 + 5 / 24, 1.25),
    ]


def test_percentiles_are_nearest_rank():
    values = [15, 20, 35, 40, 50]
    assert [percentile(values, p) for p in (5, 30, 40, 50, 100)] == [15, 20, 20, 35, 50]
    # Linear interpolation would give 10.5, 17.15 and 19.05.
    days = [float(n) for n in range(20, 0, -1)]
    assert [percentile(days, p) for p in (50, 85, 95)] == [10.0, 17.0, 19.0]
    assert percentile([], 50) is None
    assert percentile([7], 95) == 7


def test_cycle_time_percentiles_of_known_cycle_times(flow_board, story):
    for n in range(1, 21):
        start = at(1) - timedelta(days=n)
        story(f"T{n}", ("todo", start - timedelta(days=3)), ("build", start), ("done", at(1)))

    flow = flow_analytics(flow_board, days=DEFAULT_DAYS, now=NOW)

    assert sorted(flow.cycle_times) == [float(n) for n in range(1, 21)]
    assert flow.cycle == {50: 10.0, 85: 17.0, 95: 19.0}
    assert flow.lead == {50: 13.0, 85: 20.0, 95: 22.0}


def test_throughput_counts_first_finishes_per_week(flow_board, story):
    # Ten days: Monday 23 February to Wednesday 4 March, two weeks.
    story("A", ("todo", at(-10)), ("done", at(-5)))  # Monday 23 February
    story("B", ("todo", at(-10)), ("done", at(-4)))  # Tuesday 24 February
    story("C", ("todo", at(-10)), ("done", at(3)))  # Tuesday 3 March
    story("Old", ("todo", at(-20)), ("done", at(-15)))  # Friday 13 February, before the window

    flow = flow_analytics(flow_board, days=10, now=NOW)

    assert [(week.isoformat(), count) for week, count in flow.throughput] == [
        ("2026-02-23", 2),
        ("2026-03-02", 1),
    ]


def test_work_in_progress_ages_in_its_current_column(flow_board, story):
    for n in range(1, 21):  # cycle times 1 to 20 days: 50th 10, 85th 17, 95th 19
        story(f"T{n}", ("build", at(1) - timedelta(days=n)), ("done", at(1)))
    # In Doing since 18 days ago (moving between its phases is no move), past the 85th percentile.
    story("Late", ("todo", NOW - timedelta(days=30)), ("build", NOW - timedelta(days=18)), ("review", at(4)))
    # Started, parked 2 days ago: aged in Parked.
    story("Parked", ("todo", at(-10)), ("build", at(-9)), ("parked", NOW - timedelta(days=2)))
    # Not started: no work in progress.
    story("Waiting", ("todo", at(-10)))

    flow = flow_analytics(flow_board, days=DEFAULT_DAYS, now=NOW)
    wip = name_tickets(flow.wip)

    assert [(item.title, flow.columns[item.column].key, item.age_days) for item in wip] == [
        ("Late", "doing", 18.0),
        ("Parked", "parked", 2.0),
    ]
    assert [flow.age_rank(item.age_days) for item in wip] == [85, None]
    assert [(row["column"].key, row["count"], row["oldest_days"], row["past_85"]) for row in flow.wip_by_column] == [
        ("doing", 1, 18.0, 1),
        ("parked", 1, 2.0, 0),
    ]


def test_tickets_of_other_boards_do_not_count(flow_board, story, alice):
    other = Board.objects.create(name="Other", slug="other", workflow=flow_board.workflow)
    ticket_create(board=other, title="Elsewhere", actor=alice)
    story("Here", ("todo", at(3)))

    flow = flow_analytics(flow_board, days=3, now=NOW)

    assert [sum(counts) for _, counts in flow.cfd] == [0, 1, 1]


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, 30), ("", 30), ("7", 7), ("90", 90), ("365", 365), ("1", 1), ("030", 30)]
)
def test_a_range_is_a_whole_number_of_days(raw, expected):
    assert parse_days(raw) == expected


@pytest.mark.parametrize("raw", ["0", "366", "-1", "7.5", "abc", " 7", "٣", "1e2", "9" * 40, "<b>7</b>"])
def test_any_other_range_is_refused_with_the_reason(raw):
    with pytest.raises(ValueError) as info:
        parse_days(raw)
    assert str(info.value).startswith("The range must be a whole number of days from 1 to 365, not ")
    assert len(str(info.value)) < 120


# Discoveries


def test_depth_counts_the_discovery_branches_from_the_root():
    # root -> a (branch) -> b (branch) -> c (branch); root -> d (branch);
    # a -> e (a plain subtask) -> f (branch): two branches from the root.
    parents = {"a": "root", "b": "a", "c": "b", "d": "root", "e": "a", "f": "e"}
    spawned = {"a", "b", "c", "d", "f"}

    assert branch_depths(parents, spawned) == {"a": 1, "b": 2, "c": 3, "d": 1, "f": 2}


def test_depth_survives_a_loop_and_a_missing_parent():
    assert branch_depths({"a": "b", "b": "a"}, {"a", "b"}) in ({"a": 1, "b": 2}, {"a": 2, "b": 1})
    assert branch_depths({}, {"orphan"}) == {"orphan": 1}


@pytest.fixture
def found(board, alice, bob):
    """A branch tree on Alice's board, written through the services."""
    ticket = ticket_create(board=board, title="Login", actor=alice)
    root = task_create(ticket=ticket, title="Build it", actor=alice, phase="PHASE_IMPLEMENTATION")
    d1, a = discovery_branch(source_task=root, discovery_type="bug", description="Crash", actor=alice)
    d2, b = discovery_branch(
        source_task=a, discovery_type="bug", description="Another", actor=alice, phase="PHASE_TESTING"
    )
    plain = task_create(ticket=ticket, title="Subtask", actor=alice, parent=b, phase="PHASE_TESTING")
    d3, c = discovery_branch(
        source_task=plain, discovery_type="security_issue", description="<script>x</script>", actor=alice
    )
    d4 = discovery_record(source_task=root, discovery_type="optimization", description="Faster", actor=alice)
    discovery_resolve(discovery=d1, status="resolved", reason="Fixed", actor=alice)
    discovery_resolve(discovery=d4, status="invalid", reason="Not really", actor=alice)
    return {"root": root, "a": a, "b": b, "c": c, "d1": d1, "d2": d2, "d3": d3, "d4": d4}


def test_discovery_counts_rates_and_depth(board, found):
    stats = discovery_analytics(Board.objects.filter(pk=board.pk), days=7)

    assert stats["total"] == 4
    assert {key: count for key, count in stats["by_type"].items() if count} == {
        "bug": 2,
        "security_issue": 1,
        "optimization": 1,
    }
    assert stats["by_type"]["technical_debt"] == 0
    assert stats["by_status"] == {"open": 2, "resolved": 1, "invalid": 1}
    assert stats["resolution_rate"] == 0.5
    # Found in the source task's phase: root and a in Implementation, the subtask in Testing.
    assert [(row["phase"], row["count"]) for row in stats["by_phase"]] == [
        ("PHASE_IMPLEMENTATION", 3),
        ("PHASE_TESTING", 1),
    ]
    # a: 1, b: 2, c: 3 (through the plain subtask of b).
    assert stats["branch_depth"] == {"spawned_tasks": 3, "average": 2.0, "max": 3}
    assert [d.pk for d in stats["open"]] == [found["d3"].pk, found["d2"].pk]
    assert sum(day["count"] for day in stats["per_day"]) == 4
    assert len(stats["per_day"]) == 7


def test_discoveries_per_day_in_the_site_time_zone(board, found, settings):
    moments = {
        "d1": datetime(2026, 3, 3, 23, 30, tzinfo=UTC),
        "d2": datetime(2026, 3, 4, 0, 30, tzinfo=UTC),
        "d3": datetime(2026, 3, 4, 11, 0, tzinfo=UTC),
        "d4": datetime(2026, 2, 20, tzinfo=UTC),  # before the window
    }
    for name, moment in moments.items():
        type(found[name]).objects.filter(pk=found[name].pk).update(discovered_at=moment)
    boards = Board.objects.filter(pk=board.pk)

    utc = discovery_analytics(boards, days=3, now=NOW)["per_day"]
    settings.TIME_ZONE = "Asia/Tokyo"  # 9 hours ahead: 23:30 UTC on the 3rd is the 4th there
    tokyo = discovery_analytics(boards, days=3, now=NOW)["per_day"]

    assert [(day["date"].isoformat(), day["count"]) for day in utc] == [
        ("2026-03-02", 0),
        ("2026-03-03", 1),
        ("2026-03-04", 2),
    ]
    assert [(day["date"].isoformat(), day["count"]) for day in tokyo] == [
        ("2026-03-02", 0),
        ("2026-03-03", 0),
        ("2026-03-04", 3),
    ]


def test_no_discoveries_no_rate(board):
    stats = discovery_analytics(Board.objects.filter(pk=board.pk))
    assert (stats["total"], stats["resolution_rate"], stats["branch_depth"]) == (
        0,
        None,
        {"spawned_tasks": 0, "average": None, "max": 0},
    )


def test_tasks_of_other_boards_are_not_counted(board, found, workflow, alice):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    task = task_create(ticket=ticket_create(board=other, title="Else", actor=alice), title="T", actor=alice)
    discovery_branch(source_task=task, discovery_type="bug", description="Elsewhere", actor=alice)

    stats = discovery_analytics(Board.objects.filter(pk=board.pk))

    assert stats["total"] == 4
    assert stats["branch_depth"]["spawned_tasks"] == 3
    assert Task.objects.count() == 7


# Charts, by their numbers: the plot is 56 to 584 across and 16 to 256 down (y grows downwards).


def test_a_nice_scale_covers_the_values_in_round_steps():
    assert nice_scale(0) == (1, [0, 1])
    assert nice_scale(1) == (1, [0, 1])
    assert nice_scale(7) == (8, [0, 2, 4, 6, 8])
    assert nice_scale(300) == (300, [0, 100, 200, 300])
    assert nice_scale(2.3, whole=False) == (2.5, [0, 0.5, 1.0, 1.5, 2.0, 2.5])


def test_the_cumulative_flow_stacks_the_columns_with_done_at_the_bottom(flow_board, story):
    story("A", ("todo", at(1, 10)), ("build", at(2, 9)), ("done", at(3, 15)))
    story("B", ("todo", at(2, 11)), ("review", at(2, 12)), ("parked", at(4, 8)))
    story("C", ("todo", at(3, 10)))
    story("D", ("todo", at(-8)), ("done", at(-3)))

    chart = cfd_chart(flow_analytics(flow_board, days=3, now=NOW))

    # Totals 3, 4, 4 on a scale to 4; Limbo, always empty, draws nothing.
    assert [tick.label for tick in chart.y_ticks] == ["0", "1", "2", "3", "4"]
    assert [area.label for area in chart.areas] == ["Done", "Parked", "Doing", "To do"]
    done, *_, todo = chart.areas
    # Done holds 1, 2, 2: its top edge, then its bottom edge back along the axis.
    assert done.points.split() == [
        "56.0,196.0",
        "320.0,136.0",
        "584.0,136.0",
        "584.0,256.0",
        "320.0,256.0",
        "56.0,256.0",
    ]
    assert todo.points.split()[:3] == ["56.0,76.0", "320.0,16.0", "584.0,16.0"]
    assert (done.color, todo.color) == (FALLBACK_COLORS[0], "var(--slate)")
    assert [tick.label for tick in chart.x_ticks] == ["2 Mar", "3 Mar", "4 Mar"]
    assert chart.desc.endswith("On 4 Mar 2026: To do 1, Doing 0, Done 2, Parked 1, Limbo 0.")


def test_the_cycle_time_scatter_draws_each_ticket_and_the_percentiles(flow_board, story):
    for n in range(1, 21):
        story(f"T{n}", ("build", at(1) - timedelta(days=n)), ("done", at(1)))

    flow = flow_analytics(flow_board, days=DEFAULT_DAYS, now=NOW)
    name_tickets(flow.finished)
    chart = time_scatter(flow, kind="cycle")

    assert len(chart.points) == 20
    # 1 to 20 days on a scale to 20: each day is 12 units up from the axis at 256.
    assert sorted(point.y for point in chart.points) == [256.0 - 12 * n for n in range(20, 0, -1)]
    assert [(rule.label, rule.y, rule.style) for rule in chart.rules] == [
        ("50th 10 d", 136.0, "p50"),
        ("85th 17 d", 52.0, "p85"),
        ("95th 19 d", 28.0, "p95"),
    ]
    # Every ticket finished on 1 March, 27 of the 30 days along.
    assert {point.x for point in chart.points} == {round(56 + 528 * 26 / (29 + 12 / 24), 1)}
    assert "T10" in " ".join(point.label for point in chart.points)
    assert "50th percentile 10 days, 85th percentile 17 days, 95th percentile 19 days." in chart.desc


def test_percentile_labels_close_together_move_apart(flow_board, story):
    for n in (10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 11):
        story("T", ("build", at(1) - timedelta(days=n)), ("done", at(1)))

    chart = time_scatter(flow_analytics(flow_board, days=DEFAULT_DAYS, now=NOW), kind="cycle")

    label_heights = [rule.text_y for rule in chart.rules]
    assert all(abs(a - b) >= 12 for a, b in zip(label_heights, label_heights[1:], strict=False))


def test_throughput_bars_are_as_tall_as_their_counts(flow_board, story):
    story("A", ("todo", at(-10)), ("done", at(-5)))
    story("B", ("todo", at(-10)), ("done", at(-4)))
    story("C", ("todo", at(-10)), ("done", at(3)))

    chart = throughput_chart(flow_analytics(flow_board, days=10, now=NOW))

    assert [(bar.value, bar.height) for bar in chart.bars] == [("2", 240.0), ("1", 120.0)]
    assert [tick.label for tick in chart.x_ticks] == ["23 Feb", "2 Mar"]
    assert "week of 23 Feb 2, week of 2 Mar 1" in chart.desc


def test_aging_dots_stand_above_their_column_at_their_age(flow_board, story):
    for n in range(1, 21):
        story(f"T{n}", ("build", at(1) - timedelta(days=n)), ("done", at(1)))
    story("Late", ("todo", NOW - timedelta(days=30)), ("build", NOW - timedelta(days=18)))

    flow = flow_analytics(flow_board, days=DEFAULT_DAYS, now=NOW)
    chart = aging_chart(flow)

    # Columns other than done, in order: To do, Doing, Parked, Limbo; Doing is the second band.
    assert [tick.label for tick in chart.x_ticks] == ["To do", "Doing", "Parked", "Limbo"]
    [dot] = chart.points
    assert (dot.x, dot.color) == (56 + 528 / 4 * 1.5 - 3 * 8, "var(--blue)")
    assert dot.y == 256 - 18 / 20 * 240
    assert [rule.label for rule in chart.rules] == ["50th 10 d", "85th 17 d", "95th 19 d"]


def test_bar_rows_are_as_long_as_their_counts():
    chart = rows_chart("x", "Title", "Desc", [("Bug", 4, "red"), ("A" * 40, 2, "blue"), ("None", 0, "blue")])

    assert [(bar.width, bar.value) for bar in chart.bars] == [(228.0, "4"), (114.0, "2"), (0.0, "0")]
    assert [label.label for label in chart.row_labels] == ["Bug", "A" * 25 + "…", "None"]
    assert not chart.empty
    assert rows_chart("x", "T", "D", [("Bug", 0, "red")]).empty == "No discovery yet."
