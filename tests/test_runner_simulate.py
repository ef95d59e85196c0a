"""The simulated agent: outputs shaped to the phase's expected outputs, its choices, and a real run against Daphne."""

import io
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from board.models import Agent, Task
from board.runner.client import ApiError
from board.runner.loop import COMPLETED, FAILED, SUPERSEDED, Stop
from board.runner.simulate import SimulatedAgent, glob_regex, outputs_for, path_matching
from board.services import task_create, ticket_create
from discoveries.models import Discovery

from .browser import running_server

TASK = {"id": 41, "ticket_id": 12, "title": "Send the reset e-mail!", "phase": "PHASE_X", "board": "demo"}


# Paths for patterns


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("docs/requirements/*.md", "docs/requirements/send-the-reset-e-mail.md"),
        ("tests/**/test_*.py", "tests/sim/test_send-the-reset-e-mail.py"),
        ("**/*.py", "sim/send-the-reset-e-mail.py"),
        ("docs/**", "docs/sim/send-the-reset-e-mail"),
        ("src/?.py", "src/x.py"),
        ("src/[ab].py", "src/[ab].py"),  # brackets stand for themselves, as in the phase gate's globs
        ("ticket description", "ticket description"),
    ],
)
def test_a_path_is_made_to_match_its_pattern(pattern, path):
    made = path_matching(pattern, "send-the-reset-e-mail")

    assert made == path
    assert glob_regex(pattern).match(made)


def test_globs_span_folders_only_with_two_stars():
    assert glob_regex("tests/**/test_*.py").match("tests/test_a.py")
    assert glob_regex("tests/**/test_*.py").match("tests/unit/api/test_a.py")
    assert not glob_regex("tests/*.py").match("tests/unit/test_a.py")
    assert not glob_regex("src/?.py").match("src/ab.py")
    assert not glob_regex("docs/*.md").match("docs/a.md.bak")


def test_outputs_follow_the_phases_patterns_types_and_rules():
    phase = {
        "expected_outputs": [
            {"type": "document", "pattern": "docs/design/<ticket-id>.md", "required": True},
            {
                "artifact_type": "file",
                "pattern": "src/<ticket-id>/*.py",
                "validation_rule": "min_count: 3 (one module per component)",
            },
            {"type": "test", "pattern": "tests/**/test_*.py", "min_passing": 4},
            {"type": "test", "pattern": "tests/test_smoke.py", "validation_rule": "min_passing: 2"},
            {"type": "decision", "required": True},
        ]
    }

    artifacts = outputs_for(phase, TASK, random.Random(1))

    assert artifacts == [
        {"type": "document", "path": "docs/design/12.md"},
        {"type": "file", "path": "src/12/send-the-reset-e-mail-1.py"},
        {"type": "file", "path": "src/12/send-the-reset-e-mail-2.py"},
        {"type": "file", "path": "src/12/send-the-reset-e-mail-3.py"},
        {"type": "test", "path": "tests/sim/test_send-the-reset-e-mail.py", "passed": 4, "failed": 0},
        {"type": "test", "path": "tests/test_smoke.py", "passed": 2, "failed": 0},
        {"type": "decision", "name": "decision for task 41"},
    ]


def test_optional_outputs_are_produced_only_sometimes():
    phase = {"expected_outputs": [{"type": "file", "pattern": "docs/*.png", "required": False}]}

    made = [len(outputs_for(phase, TASK, random.Random(seed))) for seed in range(40)]

    assert set(made) == {0, 1}


def test_a_phase_without_expected_outputs_gets_no_artifacts():
    assert outputs_for({"expected_outputs": []}, TASK) == []


# Its choices, with the API replaced by a recorder


