"""The command-line agent runner: misbehaving agents (tests/agent_scripts/) run for real tasks on a live Daphne.

Each test claims a real task with a real agent token, runs one script for it
as `run_agent --command` would, and looks at what the database says happened.
Reading results (Claude Code's shape, result files) is tested without a server.
"""

import io
import json
import re
import resource
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from board.models import Agent, Task
from board.runner.client import ApiError, Omoi
from board.runner.command import PRESETS, RESULT_HOWTO, CommandAgent, read_result, write_mcp_config
from board.runner.loop import ABANDONED, COMPLETED, FAILED, HANDLED_BY_CHILD, SUPERSEDED, report_completion
from board.runner.process import process_running
from board.services import task_create, task_fail, ticket_create

from .browser import running_server

SCRIPTS = Path(__file__).resolve().parent / "agent_scripts"
GRACE = 0.3


def script(name, *args):
    """The shell command running one of the agent scripts with this Python."""
    return " ".join([sys.executable, str(SCRIPTS / name), *args])


# Reading results


def test_the_last_json_object_printed_is_the_result():
    stdout = 'Starting\n{"summary": "first"}\nthinking...\n{"summary": "Done.", "artifacts": ["a.py"]}\nbye\n'

    result = read_result(stdout)

    assert result.summary == "Done."
    assert result.artifacts == ["a.py"]
    assert result.as_result() == {"summary": "Done."}


def test_a_result_printed_over_several_lines_is_read_whole():
    printed = json.dumps({"summary": "Pretty.", "completed_criteria": ["A", "B"]}, indent=2)

    result = read_result(f"Some output\n{printed}\n")

    assert (result.summary, result.completed_criteria) == ("Pretty.", ["A", "B"])


def test_claude_codes_result_text_is_the_summary_and_its_run_is_kept():
    printed = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "I wrote the design document.",
        "session_id": "abc",
        "total_cost_usd": 0.12,
        "usage": {"input_tokens": 1000},
    }

    result = read_result(json.dumps(printed))

    assert result.summary == "I wrote the design document."
    assert not result.is_error
    assert result.as_result() == {
        "summary": "I wrote the design document.",
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "session_id": "abc",
        "total_cost_usd": 0.12,
    }


def test_a_result_line_at_the_end_of_claude_codes_text_is_the_result():
    line = json.dumps(
        {"summary": "Designed it.", "artifacts": [{"path": "docs/design/3.md"}], "completed_criteria": ["X"]}
    )
    printed = {
        "type": "result",
        "is_error": False,
        "result": f"All done.\n\n{line}",
        "session_id": "abc",
        "num_turns": 9,
    }

    result = read_result(json.dumps(printed))

    assert result.summary == "Designed it."
    assert result.artifacts == [{"path": "docs/design/3.md"}]
    assert result.completed_criteria == ["X"]
    assert result.extra == {"agent_run": {"session_id": "abc", "num_turns": 9}}


def test_an_error_result_is_flagged():
    result = read_result(json.dumps({"type": "result", "is_error": True, "result": "Credit balance is too low"}))

    assert result.is_error
    assert result.summary == "Credit balance is too low"


def test_the_result_file_wins_and_plain_text_in_it_is_the_summary():
    assert read_result('{"summary": "printed"}', '{"summary": "filed"}').summary == "filed"
    assert read_result('{"summary": "printed"}', "Refactored the parser.\n").summary == "Refactored the parser."
    assert read_result('{"summary": "printed"}', "  \n").summary == "printed"  # an empty file is no result


def test_no_json_object_is_no_result():
    assert read_result("All done, I think.\n[1, 2]\n") is None
    assert read_result("") is None


