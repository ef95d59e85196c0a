"""Dropping cards on the board: column rules, WIP limits, gapped ordering, and the race for the last place."""

import threading
import time

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from board.models import Board, Event, Ticket
from board.services import POSITION_GAP, TransitionRefused, ticket_create, ticket_move, ticket_transition, tickets
from phases.models import BoardColumn

pytestmark = pytest.mark.django_db


@pytest.fixture
def column(workflow):
    return lambda key: BoardColumn.objects.get(workflow=workflow, key=key)


@pytest.fixture
def make(board, alice):
    def make(title, phase="PHASE_BACKLOG"):
        return ticket_create(board=board, title=title, actor=alice, phase=phase)

    return make


def order(column):
    return list(Ticket.objects.filter(phase__columns=column).order_by("position", "pk").values_list("title", flat=True))


def state():
    return (
        list(Ticket.objects.order_by("pk").values_list("phase_id", "position", "version")),
        Event.objects.count(),
    )


# Columns and phases


def test_a_drop_into_the_next_column_is_a_transition(make, bob, column, phase):
    first, second = make("First", "PHASE_IMPLEMENTATION"), make("Second", "PHASE_IMPLEMENTATION")
    ticket = make("Mover", "PHASE_DESIGN")
    moved = ticket_move(ticket=ticket, column=column("building"), actor=bob, previous_id=first.pk, next_id=second.pk)
    assert moved.phase == phase("PHASE_IMPLEMENTATION")
    assert order(column("building")) == ["First", "Mover", "Second"]
    assert first.position < moved.position < second.position
    event = Event.objects.filter(type="ticket.transitioned").get()
    assert event.payload["column"] == "building"
    assert (event.payload["previous_id"], event.payload["next_id"]) == (first.pk, second.pk)


def test_a_column_of_several_phases_takes_the_one_the_ticket_may_enter(make, bob, column, phase):
    ticket = make("Fresh")
    moved = ticket_move(ticket=ticket, column=column("analyzing"), actor=bob)
    assert moved.phase == phase("PHASE_REQUIREMENTS")


def test_a_forbidden_column_is_refused_with_the_reason_and_nothing_changes(make, bob, column):
    ticket = make("Fresh")
    before = state()
    with pytest.raises(TransitionRefused) as info:
        ticket_move(ticket=ticket, column=column("testing"), actor=bob)
    assert str(info.value) == (
        "Backlog cannot move to Testing; from Backlog a ticket may move to: Requirements Analysis, Blocked."
    )
    assert state() == before


def test_an_explicit_phase_must_be_in_the_column(make, bob, column):
    with pytest.raises(TransitionRefused, match="Design is not shown in column Building"):
        ticket_move(ticket=make("Fresh"), column=column("building"), phase="PHASE_DESIGN", actor=bob)


def test_a_column_of_another_workflow_is_refused(make, bob, review_board):
    other = review_board.workflow.columns.get(key="review")
    with pytest.raises(TransitionRefused, match="belongs to another workflow"):
        ticket_move(ticket=make("Fresh"), column=other, actor=bob)


# WIP limits


def test_a_full_warn_column_takes_the_card_and_says_so(make, bob, column):
    for number in range(5):
        make(f"Analysis {number}", "PHASE_REQUIREMENTS")
    moved = ticket_move(ticket=make("Sixth"), column=column("analyzing"), actor=bob)
    assert moved.phase.key == "PHASE_REQUIREMENTS"
    wip = Event.objects.filter(type="ticket.transitioned").get().payload["wip"]
    assert wip == {"column": "analyzing", "count": 6, "limit": 5, "policy": "warn", "exceeded": True}


def test_a_full_block_column_refuses_the_card(make, bob, column):
    for number in range(8):
        make(f"Test {number}", "PHASE_TESTING")
    ticket = make("Ninth", "PHASE_IMPLEMENTATION")
    before = state()
    with pytest.raises(TransitionRefused) as info:
        ticket_move(ticket=ticket, column=column("testing"), actor=bob)
    assert str(info.value) == "Testing is full (8/8)."
    assert state() == before


def test_the_transition_service_enforces_wip_too(make, bob):
    for number in range(8):
        make(f"Test {number}", "PHASE_TESTING")
    with pytest.raises(TransitionRefused, match=r"Testing is full \(8/8\)"):
        ticket_transition(ticket=make("Ninth", "PHASE_IMPLEMENTATION"), to_phase="PHASE_TESTING", actor=bob)


