"""The README's agent quick-start, run as written: its shell blocks, in order, against a live server.

The commands are read from README.md, so the test fails as soon as the README
and the server disagree. The only change made to them is the server's address:
the test's Daphne listens on a free port instead of 8000. The demo board they
work on is the one `make run` creates (`manage.py bootstrap`).
"""

import io
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from board.demo import QUICKSTART_CAPABILITIES, QUICKSTART_PHASE, QUICKSTART_TASK, demo_agent_tokens
from board.models import Agent, Board, Task
from board.services import agent_authenticate, task_claim
from discoveries.models import Discovery

from .browser import _server_database_env, running_server

README = Path(settings.BASE_DIR) / "README.md"
SECTION = "## Agent API quick-start"
README_URL = "http://127.0.0.1:8000"


def quickstart_blocks():
    """The ```sh blocks of the quick-start section, in order."""
    text = README.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else None]
    return re.findall(r"^```sh\n(.*?)^```", section, flags=re.S | re.M)


def documented_branch():
    """What the README says the branch answers: the line `# 201 {...}` after the branch command."""
    script = "\n".join(quickstart_blocks())
    answer = re.search(r"discoveries/branch.*?\n# 201 (.*)", script, flags=re.S)
    assert answer, "The quick-start shows no answer (`# 201 …`) after its branch command."
    task = re.search(r'"task": \{.*?"phase": "(\w+)", "priority": "(\w+)"', answer.group(1))
    assert task, f"The branch's documented answer names no task phase and priority: {answer.group(1)}"
    return {"phase": task.group(1), "priority": task.group(2)}


def quickstart_env():
    """The environment of a fresh shell at the top of the checkout, with the server's database for manage.py."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OMOI_")}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return {**env, **_server_database_env(), "DJANGO_SETTINGS_MODULE": "omoi_site.settings"}


@pytest.fixture
def demo_board(db, monkeypatch):
    monkeypatch.setenv("OMOI_ADMIN_PASSWORD", "correct horse battery staple")
    call_command("bootstrap", stdout=io.StringIO())
    return Board.objects.get(slug="demo")


def quickstart_tasks(board):
    return Task.objects.filter(
        ticket__board=board, phase__key=QUICKSTART_PHASE, required_capabilities=QUICKSTART_CAPABILITIES
    )


# The quick-start, as written


def test_the_quick_start_shows_every_step_with_commands_a_fresh_machine_has():
    script = "\n".join(quickstart_blocks())
    for step in (
        "manage.py create_agent builder-1",
        "/api/v1/tasks/next",
        "/start",
        "/api/v1/agents/me/heartbeat",
        "/api/v1/discoveries/record",
        "/api/v1/discoveries/branch",
        "/complete",
    ):
        assert step in script, step
    # Not on a fresh Debian: uuidgen (util-linux's extra), jq, and `python` without the 3.
    for missing in ("uuidgen", "jq ", re.compile(r"(?:^|[\s;&|(])python\s", re.M)):
        found = missing.search(script) if isinstance(missing, re.Pattern) else missing in script
        assert not found, f"The quick-start uses {missing!r}, which a fresh Debian does not have."
    # No placeholder to fill in by hand: every value comes from an earlier command.
    commands = "\n".join(re.sub(r"(^|\s)#\s.*$", "", line) for line in script.splitlines())
    assert "…" not in commands
    assert script.count(README_URL) == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_quick_start_pasted_in_order_claims_works_and_branches_the_demo_task(demo_board, tmp_path):
    waiting = quickstart_tasks(demo_board).get(status=Task.Status.PENDING)
    branch = documented_branch()
    script = "\n".join(quickstart_blocks())

    with running_server(tmp_path / "daphne.log") as server:
        # -e: every command must succeed; the trap names the one that did not.
        shell = (
            "set -euo pipefail\n"
            "trap 'echo \"README command failed with $?: $BASH_COMMAND\" >&2' ERR\n"
            + script.replace(README_URL, server.url)
        )
        run = subprocess.run(
            ["bash", "-c", shell],
            cwd=settings.BASE_DIR,
            env=quickstart_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        log = server.log_tail()
    assert run.returncode == 0, f"{run.stderr}\n--- output ---\n{run.stdout}\n--- server ---\n{log}"

    agent = Agent.objects.get(name="builder-1")
    assert (agent.phase.key, agent.capabilities) == (QUICKSTART_PHASE, QUICKSTART_CAPABILITIES)
    assert list(agent.boards.all()) == [demo_board]
    assert agent.last_heartbeat is not None, "the heartbeat was not accepted"
    token = re.search(r"^(omoi_\S+)$", run.stdout, flags=re.M)
    assert token and agent_authenticate(token.group(1)) == agent

    waiting.refresh_from_db()
    assert waiting.title == QUICKSTART_TASK
    assert (waiting.status, waiting.assigned_agent, waiting.attempt) == (Task.Status.COMPLETED, agent, 1)
    assert waiting.started_at is not None
    assert waiting.result == {"summary": "Search endpoint added"}
    assert waiting.completed_criteria == ["The full test suite passes locally with no failing or skipped new tests"]
    claimed = json.loads(re.search(r"^\{.*\}$", run.stdout, flags=re.M).group(0))
    assert (claimed["id"], claimed["status"]) == (waiting.pk, "assigned")

    recorded = Discovery.objects.get(source_task=waiting, discovery_type="optimization")
    assert recorded.spawned_tasks.count() == 0
    assert recorded.discovered_by_agent == agent
    branched = Discovery.objects.get(source_task=waiting, discovery_type="security_issue")
    assert branched.priority_boost and branched.metadata == {"file": "board/views/search.py", "line": 42}
    (spawned,) = branched.spawned_tasks.all()
    assert (spawned.phase.key, spawned.priority) == (branch["phase"], branch["priority"])
    assert spawned.status == Task.Status.PENDING


# The task the quick-start claims


@pytest.mark.django_db
def test_the_demo_board_keeps_one_ready_task_for_the_quick_start_agent(demo_board, monkeypatch):
    (task,) = quickstart_tasks(demo_board)
    assert (task.status, task.title, task.ticket.phase.key) == (Task.Status.PENDING, QUICKSTART_TASK, QUICKSTART_PHASE)

    out = io.StringIO()
    call_command("bootstrap", stdout=out)
    assert quickstart_tasks(demo_board).count() == 1, "a second run must not add another while one waits"
    assert f"Task {task.pk} of ticket {task.ticket_id} waits for an agent in {QUICKSTART_PHASE}" in out.getvalue()

    # Once someone took it, the next `make run` leaves a new one for the next person.
    Task.objects.filter(pk=task.pk).update(status=Task.Status.COMPLETED)
    call_command("bootstrap", stdout=io.StringIO())
    fresh = quickstart_tasks(demo_board).get(status=Task.Status.PENDING)
    assert fresh.ticket_id == task.ticket_id


@pytest.mark.django_db
def test_the_simulated_demo_agents_leave_the_quick_start_task_alone(demo_board):
    for name, token in demo_agent_tokens(2):
        agent = agent_authenticate(token)
        while (claimed := task_claim(agent=agent, board=demo_board)) is not None:
            assert claimed.required_capabilities != QUICKSTART_CAPABILITIES, name
            Task.objects.filter(pk=claimed.pk).update(status=Task.Status.COMPLETED)
    assert quickstart_tasks(demo_board).get().status == Task.Status.PENDING
