"""Phase gates: the rules (criteria, outputs, tasks, the next phase, WIP holds), advancing, and the ticket page."""

import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.events import ORCHESTRATOR
from board.models import Event, PhaseHistory, Task, Ticket
from board.orchestration import tickets as tickets_steps
from board.orchestration.tickets import advance_tickets
from board.selectors import output_check, ticket_gate, ticket_gates
from board.selectors.gates import glob_regex
from board.services import ticket_advance, ticket_create, ticket_phase_enter, ticket_transition, ticket_update
from phases.models import BoardColumn

from .gate_samples import NOW, build_artifacts, finished, gated_board

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def from_the_first_ticket(monkeypatch):
    # The advance step goes on where it stopped, per process; each test starts at the beginning.
    monkeypatch.setitem(tickets_steps._cursor, "advance", 0)


@pytest.fixture
def gated(alice, bob):
    return gated_board(alice, bob)


@pytest.fixture
def building(gated, alice):
    """A ticket in Build, with nothing done yet."""
    return ticket_create(board=gated, title="Build it", actor=alice, phase="PHASE_BUILD")


def fresh(ticket):
    return Ticket.objects.get(pk=ticket.pk)


def gate_events(ticket):
    return list(Event.objects.filter(type="phase_gate.evaluated", entity_id=str(ticket.pk)).order_by("id"))


# The rules


def test_a_ticket_with_nothing_done_misses_every_criterion_and_required_output(gated, alice):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    gate = ticket_gate(ticket)
    assert not gate.passed
    assert (gate.met, gate.missing) == ([], ["Spec written", "Spec reviewed"])
    assert [output.label for output in gate.outputs_missing] == [f"document docs/spec/{ticket.pk}.md"]
    assert gate.outputs[1].required is False  # the optional note does not count
    assert gate.target.key == "PHASE_BUILD"


def test_a_criterion_is_met_once_a_completed_task_of_the_phase_reported_it(gated, alice):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    finished(ticket, actor=alice, criteria=["  spec   WRITTEN "])  # wording compared as a person reads it
    finished(ticket, actor=alice, criteria=["Spec reviewed"], status=Task.Status.FAILED)
    finished(ticket, actor=alice, phase="PHASE_BUILD", criteria=["Spec reviewed"])
    gate = ticket_gate(ticket)
    assert gate.met == ["Spec written"]
    assert gate.missing == ["Spec reviewed"]


def test_the_ticket_page_and_the_gate_tick_the_same_criteria(gated, alice, alice_client):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    finished(ticket, actor=alice, criteria=["Spec written"])
    html = alice_client.get(reverse("board:ticket", args=[gated.slug, ticket.pk])).content.decode()
    assert "☑</span> Spec written" in html and "☐</span> Spec reviewed" in html


def test_work_of_an_earlier_visit_does_not_open_the_gate_of_a_later_one(building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    assert ticket_gate(fresh(building)).outputs_missing == []
    ticket_transition(ticket=building, to_phase="PHASE_SPEC", actor=alice)
    ticket_transition(ticket=building, to_phase="PHASE_BUILD", actor=alice)
    gate = ticket_gate(fresh(building))
    assert len(gate.outputs_missing) == 3 and gate.tasks_total == 0
    finished(building, actor=alice, artifacts=build_artifacts(building))
    assert ticket_gate(fresh(building)).passed


def test_work_done_ahead_of_the_first_visit_counts(gated, alice):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    Task.objects.filter(ticket=ticket).update(status=Task.Status.CANCELLED)
    finished(ticket, actor=alice, phase="PHASE_BUILD", artifacts=build_artifacts(ticket))
    ticket_transition(ticket=ticket, to_phase="PHASE_BUILD", actor=alice)
    assert ticket_gate(fresh(ticket)).passed


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("tests/**/test_*.py", "tests/test_a.py", True),
        ("tests/**/test_*.py", "tests/unit/deep/test_a.py", True),
        ("tests/**/test_*.py", "tests/unit/a_test.py", False),
        ("src/*.py", "src/app.py", True),
        ("src/*.py", "src/app/models.py", False),  # * stays within a folder
        ("src/**", "src/app/models.py", True),
        ("docs/?.md", "docs/a.md", True),
        ("docs/?.md", "docs/ab.md", False),
        ("docs/[a].md", "docs/[a].md", True),  # anything else is literal
        ("docs/a.md", "docs/a_md", False),
        ("build report", "build report", True),
    ],
)
def test_patterns_are_globs_where_double_star_spans_folders(pattern, path, matches):
    assert bool(glob_regex(pattern).fullmatch(path)) is matches