def test_what_the_api_would_refuse_is_cut_to_its_bounds():
    printed = {
        "summary": "x" * 30_000,
        "artifacts": list(range(150)),
        "completed_criteria": ["A", 7, None, "B"],
        "notes": "y" * 40_000,
    }

    result = read_result(json.dumps(printed))

    assert len(result.summary) == 20_000
    assert len(result.artifacts) == 100
    assert result.completed_criteria == ["A", "B"]
    assert result.extra == {"omitted": ["notes"]}


def test_each_preset_reads_its_prompt_from_standard_input():
    assert PRESETS["claude"] == "claude -p --output-format json"
    assert PRESETS["codex"].startswith("codex exec") and PRESETS["codex"].endswith(" -")
    assert PRESETS["opencode"].startswith("opencode run ")


# Options


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--simulate"], "Give the server and the agent's token: --url and --token, or OMOI_URL and OMOI_TOKEN."),
        (["--url", "http://127.0.0.1:1", "--token", "omoi_x"], "Say what does the work: --simulate, --command"),
        (
            ["--url", "http://127.0.0.1:1", "--token", "omoi_x", "--preset", "claude", "--workdir", "/no/such/dir"],
            "--workdir /no/such/dir is not a folder.",
        ),
    ],
)
def test_run_agent_says_what_is_missing(monkeypatch, arguments, message):
    monkeypatch.delenv("OMOI_URL", raising=False)
    monkeypatch.delenv("OMOI_TOKEN", raising=False)

    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("run_agent", *arguments)


def test_run_agent_refuses_two_kinds_of_work_at_once():
    with pytest.raises(CommandError, match="not allowed with argument"):
        call_command("run_agent", "--simulate", "--preset", "codex")


# For real, against Daphne


@pytest.fixture(scope="module")
def server(tmp_path_factory, django_db_setup, django_db_blocker):
    with running_server(tmp_path_factory.mktemp("server") / "server.log") as running:
        yield running


# The tests that talk to the server need its data committed: the server is another process.
live = pytest.mark.django_db(transaction=True)


@pytest.fixture
def omoi(server, builder):
    return Omoi(server.url, builder[1])


@pytest.fixture
def claimed(omoi, board, alice):
    """A task of the Implementation phase, created and claimed by Builder: the API's JSON for it."""

    def claim(title="Send the reset e-mail", **options):
        ticket = ticket_create(board=board, title="Password reset", actor=alice, phase="PHASE_IMPLEMENTATION")
        task = task_create(ticket=ticket, title=title, actor=alice, description="Use the queue, not SMTP.", **options)
        found = omoi.claim("alices-board")
        assert found["id"] == task.pk
        return found

    return claim


@pytest.fixture
def logs():
    return []


@pytest.fixture
def runner(omoi, builder, logs):
    def make(command, **options):
        options = {"agent_name": "builder", "kill_grace": GRACE, "log": logs.append, **options}
        return CommandAgent(omoi, command, token=builder[1], **options)

    return make


@live
def test_a_successful_agent_completes_the_task_with_its_result(runner, claimed, server, builder):
    task = claimed()

    outcome = runner(script("succeed.py"))(task)

    assert outcome == COMPLETED
    done = Task.objects.get(pk=task["id"])
    assert done.status == Task.Status.COMPLETED
    assert done.result["summary"] == f"Did task {task['id']}."
    assert done.artifacts == [{"type": "file", "path": f"src/{task['ticket_id']}.py"}]
    assert done.completed_criteria == ["It works"]
    assert done.started_at is not None  # the runner started it before running the agent
    prompt = done.result["prompt"]
    assert prompt.startswith("# Phase: Implementation (PHASE_IMPLEMENTATION)")
    assert "## Completion criteria" in prompt
    assert f"- Task {task['id']}: Send the reset e-mail" in prompt
    assert "Use the queue, not SMTP." in prompt
    assert RESULT_HOWTO in prompt
    environment = done.result["environment"]
    assert environment["OMOI_URL"] == server.url
    assert environment["OMOI_TOKEN"] == builder[1]
    assert environment["OMOI_TASK_ID"] == str(task["id"])
    assert environment["OMOI_TICKET_ID"] == str(task["ticket_id"])
    assert environment["OMOI_PHASE"] == "PHASE_IMPLEMENTATION"
    assert environment["OMOI_BOARD"] == "alices-board"
    assert environment["OMOI_ATTEMPT"] == ("" if task.get("attempt") is None else str(task["attempt"]))
    assert environment["OMOI_RESULT_FILE"].endswith("result.json")
    assert "OMOI_PROMPT_FILE" not in environment