def test_creating_into_a_full_block_column_is_refused(make):
    for number in range(8):
        make(f"Test {number}", "PHASE_TESTING")
    with pytest.raises(ValidationError, match=r"Testing is full \(8/8\)"):
        make("Ninth", "PHASE_TESTING")


def test_staff_may_override_a_full_column_with_a_reason(make, alice, column):
    for number in range(8):
        make(f"Test {number}", "PHASE_TESTING")
    ticket = make("Hotfix", "PHASE_IMPLEMENTATION")
    moved = ticket_move(ticket=ticket, column=column("testing"), actor=alice, force=True, reason="Release blocker")
    assert moved.phase.key == "PHASE_TESTING"
    history = moved.history.last()
    assert (history.kind, history.reason) == ("override", "Release blocker")
    wip = Event.objects.filter(type="ticket.transitioned").get().payload["wip"]
    assert wip["overridden"] is True and wip["count"] == 9


def test_only_staff_may_override_a_full_column(make, bob, column):
    for number in range(8):
        make(f"Test {number}", "PHASE_TESTING")
    with pytest.raises(TransitionRefused, match=r"Testing is full \(8/8\); only staff may force it."):
        ticket_move(
            ticket=make("Hotfix", "PHASE_IMPLEMENTATION"), column=column("testing"), actor=bob, force=True, reason="x"
        )


def test_moves_inside_a_full_column_are_not_limited(make, bob, column):
    cards = [make(f"Test {number}", "PHASE_TESTING") for number in range(8)]
    ticket_move(ticket=cards[7], column=column("testing"), actor=bob, next_id=cards[0].pk)
    assert order(column("testing"))[0] == "Test 7"


def test_limits_count_one_board_only(make, bob, column, workflow, alice):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    for number in range(8):
        ticket_create(board=other, title=f"Elsewhere {number}", actor=alice, phase="PHASE_TESTING")
    moved = ticket_move(ticket=make("Mine", "PHASE_IMPLEMENTATION"), column=column("testing"), actor=bob)
    assert moved.phase.key == "PHASE_TESTING"


# Ordering


def test_reordering_inside_a_column_moves_one_row(make, bob, column):
    cards = [make(f"Card {number}") for number in range(4)]
    positions = {card.pk: card.position for card in cards}
    moved = ticket_move(
        ticket=cards[3], column=column("backlog"), actor=bob, previous_id=cards[0].pk, next_id=cards[1].pk
    )
    assert order(column("backlog")) == ["Card 0", "Card 3", "Card 1", "Card 2"]
    unchanged = dict(Ticket.objects.exclude(pk=moved.pk).values_list("pk", "position"))
    assert unchanged == {pk: position for pk, position in positions.items() if pk != moved.pk}
    event = Event.objects.filter(type="ticket.moved").get()
    assert event.payload["position"] == moved.position
    assert moved.history.count() == 1  # a reorder is not a phase change


def test_a_card_goes_to_the_top_or_the_bottom(make, bob, column):
    cards = [make(f"Card {number}") for number in range(3)]
    ticket_move(ticket=cards[2], column=column("backlog"), actor=bob, next_id=cards[0].pk)
    assert order(column("backlog")) == ["Card 2", "Card 0", "Card 1"]
    ticket_move(ticket=cards[2], column=column("backlog"), actor=bob, previous_id=cards[1].pk)
    assert order(column("backlog")) == ["Card 0", "Card 1", "Card 2"]


def test_a_stale_neighbour_is_ignored(make, bob, column):
    cards = [make(f"Card {number}") for number in range(3)]
    elsewhere = make("Elsewhere", "PHASE_DESIGN")
    ticket_move(ticket=cards[0], column=column("backlog"), actor=bob, previous_id=elsewhere.pk, next_id=cards[2].pk)
    assert order(column("backlog")) == ["Card 1", "Card 0", "Card 2"]
    ticket_move(ticket=cards[0], column=column("backlog"), actor=bob, previous_id=999999, next_id=888888)
    assert order(column("backlog")) == ["Card 1", "Card 2", "Card 0"]


