"""SQLite for a server with many threads: this process's write transactions wait their turn in a queue.

SQLite lets one transaction write at a time, and Omoi begins every
transaction with the write lock (BEGIN IMMEDIATE). A transaction that finds
the lock taken is left to SQLite's busy handler, which sleeps and retries
with growing pauses (up to 100 ms each) and favours nobody: under a dozen
concurrent agents, most wait a few milliseconds and some wait seconds.
Here the threads of one process take turns through a lock of the process
before they BEGIN, so each waits about as long as the transactions ahead of
it take; the busy handler is left to arbitrate between processes (the web
server and the orchestrator), which write far less often.

A turn that cannot be had within the busy timeout (a transaction left open
by a thread that died) is given up on: the transaction then begins anyway
and SQLite's own lock keeps the database safe.
"""

import threading

from django.db.backends.sqlite3 import base


class WriterTurns:
    """One lock per database file for the whole process, shared by every connection to it."""

    _locks = {}
    _guard = threading.Lock()

    @classmethod
    def of(cls, name):
        with cls._guard:
            return cls._locks.setdefault(str(name), threading.Lock())


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.turn = None

    def _start_transaction_under_autocommit(self):
        if self.is_in_memory_db():
            return super()._start_transaction_under_autocommit()
        turn = WriterTurns.of(self.settings_dict["NAME"])
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        held = turn.acquire(timeout=timeout) if timeout > 0 else turn.acquire(blocking=False)
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            if held:
                turn.release()
            raise
        self.turn = turn if held else None

    def end_turn(self):
        turn, self.turn = self.turn, None
        if turn is not None:
            turn.release()

    def _commit(self):
        try:
            super()._commit()
        finally:
            self.end_turn()

    def _rollback(self):
        try:
            super()._rollback()
        finally:
            self.end_turn()

    def _close(self):
        try:
            super()._close()
        finally:
            self.end_turn()
