"""The living demo of `make run`: its agents, and the launcher that runs server, orchestrator and agents together."""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from board.demo import QUICKSTART_CAPABILITIES, demo_agent_tokens, workflow_capabilities
from board.models import Agent, Board, Event, Task
from board.services import agent_authenticate, agent_revoke
from tests.browser import _server_database_env


@pytest.fixture
def demo_board(db, monkeypatch):
    monkeypatch.setenv("OMOI_ADMIN_PASSWORD", "correct horse battery")
    call_command("bootstrap", stdout=io.StringIO())
    return Board.objects.get(slug="demo")


def test_demo_agents_get_every_capability_the_workflow_asks_for(demo_board):
    (name, token), (other, _) = demo_agent_tokens(2)
    assert (name, other) == ("demo-agent-1", "demo-agent-2")
    agent = agent_authenticate(token)
    assert agent.name == "demo-agent-1"
    assert list(agent.boards.all()) == [demo_board]
    assert agent.capabilities == workflow_capabilities(demo_board.workflow)
    # Every task but the one kept for the README's quick-start agent (tests/test_readme_quickstart.py).
    tasks = Task.objects.filter(ticket__board=demo_board).exclude(required_capabilities=QUICKSTART_CAPABILITIES)
    required = {c for t in tasks for c in t.required_capabilities}
    assert required <= set(agent.capabilities)


def test_each_start_gives_new_tokens_to_the_same_agents(demo_board):
    [(_, first)] = demo_agent_tokens(1)
    [(_, second)] = demo_agent_tokens(1)
    assert first != second
    assert agent_authenticate(first) is None
    assert agent_authenticate(second).name == "demo-agent-1"
    assert Agent.objects.filter(name__startswith="demo-agent").count() == 1


def test_a_revoked_demo_agent_is_left_alone(demo_board, alice):
    [(_, token)] = demo_agent_tokens(1)
    agent_revoke(agent=agent_authenticate(token), actor=alice)
    names = [name for name, _ in demo_agent_tokens(2)]
    assert names == ["demo-agent-2"]
    assert Agent.objects.get(name="demo-agent-1").is_revoked


def test_no_demo_board_means_no_agents(db):
    assert demo_agent_tokens(2) == []
    assert not Agent.objects.exists()


# The launcher, as `make run` starts it


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def children_of(pid):
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def launch(tmp_path, agents):
    env = {
        **os.environ,
        **_server_database_env(),
        "DJANGO_SETTINGS_MODULE": "omoi_site.settings",
        "OMOI_DEMO_AGENTS": str(agents),
        "OMOI_DEMO_SPEED": "20",
        "OMOI_ORCHESTRATOR_INTERVAL_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with open(tmp_path / "launcher.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "omoi_site.launcher", "--port", str(free_port())],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, tmp_path / "launcher.log"


def wait_for(condition, timeout, process, log):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"Timed out; the launcher said:\n{log.read_text()[-3000:]}")


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    return process.wait(timeout=40)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_demo_comes_alive_and_ctrl_c_stops_all_of_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OMOI_ADMIN_PASSWORD", "correct horse battery")
    call_command("bootstrap", stdout=io.StringIO())
    process, log = launch(tmp_path, agents=1)
    try:

        def lively():
            kinds = set(Event.objects.values_list("type", flat=True))
            gate_moves = Event.objects.filter(type="ticket.transitioned", actor="orchestrator").exists()
            return {"task.assigned", "task.completed"} <= kinds and gate_moves

        wait_for(lively, 60, process, log)
        parts = children_of(process.pid)
        assert len(parts) == 3  # web server, orchestrator, one agent
    finally:
        status = stop(process)
    assert status == 0, log.read_text()[-3000:]
    assert not [pid for pid in parts if alive(pid)]
    assert "Stopped after" in log.read_text()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_without_demo_agents_and_a_part_that_dies_stops_the_rest(tmp_path, monkeypatch):
    monkeypatch.setenv("OMOI_ADMIN_PASSWORD", "correct horse battery")
    call_command("bootstrap", stdout=io.StringIO())
    process, log = launch(tmp_path, agents=0)
    try:
        wait_for(lambda: len(children_of(process.pid)) == 2, 30, process, log)
        time.sleep(1)
        parts = children_of(process.pid)
        assert len(parts) == 2  # no agent was started
        server = min(parts)  # started first
        os.kill(server, signal.SIGKILL)
        status = process.wait(timeout=40)
    finally:
        stop(process)
    assert status != 0
    assert "stopping the rest" in log.read_text()
    assert not [pid for pid in parts if alive(pid)]
    assert not Agent.objects.exists()