def test_a_used_up_gap_renumbers_that_column_only(make, bob, column):
    cards = [make(f"Card {number}") for number in range(3)]
    other = make("Other column", "PHASE_DESIGN")
    Ticket.objects.filter(pk=cards[0].pk).update(position=10)
    Ticket.objects.filter(pk=cards[1].pk).update(position=11)
    Ticket.objects.filter(pk=cards[2].pk).update(position=12)
    moved = ticket_move(
        ticket=cards[2], column=column("backlog"), actor=bob, previous_id=cards[0].pk, next_id=cards[1].pk
    )
    assert order(column("backlog")) == ["Card 0", "Card 2", "Card 1"]
    positions = sorted(Ticket.objects.filter(phase__columns=column("backlog")).values_list("position", flat=True))
    assert positions == [POSITION_GAP, 2 * POSITION_GAP, 3 * POSITION_GAP]
    assert moved.position == 2 * POSITION_GAP
    assert Ticket.objects.get(pk=other.pk).position == other.position


def test_renumbering_costs_the_same_queries_in_a_short_or_long_column(board, bob, column, phase):
    def renumber_queries(size):
        Ticket.objects.filter(board=board).delete()
        Ticket.objects.bulk_create(
            Ticket(board=board, title=f"Card {n}", phase=phase("PHASE_BACKLOG"), position=n) for n in range(size)
        )
        cards = list(Ticket.objects.filter(board=board).order_by("position"))
        first, second, last = cards[0], cards[1], cards[-1]
        with CaptureQueriesContext(connection) as queries:
            ticket_move(ticket=last, column=column("backlog"), actor=bob, previous_id=first.pk, next_id=second.pk)
        assert order(column("backlog"))[:3] == ["Card 0", f"Card {size - 1}", "Card 1"]
        positions = list(
            Ticket.objects.filter(board=board).order_by("position", "pk").values_list("position", flat=True)
        )
        assert positions == [POSITION_GAP * (n + 1) for n in range(size)]
        return len(queries)

    assert renumber_queries(5) == renumber_queries(300)


def test_a_move_takes_a_fixed_number_of_queries(make, bob, column):
    def queries_for(size):
        cards = [make(f"{size}-{number}", "PHASE_IMPLEMENTATION") for number in range(size)]
        ticket = make(f"{size}-mover", "PHASE_DESIGN")
        with CaptureQueriesContext(connection) as queries:
            ticket_move(
                ticket=ticket, column=column("building"), actor=bob, previous_id=cards[0].pk, next_id=cards[1].pk
            )
        Ticket.objects.filter(phase__key="PHASE_IMPLEMENTATION").delete()
        return len(queries)

    # The ticket is read once before its columns are locked, and locked after them (lock order).
    assert queries_for(3) == queries_for(9) <= 16


# The race for the last place, with real concurrent connections


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_drops_into_the_last_place_cannot_both_succeed(board, alice, workflow, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    check = tickets._wip_check

    def slow_check(**kwargs):
        # Hold the transaction open after counting, so unlocked drops would all count 7.
        result = check(**kwargs)
        time.sleep(0.2)
        return result

    monkeypatch.setattr(tickets, "_wip_check", slow_check)
    testing = BoardColumn.objects.get(workflow=workflow, key="testing")
    for number in range(7):
        ticket_create(board=board, title=f"Test {number}", actor=alice, phase="PHASE_TESTING")
    racers = [
        ticket_create(board=board, title=f"Racer {n}", actor=alice, phase="PHASE_IMPLEMENTATION") for n in range(4)
    ]
    start = threading.Barrier(len(racers))
    outcomes = []

    def drop(ticket):
        try:
            connection.ensure_connection()
            start.wait()
            ticket_move(ticket=ticket, column=testing, actor=alice)
            outcomes.append("moved")
        except TransitionRefused as exc:
            outcomes.append(str(exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=drop, args=(ticket,)) for ticket in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["Testing is full (8/8)."] * 3 + ["moved"]
    assert Ticket.objects.filter(board=board, phase__key="PHASE_TESTING").count() == 8


def test_a_card_dropped_back_where_it_was_changes_nothing(make, bob, column):
    ticket = make("Stay")
    before = state()
    ticket_move(ticket=ticket, column=column("backlog"), actor=bob)
    assert state() == before
