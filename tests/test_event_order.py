"""A board's events take their log positions in commit order, so a reader resuming after one never misses a later one.

Writers of one board do not wait for each other: each event's position is
given as its transaction commits (board/migrations/0006_event_log_positions.py).
"""

import asyncio
import random
import threading
import time

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from board.events import board_group, event_emit, events_together
from board.models import Board, Event
from board.selectors.events import events_after, last_event_id

from .threads import in_thread

pytestmark = pytest.mark.django_db(transaction=True)


def chain(board):
    """The board's events in position order, as (position, previous position)."""
    return list(Event.objects.filter(board=board).order_by("seq").values_list("seq", "previous_seq"))


@pytest.mark.postgres
def test_a_writer_does_not_wait_for_an_open_transaction_of_the_same_board(board):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one transaction write at a time")
    first_written, second_done = threading.Event(), threading.Event()
    committed = []

    def slow_writer():
        with transaction.atomic():
            event_emit(board=board, type="test.first", entity=board, actor="test")
            first_written.set()
            # Still open while the other writer of the board commits.
            assert second_done.wait(5), "the second writer waited for this transaction"
        committed.append("first")

    def quick_writer():
        first_written.wait(5)
        with transaction.atomic():
            event_emit(board=board, type="test.second", entity=board, actor="test")
        committed.append("second")
        second_done.set()

    for thread in [in_thread(slow_writer), in_thread(quick_writer)]:
        thread.join(10)

    assert committed == ["second", "first"]
    first = Event.objects.get(type="test.first")
    second = Event.objects.get(type="test.second")
    # Inserted first, committed last: its position is the later one.
    assert first.pk < second.pk
    assert second.seq < first.seq
    assert first.previous_seq == second.seq
    assert last_event_id(board.pk) == first.seq


def test_a_reader_resuming_after_a_position_sees_what_commits_later_with_an_earlier_insert(board):
    """The failure the positions prevent: an event inserted earlier but committed later must come after."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one transaction write at a time")
    first_written, read_done = threading.Event(), threading.Event()
    seen = []

    def slow_writer():
        with transaction.atomic():
            event_emit(board=board, type="test.slow", entity=board, actor="test")
            first_written.set()
            read_done.wait(5)

    def quick_writer_then_reader():
        first_written.wait(5)
        with transaction.atomic():
            event_emit(board=board, type="test.quick", entity=board, actor="test")
        seen.extend(events_after(board.pk, 0, limit=100))
        read_done.set()

    for thread in [in_thread(slow_writer), in_thread(quick_writer_then_reader)]:
        thread.join(10)

    assert [event["type"] for event in seen] == ["test.quick"]
    later = events_after(board.pk, seen[-1]["id"], limit=100)
    assert [event["type"] for event in later] == ["test.slow"]


def test_a_transactions_events_keep_their_order_and_chain_to_the_boards_previous_one(board, workflow):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    event_emit(board=board, type="test.before", entity=board, actor="test")
    with transaction.atomic():
        for n in range(3):
            event_emit(board=board, type=f"test.{n}", entity=board, actor="test")
            event_emit(board=other, type=f"test.other.{n}", entity=other, actor="test")

    types = [event["type"] for event in events_after(board.pk, 0, limit=100)]
    assert types == ["test.before", "test.0", "test.1", "test.2"]
    for positions in (chain(board), chain(other)):
        # Each event names the one before it on its board, whatever the other board did between.
        assert [previous for _, previous in positions] == [0] + [seq for seq, _ in positions[:-1]]
    assert last_event_id(board.pk) == chain(board)[-1][0]


@pytest.fixture
def heard(board):
    """A function giving the types of the next `count` events that reached `board`'s group on the real channel
    layer (failing after a few seconds without them)."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(board_group(board.pk), channel)

    async def receive(count):
        return [(await asyncio.wait_for(layer.receive(channel), 5))["event"]["type"] for _ in range(count)]

    yield async_to_sync(receive)
    async_to_sync(layer.group_discard)(board_group(board.pk), channel)


def test_events_emitted_together_are_written_in_one_insert_in_their_order_and_each_broadcast(board, heard):
    event_emit(board=board, type="test.before", entity=board, actor="test")
    with transaction.atomic(), CaptureQueriesContext(connection) as statements:
        with events_together():
            for n in range(3):
                event_emit(board=board, type=f"test.{n}", entity=board, actor="test")
            with events_together():
                event_emit(board=board, type="test.nested", entity=board, actor="test")
            assert len(statements) == 0  # nothing written yet
        assert len(statements) == 1 and statements[0]["sql"].startswith("INSERT")

    expected = ["test.before", "test.0", "test.1", "test.2", "test.nested"]
    assert [event["type"] for event in events_after(board.pk, 0, limit=10)] == expected
    positions = chain(board)
    assert [previous for _, previous in positions] == [0] + [seq for seq, _ in positions[:-1]]
    assert heard(5) == expected


def test_events_of_a_block_that_raises_are_neither_written_nor_broadcast(board, heard):
    with transaction.atomic():
        with pytest.raises(RuntimeError), events_together():
            event_emit(board=board, type="test.lost", entity=board, actor="test")
            raise RuntimeError("changed my mind")
        event_emit(board=board, type="test.kept", entity=board, actor="test")
    assert [event["type"] for event in events_after(board.pk, 0, limit=10)] == ["test.kept"]
    assert heard(1) == ["test.kept"]


def test_a_rolled_back_transaction_leaves_no_position_and_no_hole_in_the_chain(board):
    event_emit(board=board, type="test.kept", entity=board, actor="test")
    with pytest.raises(RuntimeError), transaction.atomic():
        event_emit(board=board, type="test.lost", entity=board, actor="test")
        raise RuntimeError("changed my mind")
    event_emit(board=board, type="test.after", entity=board, actor="test")

    positions = chain(board)
    assert [event["type"] for event in events_after(board.pk, 0, limit=10)] == ["test.kept", "test.after"]
    assert positions[1][1] == positions[0][0]


@pytest.mark.slow
def test_concurrent_writers_never_make_a_resuming_reader_miss_an_event(board):
    """Writers of one board, slow and quick, commit in any order while a reader follows the log by position.

    The reader asks for what is after the last position it has, over and over, as a page's poll does; at the
    end it must hold every event of the board, once each, in position order.
    """
    writers, per_writer = 6, 15
    stop = threading.Event()
    read, errors = [], []

    def writer(number):
        rng = random.Random(number)
        try:
            for n in range(per_writer):
                with transaction.atomic():
                    event_emit(board=board, type=f"test.{number}.{n}", entity=board, actor="test")
                    if rng.random() < 0.5:
                        time.sleep(rng.uniform(0, 0.02))  # hold the transaction open a while
                    if rng.random() < 0.3:
                        event_emit(board=board, type=f"test.{number}.{n}.b", entity=board, actor="test")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        after = 0
        while True:
            done = stop.is_set()
            batch = events_after(board.pk, after, limit=50)
            read.extend(batch)
            if batch:
                after = batch[-1]["id"]
            elif done:
                return

    follower = in_thread(reader)
    threads = [in_thread(lambda number=number: writer(number)) for number in range(writers)]
    for thread in threads:
        thread.join(60)
    stop.set()
    follower.join(60)

    assert not errors
    written = list(Event.objects.filter(board=board).order_by("seq").values_list("seq", flat=True))
    assert len(written) >= writers * per_writer
    assert [event["id"] for event in read] == written
    positions = chain(board)
    assert [previous for _, previous in positions] == [0] + [seq for seq, _ in positions[:-1]]
