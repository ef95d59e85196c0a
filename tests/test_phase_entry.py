"""Phase entry: a ticket gets its phase's default tasks once per visit, whoever moved it there, never twice."""

import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from board.events import ORCHESTRATOR
from board.models import Event, Task, Ticket
from board.orchestration import tickets as tickets_steps
from board.orchestration.tickets import advance_tickets, enter_phases
from board.services import task_create, ticket_advance, ticket_create, ticket_phase_enter, ticket_transition
from phases.models import Phase

from .gate_samples import NOW, finished, gated_board

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def from_the_first_ticket(monkeypatch):
    monkeypatch.setitem(tickets_steps._cursor, "advance", 0)


@pytest.fixture
def gated(alice, bob):
    return gated_board(alice, bob)


@pytest.fixture
def ticket(gated, alice):
    """A ticket in Spec, whose phase has two default tasks."""
    return ticket_create(board=gated, title="Spec it", actor=alice)


def titles(ticket, phase="PHASE_SPEC"):
    return sorted(Task.objects.filter(ticket=ticket, phase__key=phase).values_list("title", flat=True))


def test_entering_a_phase_creates_its_default_tasks_with_the_phases_instructions(ticket):
    created = ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    assert [task.title for task in created] == ["Write the spec", "Review the spec"]
    write, review = created
    assert (write.task_type, write.required_capabilities, write.phase.key) == ("spec", ["writing"], "PHASE_SPEC")
    assert (review.task_type, review.required_capabilities, review.priority) == ("review", [], ticket.priority)
    assert write.description.startswith(f"Write docs/spec/{ticket.pk}.md.\n\n# Phase: Spec (PHASE_SPEC)")
    assert "Write down what to build." in write.description and "- [ ] Spec written" in write.description
    assert review.description.startswith("# Phase: Spec (PHASE_SPEC)")
    assert write.created_by == "orchestrator"
    events = Event.objects.filter(type="task.created").order_by("id")
    assert [event.payload["source"] for event in events] == ["phase entry", "phase entry"]


def test_entering_again_creates_nothing_more(ticket):
    ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    assert ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR) == []
    Task.objects.filter(ticket=ticket).update(status=Task.Status.COMPLETED)
    assert ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR) == []
    assert titles(ticket) == ["Review the spec", "Write the spec"]


def test_a_task_of_the_same_title_already_there_is_not_duplicated(ticket, alice):
    task_create(ticket=ticket, title="  write THE spec ", actor=alice)
    created = ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    assert [task.title for task in created] == ["Review the spec"]
    assert len(titles(ticket)) == 2


def test_a_ticket_made_before_the_orchestrator_ran_gets_its_tasks_on_the_next_pass(ticket, gated, alice):
    other = ticket_create(board=gated, title="Build it", actor=alice, phase="PHASE_BUILD")  # no default tasks
    assert enter_phases(now=NOW, batch=10) is False  # one ticket entered, not a full batch
    assert titles(ticket) == ["Review the spec", "Write the spec"]
    assert not Task.objects.filter(ticket=other).exists()
    assert list(tickets_steps._entry_candidates()) == []


def test_a_ticket_moved_by_a_person_gets_the_tasks_of_the_phase_it_is_moved_to(gated, alice):
    ticket = ticket_create(board=gated, title="Build it", actor=alice, phase="PHASE_BUILD")
    enter_phases(now=NOW, batch=10)
    assert not Task.objects.exists()
    ticket_transition(ticket=ticket, to_phase="PHASE_SPEC", actor=alice, reason="Needs a spec after all")
    enter_phases(now=NOW, batch=10)
    assert titles(ticket) == ["Review the spec", "Write the spec"]


def test_coming_back_to_a_phase_creates_its_tasks_again(ticket, alice):
    ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    Task.objects.filter(ticket=ticket).update(status=Task.Status.COMPLETED, finished_at=NOW.replace(year=2020))
    ticket_transition(ticket=ticket, to_phase="PHASE_BUILD", actor=alice)
    ticket_transition(ticket=ticket, to_phase="PHASE_SPEC", actor=alice)
    enter_phases(now=NOW, batch=10)
    assert titles(ticket) == ["Review the spec", "Review the spec", "Write the spec", "Write the spec"]
    assert Task.objects.filter(ticket=ticket, status=Task.Status.PENDING).count() == 2


def test_an_open_task_left_from_the_last_visit_is_not_duplicated(ticket, alice):
    ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    Task.objects.filter(ticket=ticket, title="Write the spec").update(
        status=Task.Status.COMPLETED, finished_at=NOW.replace(year=2020)
    )
    ticket_transition(ticket=ticket, to_phase="PHASE_BUILD", actor=alice)
    ticket_transition(ticket=ticket, to_phase="PHASE_SPEC", actor=alice)
    created = ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    assert [task.title for task in created] == ["Write the spec"]  # "Review the spec" is still open


