"""The orchestrator's loop: rounds of steps, a stop that lets the step under way finish, failures contained."""

import os
import signal
from datetime import UTC, datetime

import pytest

from omoi_site import orchestrator as orchestrator_module
from omoi_site.orchestrator import Orchestrator, Step

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class Recorder:
    def __init__(self):
        self.calls = []

    def step(self, name, more=False, then=None):
        def run(*, now, batch):
            self.calls.append((name, now, batch))
            if then:
                then()
            return more() if callable(more) else more

        return Step(name, run)


def test_one_round_runs_every_step_in_order_with_the_clock_and_batch():
    recorder = Recorder()
    steps = (recorder.step("a"), recorder.step("b"), recorder.step("c"))
    rounds = Orchestrator(steps, batch=7, clock=lambda: NOW).run(once=True)
    assert rounds == 1
    assert recorder.calls == [("a", NOW, 7), ("b", NOW, 7), ("c", NOW, 7)]


def test_more_work_starts_the_next_round_at_once():
    recorder = Recorder()
    orchestrator = None
    left = iter([True, True, False])

    def more():
        value = next(left)
        if not value:
            orchestrator.stop()
        return value

    # An hour's interval: the test would hang if a round with more work waited for it.
    orchestrator = Orchestrator((recorder.step("a", more=more),), interval=3600, clock=lambda: NOW)
    assert orchestrator.run() == 3


def test_sigterm_lets_the_step_under_way_finish_and_runs_no_other():
    recorder = Recorder()
    finished = []

    def terminate():
        os.kill(os.getpid(), signal.SIGTERM)
        finished.append("a")

    steps = (recorder.step("a", then=terminate), recorder.step("b"))
    rounds = Orchestrator(steps, interval=3600, clock=lambda: NOW).run()
    assert finished == ["a"]
    assert [name for name, *_ in recorder.calls] == ["a"]
    assert rounds == 1


def test_the_previous_signal_handlers_come_back_after_the_loop():
    before = signal.getsignal(signal.SIGTERM)
    Orchestrator((), clock=lambda: NOW).run(once=True)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_failing_step_is_logged_and_the_others_still_run(caplog):
    recorder = Recorder()

    def broken(*, now, batch):
        raise RuntimeError("database went away")

    steps = (Step("broken", broken), recorder.step("b"))
    Orchestrator(steps, clock=lambda: NOW).run(once=True)
    assert [name for name, *_ in recorder.calls] == ["b"]
    assert "Orchestrator step 'broken' failed" in caplog.text
    assert "database went away" in caplog.text


def test_old_connections_are_closed_before_every_step(monkeypatch):
    closed = []
    monkeypatch.setattr(orchestrator_module, "close_old_connections", lambda: closed.append(True))
    recorder = Recorder()
    Orchestrator((recorder.step("a"), recorder.step("b")), clock=lambda: NOW).run(once=True)
    assert len(closed) == 3  # before each step, and after the round


@pytest.mark.parametrize("name", ["agents", "time-outs", "results", "phase entry", "gates", "assign", "rescue"])
def test_every_duty_is_a_step(name):
    assert name in [step.name for step in orchestrator_module.STEPS]