class RecordingOmoi:
    """Answers like the API and remembers each call; `refuse` maps a method name to the ApiError it raises."""

    def __init__(self, phase, refuse=None):
        self._phase = phase
        self.refuse = refuse or {}
        self.calls = []

    def _called(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if name in self.refuse:
            raise self.refuse[name]

    def start(self, task_id, attempt=None):
        self._called("start", task_id, attempt=attempt)

    def phase(self, key, board=None):
        self._called("phase", key, board=board)
        return self._phase

    def heartbeat(self, status=None):
        self._called("heartbeat", status)

    def complete(self, task_id, **kwargs):
        self._called("complete", task_id, **kwargs)

    def fail(self, task_id, error, **kwargs):
        self._called("fail", task_id, error, **kwargs)

    def record(self, task_id, **kwargs):
        self._called("record", task_id, **kwargs)
        return {"id": 1}

    def branch(self, task_id, **kwargs):
        self._called("branch", task_id, **kwargs)
        return {"discovery": {"id": 1}, "task": {"id": 2}}

    def names(self):
        return [name for name, _, _ in self.calls]


PHASE = {"done_definitions": ["Spec written", "Spec reviewed"], "expected_outputs": [{"type": "document"}]}


def simulated(omoi, **options):
    return SimulatedAgent(omoi, think=(0, 0), log=lambda line: None, **({"rng": random.Random(3)} | options))


def test_it_completes_with_every_done_definition_and_the_claims_attempt():
    omoi = RecordingOmoi(PHASE)

    outcome = simulated(omoi, failure_rate=0, discovery_rate=0)({**TASK, "attempt": 2})

    assert outcome == COMPLETED
    assert omoi.names() == ["start", "phase", "complete"]
    _, (task_id,), report = omoi.calls[-1]
    assert task_id == 41
    assert report["completed_criteria"] == ["Spec written", "Spec reviewed"]
    assert report["artifacts"] == [{"type": "document", "name": "document for task 41"}]
    assert report["attempt"] == 2
    assert report["result"]["simulated"] is True
    assert omoi.calls[0] == ("start", (41,), {"attempt": 2})
    assert omoi.calls[1] == ("phase", ("PHASE_X",), {"board": "demo"})


def test_a_task_it_had_started_before_is_not_started_again():
    omoi = RecordingOmoi(PHASE)

    outcome = simulated(omoi, failure_rate=0, discovery_rate=0)({**TASK, "status": "running", "attempt": 1})

    assert outcome == COMPLETED
    assert omoi.names() == ["phase", "complete"]


def test_it_fails_on_purpose_retryably():
    omoi = RecordingOmoi(PHASE)

    outcome = simulated(omoi, failure_rate=1)(TASK)

    assert outcome == FAILED
    assert omoi.names() == ["start", "phase", "fail"]
    _, (task_id, error), options = omoi.calls[-1]
    assert error.startswith("Simulated failure: ")
    assert options == {"retryable": True, "attempt": None}


def test_it_records_or_branches_discoveries():
    kinds = set()
    for seed in range(10):
        omoi = RecordingOmoi(PHASE)
        simulated(omoi, rng=random.Random(seed), failure_rate=0, discovery_rate=1)(TASK)
        [(kind, (source,), found)] = [call for call in omoi.calls if call[0] in ("record", "branch")]
        kinds.add(kind)
        assert source == 41
        assert found["discovery_type"] in {choice.value for choice in Discovery.Type}
        assert "task #41" in found["description"]  # by id: titles of branched tasks would nest
        assert found["metadata"] == {"simulated": True, "found_in_task": 41}

    assert kinds == {"record", "branch"}


def test_a_superseded_attempt_is_logged_not_raised():
    lines = []
    omoi = RecordingOmoi(PHASE, refuse={"complete": ApiError(409, "Attempt 1 of task 41 is over.")})

    outcome = SimulatedAgent(omoi, think=(0, 0), failure_rate=0, discovery_rate=0, log=lines.append)(TASK)

    assert outcome == SUPERSEDED
    assert lines == ["Task 41: the completion was not recorded, this attempt is over: Attempt 1 of task 41 is over."]


def test_a_stop_cuts_the_thinking_short():
    stop = Stop()
    stop.request()
    omoi = RecordingOmoi(PHASE)
    agent = SimulatedAgent(omoi, think=(60, 60), stop=stop, failure_rate=0, discovery_rate=0, log=lambda line: None)

    started = time.monotonic()
    assert agent(TASK) == COMPLETED
    assert time.monotonic() - started < 1


def test_its_speed_divides_the_think_time():
    omoi = RecordingOmoi(PHASE)
    agent = SimulatedAgent(omoi, think=(2, 2), speed=20, failure_rate=0, discovery_rate=0, log=lambda line: None)

    started = time.monotonic()
    agent(TASK)
    assert 0.09 <= time.monotonic() - started < 0.5

    with pytest.raises(ValueError, match="speed"):
        SimulatedAgent(omoi, speed=0)


# For real, against Daphne


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_setup, django_db_blocker):
    with running_server(tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running


@pytest.fixture
def tasks(board, alice):
    """One ticket with one task in each of four phases of the default workflow."""
    made = []
    for phase in ("PHASE_REQUIREMENTS", "PHASE_DESIGN", "PHASE_IMPLEMENTATION", "PHASE_TESTING"):
        ticket = ticket_create(board=board, title=f"Single sign-on ({phase})", actor=alice, phase=phase)
        made.append(task_create(ticket=ticket, title=f"Do the {phase.lower()} work", actor=alice))
    return made


def run_agent_command(server, token, *options):
    out = io.StringIO()
    call_command(
        "run_agent",
        "--url",
        server.url,
        "--token",
        token,
        "--board",
        "alices-board",
        "--poll",
        "0.1",
        "--speed",
        "1000",
        *options,
        stdout=out,
    )
    return out.getvalue()


def satisfies(output, artifacts, ticket_id):
    """Whether the artifacts meet one expected output as the phase gate reads it: type, pattern, count, passing."""
    pattern = glob_regex(str(output.get("pattern") or "").replace("<ticket-id>", str(ticket_id)))
    matching = [
        artifact
        for artifact in artifacts
        if artifact["type"] == output["type"] and (not output.get("pattern") or pattern.match(artifact["path"]))
    ]
    passing = max((artifact.get("passed", 0) for artifact in matching), default=0)
    return len(matching) >= (output.get("min_count") or 1) and passing >= (output.get("min_passing") or 0)


@pytest.mark.django_db(transaction=True)
def test_run_agent_simulate_completes_tasks_as_their_phases_ask(server, builder, tasks):
    agent, token = builder
    log = run_agent_command(
        server, token, "--simulate", "--max-tasks", "3", "--seed", "7", "--failure-rate", "0", "--discovery-rate", "0"
    )

    done = list(Task.objects.filter(status=Task.Status.COMPLETED).select_related("phase"))
    assert len(done) == 3, log
    assert Task.objects.filter(status=Task.Status.PENDING).count() == 1  # --max-tasks 3 stopped it there
    for task in done:
        phase = task.phase
        assert task.assigned_agent == agent
        assert task.completed_criteria == phase.done_definitions
        assert phase.missing_done_criteria(task.completed_criteria) == []
        assert task.result["simulated"] is True
        for output in phase.required_outputs():
            assert satisfies(output, task.artifacts, task.ticket_id), (output, task.artifacts)
    assert "Agent builder on" in log
    assert "Stopped after 3 task(s)." in log
    agent.refresh_from_db()
    assert agent.status == Agent.Status.OFFLINE
    assert agent.last_heartbeat is not None


@pytest.mark.django_db(transaction=True)
def test_run_agent_simulate_records_discoveries_branches_and_fails(server, builder, board, alice):
    agent, token = builder
    ticket = ticket_create(board=board, title="Nightly backups", actor=alice, phase="PHASE_IMPLEMENTATION")
    for number in range(8):
        task_create(ticket=ticket, title=f"Back up table {number}", actor=alice)

    log = run_agent_command(
        server, token, "--simulate", "--max-tasks", "8", "--seed", "2", "--failure-rate", "0.3", "--discovery-rate", "1"
    )

    discoveries = list(Discovery.objects.all())
    assert {discovery.discovered_by for discovery in discoveries} == {"agent:builder"}, log
    branched = [discovery for discovery in discoveries if discovery.spawned_tasks.exists()]
    assert branched and len(branched) < len(discoveries)  # some branched the work, some only recorded
    failed = Task.objects.filter(error__startswith="Simulated failure: ")
    assert failed.exists()
    assert all(task.status == Task.Status.PENDING and task.retry_count == 1 for task in failed)


@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_a_waiting_agent_at_once(server, builder):
    agent, token = builder
    command = [sys.executable, "manage.py", "run_agent", "--simulate", "--url", server.url, "--poll", "0.2"]
    process = subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env={**os.environ, "OMOI_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first_line = process.stdout.readline()  # the agent has introduced itself: it is polling now
        assert "Agent builder on" in first_line
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        process.kill()

    assert process.returncode == 0, output
    assert "SIGTERM: stopping after the current task" in output
    assert "Stopped after 0 task(s)." in output
    agent.refresh_from_db()
    assert agent.status == Agent.Status.OFFLINE


@pytest.mark.django_db(transaction=True)
def test_with_new_work_an_idle_agent_keeps_that_many_tickets_in_phases_with_work(server, builder, board, alice):
    agent, token = builder
    ticket_create(board=board, title="Already in progress", actor=alice, phase="PHASE_DESIGN")
    ticket_create(board=board, title="Waiting in the backlog", actor=alice)
    command = [sys.executable, "manage.py", "run_agent", "--simulate", "--url", server.url, "--poll", "0.1"]
    process = subprocess.Popen(
        [*command, "--board", board.slug, "--new-work", "3"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "OMOI_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and board.tickets.count() < 4:
            time.sleep(0.1)
        time.sleep(1)  # long enough for several more idle rounds: none may file more
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        process.kill()

    assert process.returncode == 0, output
    filed = board.tickets.exclude(title__in=["Already in progress", "Waiting in the backlog"])
    assert [(t.phase.key, t.created_by) for t in filed] == [("PHASE_REQUIREMENTS", None)] * 2
    assert output.count("Filed new work") == 2


@pytest.mark.django_db(transaction=True)
def test_new_work_needs_a_board(server, builder):
    with pytest.raises(CommandError, match="--new-work files tickets on one board"):
        call_command("run_agent", "--simulate", "--url", server.url, "--token", builder[1], "--new-work", "2")