def test_a_pattern_names_the_ticket_by_its_id():
    output = {"type": "document", "pattern": "docs/<ticket-id>/design.md"}
    assert output_check(output, [{"type": "document", "path": "docs/12/design.md"}], 12).satisfied
    check = output_check(output, [{"type": "document", "path": "docs/13/design.md"}], 12)
    assert not check.satisfied
    assert check.why == "no document artifact matching docs/12/design.md reported"


def test_an_artifact_must_be_of_the_outputs_type(building):
    output = {"type": "document", "pattern": "docs/*.md"}
    artifacts = [{"type": "note", "path": "docs/a.md"}, "docs/a.md", {"path": "docs/a.md"}, {"type": "document"}]
    assert not output_check(output, artifacts, building.pk).satisfied
    assert output_check(output, [{"type": "Document", "path": "docs/a.md"}], building.pk).satisfied


def test_an_output_without_a_pattern_takes_any_artifact_of_its_type():
    output = {"type": "url"}
    assert output_check(output, [{"type": "url", "url": "https://ci.example.org/1"}], 1).satisfied
    assert not output_check(output, [], 1).satisfied


@pytest.mark.parametrize(("count", "satisfied"), [(1, False), (2, True), (3, True)])
def test_min_count_needs_that_many_matching_artifacts(count, satisfied):
    output = {"type": "source", "pattern": "src/*.py", "validation_rule": "min_count: 2"}
    artifacts = [{"type": "source", "path": f"src/m{n}.py"} for n in range(count)]
    artifacts.append({"type": "source", "path": "lib/other.py"})  # does not match, so does not count
    check = output_check(output, artifacts, 1)
    assert (check.satisfied, check.checked) == (satisfied, True)
    if not satisfied:
        assert check.why == "1 of the 2 source artifacts matching src/*.py needed"


@pytest.mark.parametrize(
    ("runs", "satisfied", "why"),
    [
        ([{"passed": 12}], True, "found: tests/test_a.py"),
        ([{"passed": 9}, {"passed": 8}], False, "the best run passed 9; 10 needed"),  # runs are not added up
        ([{"passed": 9}, {"passed": 10.0}], True, "found"),
        ([{"passed": True}], False, "reports a passed count"),
        ([{"passed": "12"}], False, "reports a passed count"),
        ([{}], False, "reports a passed count"),
    ],
)
def test_min_passing_needs_a_matching_test_run_with_that_many_passing(runs, satisfied, why):
    output = {"type": "test", "pattern": "tests/**/test_*.py", "validation_rule": "min_passing: 10"}
    artifacts = [{"type": "test", "path": "tests/test_a.py", **run} for run in runs]
    artifacts.append({"type": "test", "path": "elsewhere/test_b.py", "passed": 500})
    check = output_check(output, artifacts, 1)
    assert check.satisfied is satisfied
    assert why in check.why


def test_min_count_and_min_passing_may_be_fields_of_the_output():
    output = {"type": "test", "pattern": "t/*.py", "min_count": 2, "min_passing": 3}
    one = [{"type": "test", "path": "t/a.py", "passed": 5}]
    assert not output_check(output, one, 1).satisfied
    two = [*one, {"type": "test", "path": "t/b.py", "passed": 1}]
    assert output_check(output, two, 1).satisfied
    low = [{"type": "test", "path": "t/a.py", "passed": 2}, {"type": "test", "path": "t/b.py", "passed": 1}]
    assert output_check(output, low, 1).why == "the best run passed 2; 3 needed"


