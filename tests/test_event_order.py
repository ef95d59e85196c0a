"""Events of one board commit in id order, so a reader resuming after an id never misses a later-committing one."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from board.events import event_emit
from board.models import Event


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_later_event_of_the_same_board_waits_for_the_earlier_to_commit(board):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite lets one transaction write at a time")
    first_written = threading.Event()
    committed = []

    def slow_writer():
        with transaction.atomic():
            event_emit(board=board, type="test.first", entity=board, actor="test")
            first_written.set()
            time.sleep(0.3)
        committed.append("first")
        connections.close_all()

    def quick_writer():
        first_written.wait(5)
        with transaction.atomic():
            event_emit(board=board, type="test.second", entity=board, actor="test")
        committed.append("second")
        connections.close_all()

    threads = [threading.Thread(target=slow_writer), threading.Thread(target=quick_writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert committed == ["first", "second"]
    first, second = Event.objects.filter(type__startswith="test.").order_by("id")
    assert (first.type, second.type) == ("test.first", "test.second")