def test_an_entry_the_task_service_refuses_is_skipped_and_the_others_created(ticket, caplog):
    phase = Phase.objects.get(workflow=ticket.board.workflow, key="PHASE_SPEC")
    configuration = dict(phase.configuration)
    configuration["default_tasks"] = [
        {"title": "Bad capabilities", "required_capabilities": ["x" * 65]},
        {"title": "x" * 201},
        "not an entry",
        {"title": "   "},
        {"title": "Fine", "task_type": 7, "priority": "URGENT"},
    ]
    Phase.objects.filter(pk=phase.pk).update(configuration=configuration)
    created = ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    assert [(task.title, task.task_type, task.priority) for task in created] == [("Fine", "work", ticket.priority)]
    assert "Default task 'Bad capabilities' of phase PHASE_SPEC not created" in caplog.text
    assert list(tickets_steps._entry_candidates()) == []  # entered all the same: not retried every pass


def test_a_phase_without_default_tasks_is_left_alone(gated, alice):
    ticket = ticket_create(board=gated, title="Build it", actor=alice, phase="PHASE_BUILD")
    assert ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR) == []
    assert Ticket.objects.get(pk=ticket.pk).gate_state is None


def test_a_judged_gate_keeps_the_entry_and_the_entry_keeps_the_judgement(ticket):
    ticket_advance(ticket=ticket, actor=ORCHESTRATOR, now=NOW)  # recorded first: waiting for its tasks
    assert Ticket.objects.get(pk=ticket.pk).gate_state["outcome"]["awaiting_entry"] is True
    assert [t.pk for t in tickets_steps._entry_candidates()] == [ticket.pk]
    ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)
    state = Ticket.objects.get(pk=ticket.pk).gate_state
    assert state["entered"] is True and state["outcome"]["awaiting_entry"] is True
    advance_tickets(now=NOW, batch=10)
    state = Ticket.objects.get(pk=ticket.pk).gate_state
    assert state["entered"] is True and state["outcome"]["awaiting_entry"] is False
    assert list(tickets_steps._entry_candidates()) == []


def test_the_step_takes_a_batch_and_says_when_more_may_wait(gated, alice):
    for n in range(3):
        ticket_create(board=gated, title=f"T{n}", actor=alice)
    assert enter_phases(now=NOW, batch=2) is True
    assert enter_phases(now=NOW, batch=2) is False
    assert Task.objects.count() == 6


def test_the_step_costs_a_fixed_number_of_queries_once_every_ticket_has_its_tasks(gated, alice):
    def step_queries(count):
        for n in range(count):
            ticket_create(board=gated, title=f"T{n}", actor=alice)
        enter_phases(now=NOW, batch=500)
        with CaptureQueriesContext(connection) as queries:
            enter_phases(now=NOW, batch=500)
        return len(queries)

    assert step_queries(2) == step_queries(25) == 2  # the phases with default tasks, then the candidates


def test_from_creation_to_the_next_phase_through_the_orchestrators_steps(gated, alice):
    ticket = ticket_create(board=gated, title="Spec it", actor=alice)
    enter_phases(now=NOW, batch=10)
    advance_tickets(now=NOW, batch=10)
    assert Ticket.objects.get(pk=ticket.pk).phase.key == "PHASE_SPEC"
    for task in Task.objects.filter(ticket=ticket):
        Task.objects.filter(pk=task.pk).update(
            status=Task.Status.COMPLETED,
            finished_at=NOW,
            completed_criteria=["Spec written", "Spec reviewed"],
            artifacts=[{"type": "document", "path": f"docs/spec/{ticket.pk}.md"}],
        )
    advance_tickets(now=NOW, batch=10)
    assert Ticket.objects.get(pk=ticket.pk).phase.key == "PHASE_BUILD"
    finished(ticket, actor=alice)  # Build has no default tasks; the next pass judges it again
    assert enter_phases(now=NOW, batch=10) is False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_orchestrators_entering_one_ticket_create_its_tasks_once(alice, bob):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")
    board = gated_board(alice, bob, slug="race-board")
    ticket = ticket_create(board=board, title="Race", actor=alice)
    start = threading.Barrier(2)
    outcomes = []

    def run():
        try:
            start.wait()
            outcomes.append(len(ticket_phase_enter(ticket=ticket, actor=ORCHESTRATOR)))
        except Exception as exc:  # any error is the outcome under test
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes) == [0, 2], outcomes
    assert titles(ticket) == ["Review the spec", "Write the spec"]
