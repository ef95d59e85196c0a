"""examples/agent_client.py, run for real over HTTP against a live server: the README's example must keep working."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from board.models import Task
from board.services import agent_create, agent_revoke, task_create, ticket_create
from discoveries.models import Discovery

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "agent_client.py"


def load_example():
    spec = importlib.util.spec_from_file_location("agent_client", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def agent(board, alice):
    return agent_create(name="example-agent", boards=[board], actor=alice)


@pytest.fixture
def task(board, alice):
    ticket = ticket_create(board=board, title="Password reset", actor=alice, phase="PHASE_IMPLEMENTATION")
    return task_create(ticket=ticket, title="Send the reset e-mail", actor=alice)


def run_example(live_server, token, **env):
    """The example as a user runs it: a separate Python, only OMOI_* in its environment."""
    return subprocess.run(
        [sys.executable, str(EXAMPLE)],
        env={"OMOI_URL": live_server.url, "OMOI_TOKEN": token, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_claims_branches_and_completes_a_task(live_server, agent, task):
    agent, token = agent
    done = run_example(live_server, token, OMOI_BOARD="alices-board", OMOI_BRANCH_PHASE="PHASE_REQUIREMENTS")

    assert done.returncode == 0, done.stderr
    assert f"Claimed task {task.pk}" in done.stdout
    task.refresh_from_db()
    assert task.status == Task.Status.COMPLETED
    assert task.assigned_agent == agent
    assert task.result == {"summary": "Done; see the discovery for what is still open."}
    discovery = Discovery.objects.get(source_task=task)
    assert discovery.discovery_type == "missing_requirement"
    assert discovery.discovered_by == "agent:example-agent"
    assert discovery.metadata == {"found_by": "examples/agent_client.py"}
    [spawned] = discovery.spawned_tasks.all()
    assert spawned.phase.key == "PHASE_REQUIREMENTS"
    assert spawned.parent == task
    assert spawned.status == Task.Status.PENDING
    assert f"branched task {spawned.pk}" in done.stdout


def test_the_example_says_when_there_is_no_work(live_server, agent):
    done = run_example(live_server, agent[1])

    assert done.returncode == 0, done.stderr
    assert "No task is ready for this agent." in done.stdout


def test_the_example_prints_the_apis_refusal(live_server, agent, alice):
    agent_revoke(agent=agent[0], actor=alice)
    done = run_example(live_server, agent[1])

    assert done.returncode == 1
    assert "The API refused: 401: Unauthorized" in done.stderr


def test_the_example_needs_its_settings():
    done = subprocess.run([sys.executable, str(EXAMPLE)], env={}, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "OMOI_URL" in done.stderr


def test_a_failure_during_the_work_hands_the_task_back(live_server, agent, task):
    example = load_example()
    omoi = example.Omoi(live_server.url, agent[1])

    with pytest.raises(example.ApiError) as refused:
        example.work_once(omoi, branch_phase="PHASE_NOPE", log=lambda line: None)

    assert refused.value.status == 422
    assert "PHASE_NOPE" in str(refused.value)
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING  # failed, and back in the queue for a retry
    assert task.retry_count == 1
    assert "PHASE_NOPE" in task.error


def test_a_retried_claim_gets_the_first_answer_again(live_server, agent, task, alice, monkeypatch):
    """The Idempotency-Key the example sends makes a retry after a lost answer safe."""
    example = load_example()
    task_create(ticket=task.ticket, title="A second task", actor=alice)
    answers = []

    def lose_the_first_answer(method, url, headers, body):
        answer = example.urllib_transport(method, url, headers, body)
        answers.append(answer)
        if len(answers) == 1:
            raise ConnectionResetError("the answer was lost")
        return answer

    omoi = example.Omoi(live_server.url, agent[1], transport=lose_the_first_answer)
    monkeypatch.setattr(example.time, "sleep", lambda seconds: None)
    claimed = omoi.claim()

    assert claimed["id"] == task.pk
    [(first_status, first), (replay_status, replay)] = answers
    assert first_status == replay_status == 200
    assert json.loads(replay) == json.loads(first)  # PostgreSQL's jsonb keeps the answer, not its key order
    assert Task.objects.filter(assigned_agent=agent[0]).count() == 1
