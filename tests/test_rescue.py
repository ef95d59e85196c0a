"""The stuck-ticket rescue: one diagnosis and one recovery task per stuck ticket, never a loop of them."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

import discoveries.rescue as rescue_module
from board.models import Event, PhaseHistory, Task, Ticket
from board.services import task_claim, task_complete, task_create, task_start, ticket_create, ticket_transition
from discoveries.models import Discovery, TicketRescue
from discoveries.rescue import rescue_stuck_tickets, stuck_tickets, ticket_rescue
from discoveries.services import discovery_record

pytestmark = pytest.mark.django_db

WINDOW = timedelta(hours=1)
IDLE = timedelta(hours=2, minutes=10)
RESCUE_EVENTS = ("discovery.recorded", "task.created", "discovery.branch_created")


@pytest.fixture(autouse=True)
def window(settings):
    settings.OMOI_RESCUE_WINDOW = WINDOW
    return WINDOW


@pytest.fixture
def start():
    """The tests' clock: the first second of a window that begins well after anything a test writes."""
    seconds = int(WINDOW.total_seconds())
    return datetime.fromtimestamp((int(time.time()) // seconds + 3) * seconds, tz=UTC)


def age(ticket, at):
    """Date every trace of progress on `ticket` (its row, history, tasks, discoveries) at `at`."""
    Ticket.objects.filter(pk=ticket.pk).update(updated_at=at)
    PhaseHistory.objects.filter(ticket=ticket).update(created_at=at)
    Task.objects.filter(ticket=ticket).update(updated_at=at)
    Discovery.objects.filter(source_task__ticket=ticket).update(discovered_at=at)


def stuck_ticket(board, actor, at, *, title="Single sign-on", phase="PHASE_DESIGN", failed_task=True):
    """A ticket in `phase` whose last progress was at `at`: by default its one task failed."""
    ticket = ticket_create(board=board, title=title, actor=actor, phase=phase)
    if failed_task:
        work = task_create(ticket=ticket, title=f"Work on {title}", actor=actor)
        Task.objects.filter(pk=work.pk).update(status=Task.Status.FAILED)
    age(ticket, at)
    return Ticket.objects.get(pk=ticket.pk)


@pytest.fixture
def stuck(board, alice, start):
    return stuck_ticket(board, alice, start - IDLE)


def rescue_counts():
    return {
        "rescues": TicketRescue.objects.count(),
        "discoveries": Discovery.objects.filter(discovery_type="diagnostic_no_result").count(),
        "tasks": Task.objects.filter(task_type="discovery_diagnostic_no_result").count(),
        **{name: Event.objects.filter(type=name, payload__rescue=True).count() for name in RESCUE_EVENTS},
    }


def rescued(count, *, branched=None):
    """What `count` rescues leave behind; `branched` of them branched from an existing task (all by default)."""
    branched = count if branched is None else branched
    return {
        "rescues": count,
        "discoveries": count,
        "tasks": count,
        "discovery.recorded": count,
        "task.created": count,
        "discovery.branch_created": branched,
    }


# The service


def test_a_stuck_ticket_gets_one_diagnosis_and_one_recovery_task_in_its_phase(stuck, start):
    failed = stuck.tasks.get()
    now = start + timedelta(minutes=5)

    rescue = ticket_rescue(ticket=stuck, now=now)

    rescue = TicketRescue.objects.get(pk=rescue.pk)
    assert rescue.ticket == stuck
    assert rescue.window == int(now.timestamp()) // 3600
    assert rescue.created_at == now
    discovery, task = rescue.discovery, rescue.task
    assert discovery.discovery_type == "diagnostic_no_result"
    assert discovery.source_task == failed
    assert discovery.discovered_by == "orchestrator"
    assert list(discovery.spawned_tasks.all()) == [task]
    assert discovery.metadata["rescue"] is True
    assert discovery.metadata["idle_seconds"] == (IDLE + timedelta(minutes=5)).total_seconds()
    assert discovery.metadata["tasks"]["failed"] == 1
    assert (task.phase.key, task.status, task.parent, task.priority) == (
        "PHASE_DESIGN",
        "pending",
        failed,
        stuck.priority,
    )
    assert task.title == f"Recover #{stuck.pk}: no progress in Design for 2 h 15 min"
    assert task.description.startswith(discovery.description)
    assert rescue_counts() == rescued(1)


def test_the_description_says_what_is_stuck_and_since_when(stuck, start):
    rescue = ticket_rescue(ticket=stuck, now=start)

    since = (start - IDLE).strftime("%Y-%m-%d %H:%M UTC")
    assert rescue.discovery.description == (
        f"No progress on #{stuck.pk} “Single sign-on” in Design for 2 h 10 min (since {since}): "
        "1 of 1 task failed, 0 running, 0 pending, 0 completed."
    )


def test_the_events_say_it_was_a_rescue_by_the_orchestrator(stuck, start):
    rescue = ticket_rescue(ticket=stuck, now=start)

    events = Event.objects.filter(type__in=RESCUE_EVENTS).exclude(actor="alice")
    assert [(event.type, event.actor) for event in events] == [
        ("discovery.recorded", "orchestrator"),
        ("task.created", "orchestrator"),
        ("discovery.branch_created", "orchestrator"),
    ]
    for event in events:
        assert event.payload["rescue"] is True
        assert event.payload["idle_seconds"] == IDLE.total_seconds()
        assert event.payload["ticket"] == stuck.pk
    assert events[1].payload["discovery"] == rescue.discovery.pk
    assert events[2].payload["spawned_task"] == rescue.task.pk


def test_the_recovery_task_branches_from_the_tickets_most_recent_task(board, alice, start):
    ticket = ticket_create(board=board, title="Payments", actor=alice, phase="PHASE_DESIGN")
    task_create(ticket=ticket, title="Older", actor=alice)
    newest = task_create(ticket=ticket, title="Newest", actor=alice, phase="PHASE_REQUIREMENTS")
    age(ticket, start - IDLE)

    rescue = ticket_rescue(ticket=ticket, now=start)

    assert rescue.discovery.source_task == newest
    assert rescue.task.parent == newest
    # The ticket's phase, not the source task's.
    assert rescue.task.phase.key == "PHASE_DESIGN"


def test_a_ticket_without_tasks_gets_a_recovery_task_with_the_diagnosis_recorded_on_it(board, alice, start):
    ticket = stuck_ticket(board, alice, start - IDLE, failed_task=False)

    rescue = ticket_rescue(ticket=ticket, now=start)

    task = Task.objects.get(ticket=ticket)
    assert rescue.task == task and rescue.discovery.source_task == task
    assert task.parent is None and task.phase.key == "PHASE_DESIGN"
    assert "no tasks yet" in rescue.discovery.description
    assert not rescue.discovery.spawned_tasks.exists()
    assert rescue_counts() == rescued(1, branched=0)


def test_a_ticket_parked_in_a_holding_phase_is_rescued_in_the_phase_it_came_from(board, alice, start):
    ticket = ticket_create(board=board, title="Search", actor=alice, phase="PHASE_DESIGN")
    ticket_transition(ticket=ticket, to_phase="PHASE_IMPLEMENTATION", actor=alice)
    ticket_transition(ticket=ticket, to_phase="PHASE_BLOCKED", actor=alice)
    age(ticket, start - IDLE)

    rescue = ticket_rescue(ticket=ticket, now=start)

    assert rescue.task.phase.key == "PHASE_IMPLEMENTATION"
    assert "in Blocked for 2 h 10 min" in rescue.discovery.description
    assert "the recovery task is in Implementation" in rescue.discovery.description
    assert rescue.discovery.metadata["recovery_phase"] == "PHASE_IMPLEMENTATION"


def test_a_ticket_that_started_in_a_holding_phase_is_rescued_in_the_first_working_phase(board, alice, start):
    ticket = stuck_ticket(board, alice, start - IDLE, phase="PHASE_BLOCKED", failed_task=False)

    rescue = ticket_rescue(ticket=ticket, now=start)

    assert rescue.task.phase.key == "PHASE_BACKLOG"


@pytest.mark.parametrize("trace", ["ticket", "phase history", "task", "discovery"])
def test_any_recent_progress_means_the_ticket_is_not_stuck(stuck, start, trace):
    recent = start - WINDOW + timedelta(minutes=1)
    if trace == "ticket":
        Ticket.objects.filter(pk=stuck.pk).update(updated_at=recent)
    elif trace == "phase history":
        PhaseHistory.objects.filter(ticket=stuck).update(created_at=recent)
    elif trace == "task":
        Task.objects.filter(ticket=stuck).update(updated_at=recent)
    else:
        found = discovery_record(source_task=stuck.tasks.get(), discovery_type="bug", description="x", actor="x")
        Discovery.objects.filter(pk=found.pk).update(discovered_at=recent)
        Task.objects.filter(ticket=stuck).update(updated_at=start - IDLE)

    assert not stuck_tickets(now=start).exists()
    assert ticket_rescue(ticket=stuck, now=start) is None
    # The same ticket a little later has been idle for a whole window.
    assert ticket_rescue(ticket=stuck, now=start + timedelta(minutes=2)) is not None


def test_a_ticket_idle_for_less_than_a_window_is_not_stuck(board, alice, start):
    ticket = stuck_ticket(board, alice, start - WINDOW + timedelta(seconds=1))

    assert ticket_rescue(ticket=ticket, now=start) is None
    assert not rescue_stuck_tickets(now=start)
    assert TicketRescue.objects.count() == 0


def test_tickets_in_terminal_phases_are_never_stuck(board, alice, start):
    ticket = stuck_ticket(board, alice, start - 10 * IDLE, phase="PHASE_DONE")

    assert ticket_rescue(ticket=ticket, now=start) is None
    rescue_stuck_tickets(now=start)
    assert rescue_counts() == rescued(0)


def test_tickets_a_person_blocked_are_not_rescued(stuck, start):
    Ticket.objects.filter(pk=stuck.pk).update(is_blocked=True, blocked_reason="Waiting for legal")
    stuck.refresh_from_db()

    assert ticket_rescue(ticket=stuck, now=start) is None
    rescue_stuck_tickets(now=start)
    assert rescue_counts() == rescued(0)


def test_a_ticket_deleted_meanwhile_is_not_rescued(stuck, start):
    Ticket.objects.filter(pk=stuck.pk).delete()

    assert ticket_rescue(ticket=stuck, now=start) is None


@pytest.mark.parametrize(
    "seconds, said",
    [
        (0, "0 s"),
        (59, "59 s"),
        (45 * 60, "45 min"),
        (7800, "2 h 10 min"),
        (7200, "2 h"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
    ],
)
def test_durations_read_the_way_a_person_says_them(seconds, said):
    assert rescue_module._duration(seconds) == said


# Safety: at most one rescue per ticket per window, none while one is under way


def test_repeated_steps_within_one_window_rescue_once(stuck, start):
    for minutes in (0, 0, 1, 30, 59, 59):
        rescue_stuck_tickets(now=start + timedelta(minutes=minutes))
        rescue_stuck_tickets(now=start + timedelta(minutes=minutes))

    assert rescue_counts() == rescued(1)


def test_a_window_already_rescued_stays_rescued_even_when_its_task_ended(stuck, start):
    rescue = ticket_rescue(ticket=stuck, now=start)
    Task.objects.filter(pk=rescue.task_id).update(status=Task.Status.FAILED, updated_at=start - IDLE)

    assert rescue_stuck_tickets(now=start + timedelta(minutes=59)) is False
    assert rescue_counts() == rescued(1)


@pytest.mark.parametrize("status", ["pending", "assigned", "running"])
def test_no_new_rescue_while_the_recovery_task_is_open_even_in_later_windows(stuck, start, status):
    rescue = ticket_rescue(ticket=stuck, now=start)
    Task.objects.filter(pk=rescue.task_id).update(status=status)

    for windows in (1, 2, 5, 48):
        later = start + windows * WINDOW
        assert rescue_stuck_tickets(now=later) is False
        assert ticket_rescue(ticket=stuck, now=later) is None
    assert rescue_counts() == rescued(1)


def test_after_the_recovery_task_ends_and_another_window_passes_a_second_rescue_happens(stuck, start, builder):
    agent = builder[0]
    first = ticket_rescue(ticket=stuck, now=start)
    Task.objects.exclude(pk=first.task_id).update(status=Task.Status.CANCELLED)
    task = task_claim(agent=agent)
    assert task == first.task
    task_start(task=task, agent=agent)
    task_complete(task=task, agent=agent)
    done = start + timedelta(minutes=20)
    Task.objects.filter(pk=task.pk).update(updated_at=done)

    # The completion is progress: still none a moment before a whole window has passed since.
    rescue_stuck_tickets(now=done + WINDOW - timedelta(seconds=1))
    assert TicketRescue.objects.count() == 1

    rescue_stuck_tickets(now=done + WINDOW + timedelta(seconds=1))
    second = TicketRescue.objects.exclude(pk=first.pk).get()
    assert second.task != first.task
    assert second.discovery.source_task == first.task  # the most recent task, now completed
    assert rescue_counts() == rescued(2)


def test_two_rescues_are_never_closer_than_a_window_even_across_a_window_boundary(stuck, start):
    late = start + timedelta(minutes=50)
    first = ticket_rescue(ticket=stuck, now=late)
    # Its task ends at once, and nothing else happens on the ticket.
    Task.objects.filter(pk=first.task_id).update(status=Task.Status.FAILED)
    age(stuck, start - IDLE)

    next_window = start + WINDOW + timedelta(minutes=10)
    assert ticket_rescue(ticket=stuck, now=next_window) is None
    assert rescue_stuck_tickets(now=next_window) is False
    assert TicketRescue.objects.count() == 1

    assert ticket_rescue(ticket=stuck, now=late + WINDOW + timedelta(seconds=1)) is not None
    assert TicketRescue.objects.count() == 2


def test_the_table_refuses_a_second_rescue_of_a_ticket_in_one_window(stuck):
    TicketRescue.objects.create(ticket=stuck, window=4242)

    with pytest.raises(IntegrityError), transaction.atomic():
        TicketRescue.objects.create(ticket=stuck, window=4242)
    TicketRescue.objects.create(ticket=stuck, window=4243)
    assert TicketRescue.objects.filter(ticket=stuck).count() == 2


def test_a_window_someone_else_rescued_leaves_the_service_quiet_and_the_callers_transaction_usable(stuck, start):
    """The rows' own rules let this rescue through; only the table's constraint knows the window is taken."""
    window = int(start.timestamp()) // 3600
    taken = TicketRescue.objects.create(ticket=stuck, window=window)
    TicketRescue.objects.filter(pk=taken.pk).update(created_at=start - IDLE)
    before = rescue_counts()

    with transaction.atomic():
        assert ticket_rescue(ticket=stuck, now=start) is None
        # Still usable: on PostgreSQL a failed statement outside a savepoint aborts the whole transaction.
        assert Ticket.objects.filter(pk=stuck.pk).exists()

    assert rescue_counts() == before


# The step


def test_the_step_says_more_work_only_when_it_filled_its_batch(board, alice, start):
    for n in range(3):
        stuck_ticket(board, alice, start - IDLE, title=f"Ticket {n}")

    assert rescue_stuck_tickets(now=start, batch=2) is True
    assert TicketRescue.objects.count() == 2
    assert rescue_stuck_tickets(now=start, batch=2) is False
    assert rescue_stuck_tickets(now=start, batch=2) is False
    assert rescue_counts() == rescued(3)


def test_the_step_rescues_the_longest_idle_first(board, alice, start):
    recent = stuck_ticket(board, alice, start - IDLE, title="Recent")
    oldest = stuck_ticket(board, alice, start - 3 * IDLE, title="Oldest")
    older = stuck_ticket(board, alice, start - 2 * IDLE, title="Older")

    assert list(stuck_tickets(now=start)) == [oldest, older, recent]
    rescue_stuck_tickets(now=start, batch=1)
    assert TicketRescue.objects.get().ticket == oldest


def test_the_step_uses_the_batch_setting_by_default(board, alice, start, settings):
    settings.OMOI_ORCHESTRATOR_BATCH = 1
    for n in range(2):
        stuck_ticket(board, alice, start - IDLE, title=f"Ticket {n}")

    assert rescue_stuck_tickets(now=start) is True
    assert TicketRescue.objects.count() == 1


def test_a_rescue_that_fails_leaves_nothing_behind_and_the_others_go_on(board, alice, start, monkeypatch, caplog):
    failing = stuck_ticket(board, alice, start - 2 * IDLE, title="Failing")
    fine = stuck_ticket(board, alice, start - IDLE, title="Fine")
    branch = rescue_module.discovery_branch

    def branch_failing_for_one(*, source_task, **kwargs):
        if source_task.ticket_id == failing.pk:
            raise RuntimeError("disk full")
        return branch(source_task=source_task, **kwargs)

    monkeypatch.setattr(rescue_module, "discovery_branch", branch_failing_for_one)

    rescue_stuck_tickets(now=start)

    assert list(TicketRescue.objects.values_list("ticket", flat=True)) == [fine.pk]
    assert rescue_counts() == rescued(1)
    assert f"Could not rescue ticket {failing.pk}" in caplog.text


def test_finding_stuck_tickets_takes_the_same_queries_for_few_and_many(board, alice, start):
    def step_queries():
        with CaptureQueriesContext(connection) as queries:
            rescue_stuck_tickets(now=start, batch=2)
        TicketRescue.objects.all().delete()
        Task.objects.filter(task_type="discovery_diagnostic_no_result").delete()
        Discovery.objects.all().delete()
        for ticket in Ticket.objects.all():
            age(ticket, start - IDLE)
        return len(queries)

    for n in range(5):
        stuck_ticket(board, alice, start - IDLE, title=f"Few {n}")
    few = step_queries()
    for n in range(60):
        stuck_ticket(board, alice, start - IDLE, title=f"Many {n}", failed_task=n % 2 == 0)
    many = step_queries()

    assert few == many


def test_a_pass_with_nothing_stuck_is_two_queries(board, alice, start):
    for n in range(20):
        stuck_ticket(board, alice, start - timedelta(minutes=5), title=f"Busy {n}")

    with CaptureQueriesContext(connection) as queries:
        assert rescue_stuck_tickets(now=start) is False
    assert len(queries) == 2


@pytest.mark.slow
def test_a_pass_over_ten_thousand_tickets_stays_cheap(board, alice, start, phase):
    """The hard case: tickets' own rows are old (work happens in their tasks), so every progress subquery runs."""
    design = phase("PHASE_DESIGN")
    tickets = Ticket.objects.bulk_create(
        Ticket(board=board, title=f"Ticket {n}", phase=design, position=n) for n in range(10_000)
    )
    PhaseHistory.objects.bulk_create(PhaseHistory(ticket=t, to_phase=design, to_key=design.key) for t in tickets)
    tasks = Task.objects.bulk_create(Task(ticket=t, phase=design, title="Work") for t in tickets for _ in range(2))
    Discovery.objects.bulk_create(
        Discovery(source_task=task, discovery_type="bug", description="x") for task in tasks[::10]
    )
    Ticket.objects.update(updated_at=start - 2 * IDLE)
    PhaseHistory.objects.update(created_at=start - 2 * IDLE)
    Discovery.objects.update(discovered_at=start - 2 * IDLE)
    # All but 30 of them have a task that moved recently.
    Task.objects.update(updated_at=start - timedelta(minutes=5))
    idle = [t.pk for t in tickets[::334]]
    Task.objects.filter(ticket__in=idle).update(updated_at=start - 2 * IDLE)

    began = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:
        candidates = list(stuck_tickets(now=start)[:200])
    took = time.perf_counter() - began

    assert sorted(t.pk for t in candidates) == sorted(idle)
    assert len(queries) == 2
    assert took < 1.0, f"finding 30 stuck tickets among 10,000 took {took:.2f} s"


# Several orchestrators at once (PostgreSQL, a connection each)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_three_orchestrators_rescue_twenty_stuck_tickets_exactly_once_each(board, alice, start, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")
    for n in range(20):
        stuck_ticket(board, alice, start - IDLE, title=f"Ticket {n}", failed_task=n % 4 != 0)
    recovery_phase = rescue_module._recovery_phase

    def slow_recovery_phase(ticket):
        # Hold the ticket a moment, so the other orchestrators are waiting on it by then.
        time.sleep(0.01)
        return recovery_phase(ticket)

    monkeypatch.setattr(rescue_module, "_recovery_phase", slow_recovery_phase)
    gate = threading.Barrier(3)
    errors = []

    def orchestrator(clock):
        try:
            connection.ensure_connection()
            gate.wait()
            for tick in range(4):
                while rescue_stuck_tickets(now=clock + timedelta(minutes=tick), batch=3):
                    pass
        except Exception as exc:  # reported below, not swallowed
            errors.append(exc)
        finally:
            connections.close_all()

    # The same clock, and clocks a little apart within the window.
    threads = [threading.Thread(target=orchestrator, args=(start + timedelta(seconds=offset),)) for offset in (0, 0, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    assert rescue_counts() == rescued(20, branched=15)
    assert TicketRescue.objects.values("ticket").distinct().count() == 20
    assert not any(thread.is_alive() for thread in threads)


# Admin


def test_the_admin_shows_rescues_and_allows_no_changes(alice_client, stuck, start):
    rescue = ticket_rescue(ticket=stuck, now=start)
    change = reverse("admin:discoveries_ticketrescue_change", args=[rescue.pk])

    listing = alice_client.get(reverse("admin:discoveries_ticketrescue_changelist"))
    page = alice_client.get(change)

    assert listing.status_code == 200 and page.status_code == 200
    assert stuck.title in listing.content.decode()
    assert str(rescue.window) in page.content.decode()
    assert reverse("admin:board_task_change", args=[rescue.task_id]) in page.content.decode()
    assert alice_client.get(reverse("admin:discoveries_ticketrescue_add")).status_code == 403
    assert alice_client.post(change, {}).status_code == 403
    assert alice_client.post(reverse("admin:discoveries_ticketrescue_delete", args=[rescue.pk])).status_code == 403


def test_a_ticket_waiting_in_backlog_with_nothing_asked_of_it_is_not_stuck(board, alice, start):
    waiting = stuck_ticket(board, alice, start - IDLE, title="Someday", phase="PHASE_BACKLOG", failed_task=False)
    assert not rescue_stuck_tickets(now=start)
    assert not TicketRescue.objects.filter(ticket=waiting).exists()


def test_a_ticket_with_work_started_in_a_waiting_phase_can_be_stuck(board, alice, start):
    started = stuck_ticket(board, alice, start - IDLE, title="Triage", phase="PHASE_BACKLOG", failed_task=True)
    rescue_stuck_tickets(now=start)
    assert TicketRescue.objects.filter(ticket=started).count() == 1


def test_a_ticket_in_a_phase_that_creates_tasks_is_stuck_even_before_it_has_one(board, alice, start):
    empty = stuck_ticket(board, alice, start - IDLE, title="Nobody started", phase="PHASE_DESIGN", failed_task=False)
    rescue_stuck_tickets(now=start)
    assert TicketRescue.objects.filter(ticket=empty).count() == 1