@live
def test_the_child_gets_the_mcp_server_and_can_report_through_it(runner, claimed, server, builder):
    task = claimed()

    outcome = runner(script("succeed.py"))(task)

    environment = Task.objects.get(pk=task["id"]).result["environment"]
    assert outcome == COMPLETED
    assert environment["OMOI_MCP_URL"] == f"{server.url}/mcp"
    config_path = Path(environment["OMOI_MCP_CONFIG"])
    assert config_path.name == "mcp.json" and not config_path.exists()  # it held the token: gone with the task

    task = claimed()
    assert runner(script("mcp_complete.py"))(task) == HANDLED_BY_CHILD
    done = Task.objects.get(pk=task["id"])
    assert done.status == Task.Status.COMPLETED
    assert done.result == {"summary": "Reported over MCP by builder."}


def test_the_mcp_configuration_names_the_endpoint_and_the_token_and_only_its_owner_reads_it(tmp_path):
    path = write_mcp_config(tmp_path / "mcp.json", url="http://omoi.example:8000/", token="omoi_secret")
    assert json.loads(path.read_text()) == {
        "mcpServers": {
            "omoi": {
                "type": "http",
                "url": "http://omoi.example:8000/mcp",
                "headers": {"Authorization": "Bearer omoi_secret"},
            }
        }
    }
    assert path.stat().st_mode & 0o777 == 0o600


@live
def test_with_a_prompt_file_the_prompt_is_in_the_file_and_standard_input_is_empty(runner, claimed):
    task = claimed()

    outcome = runner(script("succeed.py", "{prompt_file}"))(task)

    assert outcome == COMPLETED
    result = Task.objects.get(pk=task["id"]).result
    assert result["stdin_after_file"] == ""
    assert result["prompt"].startswith("# Phase: Implementation")
    prompt_file = Path(result["environment"]["OMOI_PROMPT_FILE"])
    assert prompt_file.name == "prompt.md"
    assert not prompt_file.exists()  # the runner cleans up after each task


@live
def test_an_agent_that_exits_non_zero_fails_the_task_with_its_output(runner, claimed):
    task = claimed()

    outcome = runner(script("fail.py"))(task)

    assert outcome == FAILED
    failed = Task.objects.get(pk=task["id"])
    assert failed.status == Task.Status.PENDING  # retryable: back in the queue
    assert failed.retry_count == 1
    assert failed.error.startswith("The command exited with status 3.\n--- last output ---\n")
    assert "Looked at the task." in failed.error
    assert "error: the repository could not be cloned" in failed.error


@live
def test_a_hanging_agent_is_killed_at_its_time_out_and_heartbeats_meanwhile(runner, claimed, builder):
    agent = builder[0]
    task = claimed()
    claimed_beat = Agent.objects.get(pk=agent.pk).last_heartbeat
    work = runner(script("hang.py"), timeout=1.0)
    work.heartbeat.every = 0.2

    started = time.monotonic()
    outcome = work(task)
    took = time.monotonic() - started

    assert outcome == FAILED
    assert took < 1.0 + GRACE + 2  # SIGTERM is ignored by the script: SIGKILL after the grace ended it
    failed = Task.objects.get(pk=task["id"])
    assert failed.error.startswith("The command ran past its time-out of 1.0 s and was stopped.")
    assert "started" in failed.error
    assert Agent.objects.get(pk=agent.pk).last_heartbeat > claimed_beat


