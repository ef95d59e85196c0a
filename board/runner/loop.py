"""The agent's main loop: claim a task, hand it to a worker, report, repeat, until stopped or N tasks are done.

The worker is a callable taking the claimed task (the API's JSON) and
returning what became of it: one of the OUTCOMES. The simulated agent and
the command-line runner are both workers; this loop is the part they share.
"""

import contextlib
import random
import signal
import sys
import threading
import time
from datetime import datetime

from .client import CONNECTION_ERRORS, ApiError

COMPLETED, FAILED, SUPERSEDED, HANDLED_BY_CHILD, ABANDONED = (
    "completed",
    "failed",
    "superseded",
    "reported by the agent",
    "abandoned",
)
OUTCOMES = (COMPLETED, FAILED, SUPERSEDED, HANDLED_BY_CHILD, ABANDONED)
# Errors no wait will cure: a revoked token, a board the agent is not on. The loop stops on them.
FATAL_STATUSES = frozenset({401, 403, 404})


def log_line(message):
    """The default log: one timestamped line on standard error, flushed, so a supervisor sees it at once."""
    print(f"{datetime.now().strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class Stop:
    """Set by SIGTERM or SIGINT. The first asks the runner to stop after the current task; a second, to abandon it.

    Waits go through `wait()`, so a stop interrupts a sleep at once instead
    of after the poll interval.
    """

    def __init__(self):
        self._event = threading.Event()
        self.signals = 0

    def request(self):
        self.signals += 1
        self._event.set()

    @property
    def requested(self):
        return self._event.is_set()

    @property
    def abandon(self):
        return self.signals >= 2

    def wait(self, seconds):
        """Sleep up to `seconds`; True when a stop was asked for (then it returns at once)."""
        return self._event.wait(max(0.0, seconds))


def install_signal_handlers(stop, log=log_line):
    """Route SIGTERM and SIGINT to `stop`; returns a function that puts the previous handlers back."""

    def handler(signum, frame):
        stop.request()
        if stop.abandon:
            log(f"{signal.Signals(signum).name} again: abandoning the current task.")
        else:
            log(f"{signal.Signals(signum).name}: stopping after the current task (send it again to abandon it).")

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}

    def restore():
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


class Heartbeat:
    """POST /agents/me/heartbeat at most every `every` seconds; a failed beat is logged, never raised.

    A missed heartbeat is not worth stopping the work for: the next one, or
    the task's own report, tells the orchestrator the agent is alive.
    """

    def __init__(self, omoi, every=30.0, log=log_line, clock=time.monotonic):
        self.omoi = omoi
        self.every = every
        self.log = log
        self.clock = clock
        self.last = None

    def due(self):
        return self.last is None or self.clock() - self.last >= self.every

    def beat(self, status=None):
        self.last = self.clock()
        try:
            self.omoi.heartbeat(status)
        except ApiError as error:
            if error.status == 401:
                raise
            self.log(f"Heartbeat refused: {error}")
        except CONNECTION_ERRORS as error:
            self.log(f"Heartbeat not sent: {error}")

    def maybe(self):
        if self.due():
            self.beat()


def run_agent(
    omoi, work, *, board=None, max_tasks=None, poll=5.0, stop=None, heartbeat=None, log=log_line, rng=None, idle=None
):
    """Claim and work tasks until `stop` is requested or `max_tasks` were handled; the number handled.

    `idle`, when given, is called after each claim that found no work (the
    simulated agent files new work there for a demo).

    Between empty claims it waits `poll` seconds, give or take a fifth, so a
    fleet of agents started together does not poll in step. A lost server
    is waited out; an error no wait will cure (a revoked token, a board the
    agent is not on) ends the loop with that ApiError.
    """
    stop = stop or Stop()
    heartbeat = heartbeat or Heartbeat(omoi, log=log)
    rng = rng or random.Random()
    handled = 0
    heartbeat.beat("idle")
    try:
        while not stop.requested and (max_tasks is None or handled < max_tasks):
            try:
                task = omoi.claim(board)
            except ApiError as error:
                if error.status in FATAL_STATUSES:
                    raise
                log(f"The claim was refused: {error}")
                task = None
            except CONNECTION_ERRORS as error:
                log(f"The server did not answer the claim: {error}")
                task = None
            if task is None:
                if idle is not None:
                    idle()
                heartbeat.maybe()
                stop.wait(poll * rng.uniform(0.8, 1.2))
                continue
            attempt = f", attempt {task['attempt']}" if task.get("attempt") is not None else ""
            log(f"Claimed task {task['id']} ({task['phase']}, ticket {task['ticket_id']}{attempt}): {task['title']}")
            outcome = work_safely(omoi, work, task, log=log)
            handled += 1
            log(f"Task {task['id']}: {outcome}.")
            heartbeat.beat()
    finally:
        # A revoked token has nothing more to tell.
        with contextlib.suppress(ApiError):
            heartbeat.beat("offline")
    return handled


def work_safely(omoi, work, task, *, log=log_line):
    """Run the worker; if it breaks, hand the task back (a retryable failure) rather than hold it until it times out."""
    try:
        return work(task)
    except Exception as error:
        if isinstance(error, ApiError) and error.status == 401:
            raise
        problem = f"{type(error).__name__}: {error}"
        log(f"Task {task['id']} broke off: {problem}")
    try:
        return report_failure(omoi, task, f"The agent runner broke off: {problem}", log=log)
    except (ApiError, *CONNECTION_ERRORS) as error:
        if isinstance(error, ApiError) and error.status == 401:
            raise
        # The server is gone too: the task times out on its side and is retried then.
        log(f"Task {task['id']}: the failure could not be reported either: {error}")
        return ABANDONED


def start_task(omoi, task, *, log=log_line):
    """Mark a claimed task running, unless it already is.

    An agent holds one task at a time and a claim answers the task it holds:
    after a restart the runner may be handed back a task it had started.
    """
    if task.get("status") == "running":
        log(f"Task {task['id']} was started before (this agent holds it): working it again.")
        return
    omoi.start(task["id"], attempt=task.get("attempt"))


def report_failure(omoi, task, error, *, retryable=True, log=log_line):
    """Fail the task with `error`; a 409 (superseded attempt, or no longer ours) is logged, not raised."""
    try:
        omoi.fail(task["id"], error, retryable=retryable, attempt=task.get("attempt"))
    except ApiError as refused:
        if refused.status == 409:
            log(f"Task {task['id']}: the failure was not recorded, this attempt is over: {refused.detail}")
            return SUPERSEDED
        raise
    return FAILED


def report_completion(omoi, task, *, result, artifacts, completed_criteria, log=log_line):
    """Complete the task; a 409 is logged as superseded, a 422 (the result refused) fails the task with the reason."""
    try:
        omoi.complete(
            task["id"],
            result=result,
            artifacts=artifacts,
            completed_criteria=completed_criteria,
            attempt=task.get("attempt"),
        )
    except ApiError as refused:
        if refused.status == 409:
            log(f"Task {task['id']}: the completion was not recorded, this attempt is over: {refused.detail}")
            return SUPERSEDED
        if refused.status in (413, 422):
            return report_failure(omoi, task, f"The API refused the agent's result: {refused}", log=log)
        raise
    return COMPLETED
