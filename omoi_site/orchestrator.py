"""The orchestrator: runs every app's steps in turn, round after round, until it is told to stop.

Built like healthchecks' `sendalerts`. SIGTERM and SIGINT set a flag and the
step under way finishes, so a stop never cuts a change in half (and a SIGKILL
cannot either: each step's changes are transactions guarded on the prior
state, so whatever a killed process left undone the next one picks up). Each
step does one bounded pass of one duty and says whether there is more work
right now; while any step says so the next round starts at once, otherwise
the loop sleeps for the interval. Old database connections are closed every
round, as a long-running process must.
"""

import logging
import signal
import threading
from dataclasses import dataclass

from django.db import close_old_connections
from django.utils import timezone

from board.orchestration import queue, tickets
from discoveries import rescue

logger = logging.getLogger("omoi.orchestrator")


@dataclass(frozen=True)
class Step:
    name: str
    run: object  # step(*, now, batch) -> bool


# The order matters within a round: silent agents and stale tasks are freed
# before the queue is handed out, and tickets get their phase's tasks before
# their gate is judged.
STEPS = (
    Step("agents", queue.release_silent_agents),
    Step("time-outs", queue.time_out_tasks),
    Step("results", tickets.apply_results),
    Step("phase entry", tickets.enter_phases),
    Step("gates", tickets.advance_tickets),
    Step("assign", queue.assign_tasks),
    Step("rescue", rescue.rescue_stuck_tickets),
)


class Orchestrator:
    def __init__(self, steps=STEPS, *, interval=2.0, batch=None, clock=timezone.now):
        self.steps = steps
        self.interval = interval
        self.batch = batch
        self.clock = clock
        self.stopping = threading.Event()
        self.rounds = 0

    def stop(self, signum=None, frame=None):
        self.stopping.set()

    def run_round(self):
        """Run each step once; True when one of them has more work right now."""
        more = False
        for step in self.steps:
            if self.stopping.is_set():
                break
            close_old_connections()
            try:
                more |= bool(step.run(now=self.clock(), batch=self.batch))
            except Exception:
                # One duty failing (a database hiccup, a bug) must not stop the others; it is retried next round.
                logger.exception("Orchestrator step %r failed", step.name)
        close_old_connections()
        self.rounds += 1
        return more

    def run(self, *, once=False):
        """Round after round until stopped (or one round with `once`)."""
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not self.stopping.is_set():
                more = self.run_round()
                if once:
                    break
                if not more:
                    self.stopping.wait(self.interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.rounds