@live
def test_the_tasks_own_time_out_is_the_default(runner, claimed):
    task = claimed(timeout_seconds=1)

    assert runner(script("hang.py"))(task) == FAILED
    assert "time-out of 1 s" in Task.objects.get(pk=task["id"]).error


@live
@pytest.mark.parametrize(
    ("arguments", "expected"),
    [((), "The command printed nothing for 0.5 s and was stopped."), (("--chatty",), "time-out of 1.5 s")],
)
def test_a_silent_agent_is_stopped_by_the_idle_watchdog_a_busy_one_is_not(runner, claimed, arguments, expected):
    task = claimed()

    outcome = runner(script("hang.py", *arguments), timeout=1.5, idle_timeout=0.5)(task)

    assert outcome == FAILED
    assert expected in Task.objects.get(pk=task["id"]).error


@live
def test_a_flood_of_output_costs_no_memory_and_its_tail_is_reported(runner, claimed):
    task = claimed()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux

    outcome = runner(script("flood.py", "64"))(task)  # 64 MiB on each of stdout and stderr

    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 32
    assert outcome == FAILED
    error = Task.objects.get(pk=task["id"]).error
    assert error.startswith("The command exited 0 without a result")
    assert error.endswith("\nTHE END OF THE FLOOD")
    assert len(error) < 2_200


@live
def test_a_grandchild_left_running_is_killed_with_the_agents_group(runner, claimed, tmp_path):
    task = claimed()
    pid_file = tmp_path / "grandchild.pid"

    started = time.monotonic()
    outcome = runner(script("grandchild.py", str(pid_file)), kill_grace=5)(task)

    assert outcome == COMPLETED
    grandchild = int(pid_file.read_text())
    assert not process_running(grandchild)
    assert time.monotonic() - started < 3  # it went at SIGTERM; nobody waited for its two minutes
    assert Task.objects.get(pk=task["id"]).result == {"summary": "Done, and a helper is still running."}


@live
def test_a_result_written_to_the_result_file_is_reported(runner, claimed):
    task = claimed()

    assert runner(script("result_file.py"))(task) == COMPLETED

    done = Task.objects.get(pk=task["id"])
    assert done.result == {"summary": "Written to the result file.", "pages": 3}
    assert done.completed_criteria == ["Filed"]


@live
def test_an_agent_that_completed_the_task_itself_is_not_reported_again(runner, claimed, logs):
    task = claimed()

    outcome = runner(script("self_complete.py"))(task)

    assert outcome == HANDLED_BY_CHILD
    done = Task.objects.get(pk=task["id"])
    assert done.status == Task.Status.COMPLETED
    assert done.result == {"summary": "Completed by the agent itself."}
    assert done.completed_criteria == ["Self-reported"]
    assert f"Task {task['id']} is completed already: it was reported during the run." in logs


@live
def test_a_second_stop_abandons_the_task_and_kills_the_agent(runner, claimed):
    task = claimed()
    work = runner(script("hang.py"), timeout=60)

    def stop_twice():
        time.sleep(0.3)
        work.stop.request()
        work.stop.request()

    threading.Thread(target=stop_twice).start()
    started = time.monotonic()
    outcome = work(task)

    assert outcome == ABANDONED
    assert time.monotonic() - started < 3
    failed = Task.objects.get(pk=task["id"])
    assert failed.status == Task.Status.PENDING
    assert failed.error == "The agent runner was stopped before the command finished."


