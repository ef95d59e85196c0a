"""The README's other command blocks, run as written: workflow files, and the agents you can run.

The agent quick-start has its own module (test_readme_quickstart.py). Here the
blocks are read from README.md by the heading they follow and run in a shell
whose working directory looks like the checkout (the virtualenv, manage.py and
examples/ linked into a temporary folder), so files they write land there. The
only changes made to them are the server's address and, for the minute-long
demo, its length. Blocks introduced as needing an agent CLI (Claude Code,
Codex) are not run: a fresh machine does not have them.
"""

import io
import os
import re
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from board.models import Agent, Board, Event, Task
from phases.models import Workflow

from .browser import _server_database_env, running_server

README = Path(settings.BASE_DIR) / "README.md"
README_URL = "http://127.0.0.1:8000"

pytestmark = pytest.mark.slow


def blocks_after(heading):
    """The ```sh blocks of a README section, in order, with the sentence that introduces each."""
    text = README.read_text()
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    section = text[start : end if end != -1 else None]
    return [(intro, body) for intro, body in re.findall(r"([^\n]*)\n\n```sh\n(.*?)^```", section, flags=re.S | re.M)]


def checkout_like(tmp_path):
    for name in (".venv", "manage.py", "examples"):
        (tmp_path / name).symlink_to(Path(settings.BASE_DIR) / name)
    return tmp_path


def run_shell(script, *, cwd, url=None, timeout=180):
    env = {name: value for name, value in os.environ.items() if not name.startswith("OMOI_")}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(_server_database_env(), DJANGO_SETTINGS_MODULE="omoi_site.settings")
    if url:
        script = script.replace(README_URL, url)
    shell = "set -euo pipefail\ntrap 'echo \"README command failed with $?: $BASH_COMMAND\" >&2' ERR\n" + script
    return subprocess.run(
        ["bash", "-c", shell],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def demo_board(db, monkeypatch):
    monkeypatch.setenv("OMOI_ADMIN_PASSWORD", "correct horse battery staple")
    call_command("bootstrap", stdout=io.StringIO())
    # `make run`'s orchestrator gives the demo tickets their phases' tasks; one pass does it here.
    call_command("orchestrate", "--once", stdout=io.StringIO())
    return Board.objects.get(slug="demo")


@pytest.mark.django_db(transaction=True)
def test_the_workflow_commands_pasted_in_order_export_check_create_and_rename_a_phase(workflow, tmp_path):
    [(_, script), _] = blocks_after("## Workflows")
    assert "…" not in script and "my_flow.yaml" in script

    run = run_shell(script, cwd=checkout_like(tmp_path))

    assert run.returncode == 0, f"{run.stderr}\n--- output ---\n{run.stdout}"
    flow = Workflow.objects.get(slug="my-flow")
    assert set(flow.phases.values_list("key", flat=True)) >= {"PHASE_QA", "PHASE_IMPLEMENTATION"}
    assert not flow.phases.filter(key="PHASE_TESTING").exists()
    assert "PHASE_QA" in (tmp_path / "my_flow.yaml").read_text()


@pytest.mark.django_db(transaction=True)
def test_the_hephaestus_folder_commands_check_load_and_export_the_example(tmp_path):
    [_, (_, script)] = blocks_after("## Workflows")
    assert "…" not in script and "examples/hephaestus/prd_to_software" in script

    run = run_shell(script, cwd=checkout_like(tmp_path))

    assert run.returncode == 0, f"{run.stderr}\n--- output ---\n{run.stdout}"
    assert "Workflow 'prd_to_software' would be created" in run.stdout
    assert "Workflow 'prd_to_software' was created" in run.stdout
    flow = Workflow.objects.get(slug="prd_to_software")
    assert flow.phases.count() == 6
    assert "slug: prd_to_software\n" in (tmp_path / "prd_to_software.yaml").read_text()


@pytest.mark.django_db(transaction=True)
def test_the_agents_you_can_run_work_pasted_in_order(demo_board, tmp_path):
    blocks = blocks_after("## Agents you can run")
    runnable = [script for intro, script in blocks if "not on a fresh machine" not in intro]
    skipped = [script for intro, script in blocks if "not on a fresh machine" in intro]
    assert len(runnable) == 2 and len(skipped) == 1, "the section's blocks changed: update this test"
    first, lively = runnable
    assert "…" not in first + lively
    # The minute-long demo is cut to a few seconds; everything else is as written.
    lively = lively.replace("timeout -s INT 60", "timeout -s INT 5")

    with running_server(tmp_path / "daphne.log") as server:
        run = run_shell(first + "\n" + lively, cwd=checkout_like(tmp_path), url=server.url)
        log = server.log_tail()

    assert run.returncode == 0, f"{run.stderr}\n--- output ---\n{run.stdout}\n--- server ---\n{log}"
    worker = Agent.objects.get(name="worker-1")
    # One task by the scripted agent, one by the shell agent, each reported through the API. The scripted
    # agent fails a task on purpose now and then (a retryable failure puts it back in the queue), so its
    # report may be a failure.
    reports = Event.objects.filter(actor=f"agent:{worker.name}", type__in=["task.completed", "task.failed"])
    assert reports.count() == 2
    finished = Task.objects.filter(assigned_agent=worker, status=Task.Status.COMPLETED)
    assert any("words); nothing was changed." in (task.result or {}).get("summary", "") for task in finished)
    assert set(Agent.objects.filter(name__in=["sim-a", "sim-b"]).values_list("name", flat=True)) == {"sim-a", "sim-b"}
    # The lively pair ran for a few seconds: long enough to be handed work.
    assert Event.objects.filter(type="task.assigned", actor__in=["agent:sim-a", "agent:sim-b"]).exists()
