"""Concurrent moves on PostgreSQL, with real connections: no deadlock, no lost move, whatever the interleaving.

A renumber rewrites every card of its column. If a mover held its own card
while waiting for that column, the two would wait on each other; so every
move locks its columns first (source and target, in id order), then its card.
"""

import threading
import time

import pytest
from django.db import connection, connections

from board.models import Ticket
from board.services import TransitionRefused, ordering, ticket_create, ticket_move
from phases.models import BoardColumn

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("real concurrent connections need PostgreSQL")


def race(jobs):
    """Run each job in its own thread and connection, all starting together; return what each returned or raised."""
    start = threading.Barrier(len(jobs))
    outcomes = [None] * len(jobs)

    def run(index, job):
        try:
            connection.ensure_connection()
            start.wait()
            outcomes[index] = job()
        except Exception as exc:  # the outcome under test: any error at all is reported, not swallowed
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(index, job)) for index, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def crowd(board, alice, phase, count):
    """`count` cards in one column with no room between neighbours: the next reorder between two renumbers it."""
    cards = [ticket_create(board=board, title=f"Card {n}", actor=alice, phase=phase) for n in range(count)]
    for position, card in enumerate(cards, start=1):
        Ticket.objects.filter(pk=card.pk).update(position=position)
    return [Ticket.objects.get(pk=card.pk) for card in cards]


@pytest.fixture
def slow_renumber(monkeypatch):
    """Hold the column a little longer before renumbering, so every racer is waiting somewhere by then."""
    renumber = ordering.renumber

    def slow(*args, **kwargs):
        time.sleep(0.1)
        return renumber(*args, **kwargs)

    monkeypatch.setattr(ordering, "renumber", slow)


@pytest.mark.parametrize("racers", [2, 6])
def test_concurrent_reorders_in_a_full_column_all_succeed(board, alice, workflow, slow_renumber, racers):
    backlog = BoardColumn.objects.get(workflow=workflow, key="backlog")
    cards = crowd(board, alice, "PHASE_BACKLOG", 3 * racers + 2)
    # Each racer moves one card of the lower half between two neighbours of the upper half.
    movers = cards[:racers]
    anchors = cards[racers:]
    jobs = [
        (
            lambda mover=mover, n=n: ticket_move(
                ticket=mover, column=backlog, actor=alice, previous_id=anchors[2 * n].pk, next_id=anchors[2 * n + 1].pk
            )
        )
        for n, mover in enumerate(movers)
    ]
    for trial in range(3):
        outcomes = race(jobs)
        errors = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
        assert not errors, f"trial {trial}: {errors}"
        order = list(
            Ticket.objects.filter(phase__key="PHASE_BACKLOG").order_by("position", "pk").values_list("pk", flat=True)
        )
        for n, mover in enumerate(movers):
            assert order.index(anchors[2 * n].pk) < order.index(mover.pk) < order.index(anchors[2 * n + 1].pk)
        # Squeeze the column again for the next trial.
        for position, pk in enumerate(order, start=1):
            Ticket.objects.filter(pk=pk).update(position=position)
        jobs = [
            (
                lambda mover=mover, n=n: ticket_move(
                    ticket=Ticket.objects.get(pk=mover.pk),
                    column=backlog,
                    actor=alice,
                    previous_id=anchors[2 * n].pk,
                    next_id=anchors[2 * n + 1].pk,
                )
            )
            for n, mover in enumerate(reversed(movers))
        ]
        movers = list(reversed(movers))


def test_cards_swapped_between_two_full_columns_at_once_both_move(board, alice, workflow, slow_renumber):
    """Each mover renumbers the column the other card is leaving: with target-only locks this deadlocked."""
    backlog = BoardColumn.objects.get(workflow=workflow, key="backlog")
    analyzing = BoardColumn.objects.get(workflow=workflow, key="analyzing")
    left = crowd(board, alice, "PHASE_BACKLOG", 4)
    right = crowd(board, alice, "PHASE_REQUIREMENTS", 4)
    outcomes = race(
        [
            lambda: ticket_move(
                ticket=left[0], column=analyzing, actor=alice, previous_id=right[1].pk, next_id=right[2].pk
            ),
            lambda: ticket_move(
                ticket=right[0],
                column=backlog,
                actor=alice,
                previous_id=left[1].pk,
                next_id=left[2].pk,
                force=True,
                reason="Back to the backlog",
            ),
        ]
    )
    assert not [outcome for outcome in outcomes if isinstance(outcome, Exception)], outcomes
    assert Ticket.objects.get(pk=left[0].pk).phase.key == "PHASE_REQUIREMENTS"
    assert Ticket.objects.get(pk=right[0].pk).phase.key == "PHASE_BACKLOG"


def test_a_card_moved_by_someone_else_meanwhile_is_refused_not_misplaced(board, alice, workflow):
    """Two people drop the same card into different columns at once: one wins, the other is told to look again."""
    analyzing = BoardColumn.objects.get(workflow=workflow, key="analyzing")
    blocked = BoardColumn.objects.get(workflow=workflow, key="blocked")
    card = ticket_create(board=board, title="Contested", actor=alice, phase="PHASE_BACKLOG")
    outcomes = race(
        [
            lambda: ticket_move(ticket=card, column=analyzing, actor=alice),
            lambda: ticket_move(ticket=card, column=blocked, actor=alice),
        ]
    )
    moved = [outcome for outcome in outcomes if isinstance(outcome, Ticket)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, TransitionRefused)]
    assert len(moved) >= 1 and len(moved) + len(refused) == 2, outcomes
    assert Ticket.objects.get(pk=card.pk).history.count() == 1 + len(moved)