@live
def test_a_report_for_a_superseded_attempt_is_logged_not_raised(omoi, claimed, builder, logs):
    task = claimed()
    # The attempt ends (as when the orchestrator times it out) and the task is claimed again at once.
    task_fail(task=Task.objects.get(pk=task["id"]), agent=builder[0], error="Timed out.")
    Task.objects.filter(pk=task["id"]).update(next_attempt_at=None)
    again = omoi.claim("alices-board")
    assert (again["id"], again["attempt"]) == (task["id"], task["attempt"] + 1)

    outcome = report_completion(
        omoi, task, result={"summary": "Late."}, artifacts=[], completed_criteria=[], log=logs.append
    )

    assert outcome == SUPERSEDED
    [line] = logs
    assert line.startswith(f"Task {task['id']}: the completion was not recorded, this attempt is over: ")
    assert f"attempt {task['attempt']} was superseded by attempt {again['attempt']}" in line
    late = Task.objects.get(pk=task["id"])
    assert (late.status, late.result) == (Task.Status.ASSIGNED, None)


@live
def test_run_agent_command_works_tasks_until_max_tasks(server, builder, claimed, board, alice):
    for number in range(2):
        ticket = ticket_create(board=board, title=f"Report {number}", actor=alice, phase="PHASE_TESTING")
        task_create(ticket=ticket, title=f"Test report {number}", actor=alice)
    out = io.StringIO()

    call_command(
        "run_agent",
        "--url",
        server.url,
        "--token",
        builder[1],
        "--command",
        script("succeed.py"),
        "--max-tasks",
        "2",
        "--poll",
        "0.1",
        stdout=out,
    )

    assert Task.objects.filter(status=Task.Status.COMPLETED).count() == 2, out.getvalue()
    assert "Stopped after 2 task(s)." in out.getvalue()


# The report, with the API replaced by a recorder


class FencedOmoi:
    """A server that numbers attempts: the task is on attempt 2 and still running; reports are recorded."""

    base_url = "http://fenced.invalid"

    def __init__(self, refuse_fail=False):
        self.refuse_fail = refuse_fail
        self.reports = []

    def start(self, task_id, attempt=None):
        self.reports.append(("start", {"attempt": attempt}))

    def heartbeat(self, status=None):
        pass

    def instructions(self, key, board=None):
        return "# Phase: Testing\n"

    def task(self, task_id):
        return {"id": task_id, "status": "running", "assigned_agent": "builder", "attempt": 2}

    def complete(self, task_id, **body):
        self.reports.append(("complete", body))

    def fail(self, task_id, error, **body):
        self.reports.append(("fail", body))
        if self.refuse_fail:
            raise ApiError(409, "Attempt 2 of this task is over.")


FENCED_TASK = {"id": 5, "ticket_id": 3, "board": "b", "phase": "PHASE_TESTING", "title": "T", "attempt": 2}


def test_the_claimed_attempt_goes_with_the_report():
    completed, failed = FencedOmoi(), FencedOmoi()
    options = {"token": "omoi_x", "agent_name": "builder", "log": lambda line: None}

    assert CommandAgent(completed, script("result_file.py"), **options)(FENCED_TASK) == COMPLETED
    assert CommandAgent(failed, script("fail.py"), **options)(FENCED_TASK) == FAILED

    assert [(kind, body["attempt"]) for kind, body in completed.reports + failed.reports] == [
        ("start", 2),
        ("complete", 2),
        ("start", 2),
        ("fail", 2),
    ]


def test_a_409_on_a_failure_is_logged_and_the_runner_moves_on():
    lines = []
    omoi = FencedOmoi(refuse_fail=True)

    outcome = CommandAgent(omoi, script("fail.py"), token="omoi_x", log=lines.append)(FENCED_TASK)

    assert outcome == SUPERSEDED
    assert "Task 5: the failure was not recorded, this attempt is over: Attempt 2 of this task is over." in lines


def test_a_task_on_a_newer_attempt_is_not_reported():
    omoi = FencedOmoi()

    outcome = CommandAgent(omoi, script("succeed.py"), token="omoi_x", log=lambda line: None)(
        {**FENCED_TASK, "attempt": 1}
    )

    assert outcome == SUPERSEDED
    assert [kind for kind, _ in omoi.reports] == ["start"]