def test_any_other_rule_is_shown_but_not_checked():
    output = {"type": "report", "pattern": "build report", "validation_rule": "Someone reads it through."}
    check = output_check(output, [{"type": "report", "path": "build report"}], 1)
    assert (check.satisfied, check.checked, check.validation_rule) == (True, False, "Someone reads it through.")
    assert check.why == "found: build report; its validation rule is for a person to check"
    assert not output_check(output, [], 1).satisfied


def test_a_ticket_whose_work_is_done_passes_to_the_column_its_column_jumps_to(building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    gate = ticket_gate(building)
    assert gate.passed and gate.blockers == []
    assert (gate.target.key, gate.target_column.key) == ("PHASE_CHECK", "checking")  # not Review, next by order


def test_without_a_jump_the_next_allowed_phase_by_order_is_the_target(building, alice):
    BoardColumn.objects.filter(key="build").update(auto_transition_to=None)
    assert ticket_gate(building).target.key == "PHASE_REVIEW"


def test_a_jump_to_a_column_the_ticket_may_not_enter_falls_back_to_the_order(gated, alice):
    # Spec's column jumps to Checking, but Spec has no transition to Check.
    BoardColumn.objects.filter(key="spec").update(auto_transition_to=BoardColumn.objects.get(key="checking"))
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    assert ticket_gate(ticket).target.key == "PHASE_BUILD"


def test_a_holding_phase_is_never_the_target(gated, alice):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    # Blocked comes right after Spec by order and Spec may move there; the gate skips it.
    assert ticket_gate(ticket).target.key == "PHASE_BUILD"


def test_open_and_failed_tasks_hold_the_gate_and_cancelled_ones_do_not_count(building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    finished(building, actor=alice, title="Dropped", status=Task.Status.CANCELLED)
    assert ticket_gate(building).passed
    task_open = finished(building, actor=alice, title="Still going", status=Task.Status.RUNNING)
    gate = ticket_gate(building)
    assert (gate.tasks_done, gate.tasks_total, gate.tasks_open) == (1, 2, 1)
    assert gate.blockers == ["1 of 2 tasks still open."]
    Task.objects.filter(pk=task_open.pk).update(status=Task.Status.FAILED, error="Gave up")
    gate = ticket_gate(building)
    assert [task.pk for task in gate.failed] == [task_open.pk]
    assert gate.blockers == [f"Failed after their retries: #{task_open.pk}; a person must retry or cancel them."]


def test_a_phase_that_asks_for_nothing_passes_without_tasks(gated, alice):
    ticket = ticket_create(board=gated, title="Review it", actor=alice, phase="PHASE_REVIEW")
    gate = ticket_gate(ticket)
    assert gate.passed and gate.tasks_total == 0 and gate.target.key == "PHASE_CHECK"


def test_a_phase_with_default_tasks_waits_until_they_are_created(gated, alice, monkeypatch):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    # Even with its criteria and outputs met by work done ahead, the gate waits for the phase's own tasks.
    finished(
        ticket,
        actor=alice,
        criteria=["Spec written", "Spec reviewed"],
        artifacts=[{"type": "document", "path": f"docs/spec/{ticket.pk}.md"}],
    )
    gate = ticket_gate(fresh(ticket))
    assert gate.awaiting_entry and gate.blockers == ["Waiting for the tasks of Spec to be created."]
    ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    gate = ticket_gate(fresh(ticket))
    assert not gate.awaiting_entry and gate.blockers == ["2 of 3 tasks still open."]


def test_a_ticket_marked_blocked_is_held(building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    ticket = ticket_update(ticket=building, actor=alice, is_blocked=True, blocked_reason="Waiting for legal")
    gate = ticket_gate(ticket)
    assert not gate.passed and gate.hold == "The ticket is marked blocked: Waiting for legal"


def test_a_full_block_column_holds_the_ticket(gated, building, alice):
    ticket_create(board=gated, title="Checking already", actor=alice, phase="PHASE_CHECK")
    finished(building, actor=alice, artifacts=build_artifacts(building))
    gate = ticket_gate(building)
    assert not gate.passed
    assert gate.blockers == ["Waiting for room in Checking (1/1)."]
    assert gate.waiting_for_room


def test_a_full_warn_column_does_not_hold(gated, building, alice):
    BoardColumn.objects.filter(key="checking").update(wip_policy="warn")
    ticket_create(board=gated, title="Checking already", actor=alice, phase="PHASE_CHECK")
    finished(building, actor=alice, artifacts=build_artifacts(building))
    assert ticket_gate(building).passed


@pytest.mark.parametrize(
    ("key", "blocker"),
    [
        ("PHASE_DONE", "Done is a terminal phase: tickets stay here."),
        ("PHASE_BLOCKED", "Blocked holds tickets until a person moves them back."),
    ],
)
def test_terminal_phases_have_no_gate(gated, alice, key, blocker):
    ticket = ticket_create(board=gated, title="Over", actor=alice, phase=key)
    gate = ticket_gate(ticket)
    assert (gate.terminal, gate.passed, gate.target, gate.blockers) == (True, False, None, [blocker])


def test_many_tickets_are_judged_in_a_fixed_number_of_queries(gated, alice):
    def judged(count):
        for n in range(count):
            ticket = ticket_create(board=gated, title=f"T{n}", actor=alice, phase="PHASE_BUILD")
            finished(ticket, actor=alice, artifacts=build_artifacts(ticket))
        tickets = list(Ticket.objects.filter(board=gated))
        with CaptureQueriesContext(connection) as queries:
            gates = ticket_gates(tickets)
        assert len(gates) == len(tickets)
        return len(queries)

    assert judged(3) == judged(20)


# Advancing


def test_advance_moves_a_ticket_whose_gate_passes_by_a_normal_transition(building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    moved = ticket_advance(ticket=fresh(building), actor=ORCHESTRATOR, now=NOW)
    assert moved.phase.key == "PHASE_CHECK"
    entry = PhaseHistory.objects.filter(ticket=building).latest("id")
    assert (entry.kind, entry.actor) == ("normal", "orchestrator")
    assert entry.reason == "Phase gate passed: 1/1 tasks completed, 3 required outputs present; on to Check"
    assert fresh(building).gate_state is None


def test_advance_with_the_same_ticket_twice_moves_it_once(building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    ticket = fresh(building)
    assert ticket_advance(ticket=ticket, actor=ORCHESTRATOR, now=NOW) is not None
    # Check asks for nothing: judged afresh the ticket would move on, but the caller's copy is stale.
    assert ticket_advance(ticket=ticket, actor=ORCHESTRATOR, now=NOW) is None
    assert PhaseHistory.objects.filter(ticket=building).count() == 2
    assert fresh(building).phase.key == "PHASE_CHECK"


def test_advance_does_nothing_to_a_ticket_changed_since_it_was_read(building, alice):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    ticket = fresh(building)
    ticket_update(ticket=building, actor=alice, title="Renamed")
    assert ticket_advance(ticket=ticket, actor=ORCHESTRATOR, now=NOW) is None
    assert fresh(building).phase.key == "PHASE_BUILD"


def test_a_gate_that_does_not_pass_is_recorded_once_per_change(building, alice):
    for _ in range(3):
        assert ticket_advance(ticket=fresh(building), actor=ORCHESTRATOR, now=NOW) is None
    [event] = gate_events(building)
    assert event.actor == "orchestrator"
    assert event.payload["phase"] == "PHASE_BUILD" and event.payload["passed"] is False
    assert len(event.payload["outputs_missing"]) == 3 and event.payload["target"] == "PHASE_CHECK"
    assert fresh(building).gate_state["outcome"] == {k: v for k, v in event.payload.items() if k != "phase"}

    # Bookkeeping only (a title, a pending task): stored, not announced.
    ticket_update(ticket=building, actor=alice, title="Renamed")
    assert ticket_advance(ticket=fresh(building), actor=ORCHESTRATOR, now=NOW) is None
    assert fresh(building).gate_state["version"] == fresh(building).version
    finished(building, actor=alice, artifacts=build_artifacts(building)[:1])
    ticket_advance(ticket=fresh(building), actor=ORCHESTRATOR, now=NOW)
    events = gate_events(building)
    assert len(events) == 2 and len(events[1].payload["outputs_missing"]) == 2
    ticket_advance(ticket=fresh(building), actor=ORCHESTRATOR, now=NOW)
    assert len(gate_events(building)) == 2


def test_advance_never_pushes_a_ticket_into_a_full_block_column(gated, alice):
    ready = []
    for n in range(2):
        ticket = ticket_create(board=gated, title=f"Ready {n}", actor=alice, phase="PHASE_BUILD")
        finished(ticket, actor=alice, artifacts=build_artifacts(ticket))
        ready.append(ticket)
    moved = [ticket_advance(ticket=fresh(t), actor=ORCHESTRATOR, now=NOW) for t in ready]
    assert [m is not None for m in moved] == [True, False]
    assert Ticket.objects.filter(phase__key="PHASE_CHECK").count() == 1
    assert fresh(ready[1]).gate_state["outcome"]["hold"] == "Waiting for room in Checking (1/1)."


def test_the_step_moves_held_tickets_once_room_is_made(gated, alice):
    ready = []
    for n in range(2):
        ticket = ticket_create(board=gated, title=f"Ready {n}", actor=alice, phase="PHASE_BUILD")
        finished(ticket, actor=alice, artifacts=build_artifacts(ticket))
        ready.append(ticket)
    phases = []
    for _ in range(4):
        advance_tickets(now=NOW, batch=10)
        phases.append(sorted(fresh(t).phase.key for t in ready))
    # Check asks nothing, so the first ticket goes on to Done, which makes room for the second.
    assert phases[0] == ["PHASE_BUILD", "PHASE_CHECK"]
    assert phases[-1] == ["PHASE_DONE", "PHASE_DONE"]
    assert not advance_tickets(now=NOW, batch=10)  # all terminal: nothing left to do


def test_the_step_leaves_tickets_waiting_for_the_same_reasons_alone(gated, alice):
    tickets = [ticket_create(board=gated, title=f"T{n}", actor=alice, phase="PHASE_BUILD") for n in range(3)]
    assert advance_tickets(now=NOW, batch=10)
    assert len(Event.objects.filter(type="phase_gate.evaluated")) == 3
    assert not advance_tickets(now=NOW, batch=10)
    finished(tickets[1], actor=alice, artifacts=build_artifacts(tickets[1])[:1])
    assert advance_tickets(now=NOW, batch=10)
    assert len(gate_events(tickets[1])) == 2 and len(gate_events(tickets[0])) == 1


def test_the_step_takes_a_batch_at_a_time_and_each_candidate_in_turn(gated, alice):
    BoardColumn.objects.filter(key="checking").update(wip_limit=None)
    for n in range(5):
        ticket_create(board=gated, title=f"T{n}", actor=alice, phase="PHASE_REVIEW")
    in_review = []
    for _ in range(3):
        assert advance_tickets(now=NOW, batch=2)
        in_review.append(Ticket.objects.filter(phase__key="PHASE_REVIEW").count())
    # Tickets moved to Check are candidates again, after the ones not yet taken.
    assert in_review == [3, 1, 0]


def test_the_step_costs_a_fixed_number_of_queries_for_tickets_that_wait(gated, alice):
    stuck = ticket_create(board=gated, title="Stuck in Check", actor=alice, phase="PHASE_CHECK")
    ticket_update(ticket=stuck, actor=alice, is_blocked=True, blocked_reason="Waiting for a decision")

    def step_queries(count):
        for n in range(count):
            ticket = ticket_create(board=gated, title=f"T{n}", actor=alice, phase="PHASE_BUILD")
            finished(ticket, actor=alice, artifacts=build_artifacts(ticket))
        assert advance_tickets(now=NOW, batch=500)  # records each new ticket as waiting for room
        with CaptureQueriesContext(connection) as queries:
            # Each waiting ticket is judged again (room may have been made), all of them together.
            assert not advance_tickets(now=NOW, batch=500)
        return len(queries)

    assert step_queries(3) == step_queries(30)
    assert Ticket.objects.filter(gate_state__outcome__waiting_for_room=True).count() == 33


def test_the_step_reconsiders_a_ticket_when_its_workflow_is_reloaded(building, alice):
    advance_tickets(now=NOW, batch=10)
    assert not advance_tickets(now=NOW, batch=10)
    building.board.workflow.__class__.objects.filter(pk=building.board.workflow_id).update(version=99)
    assert advance_tickets(now=NOW, batch=10)
    assert fresh(building).gate_state["workflow_version"] == 99


# The ticket page


def test_the_ticket_page_shows_the_gate_what_is_missing_and_where_it_goes(gated, building, alice, alice_client):
    ticket_create(board=gated, title="Checking already", actor=alice, phase="PHASE_CHECK")
    failed = finished(building, actor=alice, title="Flaky <b>build</b>", status=Task.Status.FAILED)
    Task.objects.filter(pk=failed.pk).update(error="Out of memory", retry_count=3)
    finished(building, actor=alice, artifacts=build_artifacts(building)[:1])
    html = alice_client.get(reverse("board:ticket", args=[gated.slug, building.pk])).content.decode()
    assert "Phase gate: Build" in html and "Not passed yet." in html
    assert "Check (column Checking, WIP limit 1)" in html
    assert "<strong>Held:</strong> Waiting for room in Checking (1/1)." in html
    assert "Failed after their retries: a person must retry or cancel them." in html
    assert f"#{failed.pk} Flaky &lt;b&gt;build&lt;/b&gt;</a> (3/3 retries used): Out of memory" in html
    assert "Failed (retries exhausted)" in html
    assert "1 of 2 tasks" not in html and "1/2 completed" in html
    assert "present</span> — found: tests/unit/deep/test_build.py" in html
    assert f"missing</span> — 0 of the 2 source artifacts matching src/*/{building.pk}-*.py needed" in html
    assert "Rule (checked by a person): Someone reads it through." in html


def test_the_ticket_page_says_a_passed_gate_moves_the_ticket_on(gated, building, alice, alice_client):
    finished(building, actor=alice, artifacts=build_artifacts(building))
    html = alice_client.get(reverse("board:ticket", args=[gated.slug, building.pk])).content.decode()
    assert "<strong>Passed:</strong> the orchestrator moves the ticket to Check." in html


def test_the_ticket_page_of_a_terminal_phase_says_there_is_no_gate(gated, alice, alice_client):
    ticket = ticket_create(board=gated, title="Over", actor=alice, phase="PHASE_DONE")
    html = alice_client.get(reverse("board:ticket", args=[gated.slug, ticket.pk])).content.decode()
    assert "Done is a terminal phase: tickets stay here. This phase has no gate." in html


# Two orchestrators at once


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_orchestrators_advancing_one_ticket_move_it_once(alice, bob):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")
    board = gated_board(alice, bob, slug="race-board")
    ticket = ticket_create(board=board, title="Race", actor=alice, phase="PHASE_BUILD")
    finished(ticket, actor=alice, artifacts=build_artifacts(ticket))
    seen = fresh(ticket)
    start = threading.Barrier(2)
    outcomes = []

    def run():
        try:
            start.wait()
            outcomes.append(ticket_advance(ticket=seen, actor=ORCHESTRATOR, now=NOW))
        except Exception as exc:  # any error is the outcome under test
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcome is None for outcome in outcomes) == [False, True], outcomes
    assert PhaseHistory.objects.filter(ticket=ticket, to_key="PHASE_CHECK").count() == 1
