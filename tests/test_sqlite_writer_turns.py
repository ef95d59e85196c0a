"""On SQLite, the write transactions of one process take turns through a lock instead of SQLite's busy handler."""

import threading

import pytest
from django.db import connection, transaction

from board.models import Board
from omoi_site.sqlite.base import WriterTurns

from .threads import in_thread

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def sqlite_only():
    if connection.vendor != "sqlite":
        pytest.skip("the turns are SQLite's")


def turn():
    return WriterTurns.of(connection.settings_dict["NAME"])


def test_a_second_writer_waits_for_the_turn_and_then_writes(workflow):
    first_open, second_started, second_done = threading.Event(), threading.Event(), threading.Event()
    waited_while_open = []

    def first():
        with transaction.atomic():
            Board.objects.create(name="First", slug="first", workflow=workflow)
            first_open.set()
            second_started.wait(5)
            # The second writer is queued on the turn, not inside SQLite: it has not written.
            waited_while_open.append(not second_done.wait(0.3))

    def second():
        first_open.wait(5)
        second_started.set()
        with transaction.atomic():
            Board.objects.create(name="Second", slug="second", workflow=workflow)
        second_done.set()

    threads = [in_thread(first), in_thread(second)]
    for thread in threads:
        thread.join(10)

    assert waited_while_open == [True]
    assert second_done.is_set()
    assert set(Board.objects.values_list("slug", flat=True)) >= {"first", "second"}
    assert not turn().locked()


def test_the_turn_is_given_back_however_a_transaction_ends(workflow):
    with transaction.atomic():
        assert turn().locked()
    assert not turn().locked()

    with pytest.raises(RuntimeError), transaction.atomic():
        Board.objects.create(name="Gone", slug="gone", workflow=workflow)
        raise RuntimeError("rolled back")
    assert not turn().locked()
    assert not Board.objects.filter(slug="gone").exists()

    with transaction.atomic():
        connection.close()  # a connection dropped in the middle of a transaction
    assert not turn().locked()


def test_a_turn_never_given_back_delays_a_writer_only_until_the_busy_timeout(workflow):
    stuck = turn()
    options = connection.settings_dict["OPTIONS"]
    stuck.acquire()  # as if a thread had died inside a transaction
    try:
        connection.close()
        connection.settings_dict["OPTIONS"] = {**options, "timeout": 0.2}
        with transaction.atomic():
            Board.objects.create(name="Late", slug="late", workflow=workflow)
        assert Board.objects.filter(slug="late").exists()
    finally:
        stuck.release()
        connection.close()
        connection.settings_dict["OPTIONS"] = options
