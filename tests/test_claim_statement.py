"""The claim's SQL statement and the queue's QuerySet rule pick the same task, on every database.

`Task.objects.ready(now).matching(agent)`, in `QUEUE_ORDER`, defines which
task an agent gets; the claim says that rule again in SQL
(`board.services.claim_sql`). Generated boards mix everything the rule
distinguishes: agents with and without a phase, with some capabilities, on
one board or both, revoked, busy or offline; tasks in several phases and
states, needing capabilities, waiting on dependencies or a back-off, with tied
scores. Every agent claims on each of its boards and on all of them, and the
orchestrator assigns to each, each in a transaction rolled back afterwards;
the task taken must be the one the QuerySet names.
"""

import random
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from board.models import Agent, Task
from board.services import agent_create, board_create, task_assign, task_claim, task_create, ticket_create
from board.services.tasks import QUEUE_HEAD, QUEUE_ORDER

pytestmark = pytest.mark.django_db

CAPABILITIES = ["python", "sql", "ui"]
PHASES = ["PHASE_DESIGN", "PHASE_IMPLEMENTATION", "PHASE_TESTING"]


def expected(agent, *, board=None, now):
    ready = Task.objects.ready(now).matching(agent)
    if board is not None:
        ready = ready.filter(ticket__board=board)
    return ready.order_by(*QUEUE_ORDER).first()


def rolled_back(claim, **arguments):
    """What `claim(**arguments)` returns, with everything it changed undone."""
    with transaction.atomic():
        taken = claim(**arguments)
        transaction.set_rollback(True)
    return taken


def some(rng, items):
    return rng.sample(items, rng.randint(0, len(items)))


@pytest.fixture
def boards(board, alice):
    other = board_create(name="Second board", workflow=board.workflow, creator=alice)
    return [board, other]


def generate(rng, boards, alice, now):
    """A mixed queue on both boards, and agents of every kind; returns the agents."""
    phases = {phase.key: phase for phase in boards[0].workflow.phases.all()}
    tickets = [
        ticket_create(board=board, title=f"Ticket {n}", actor=alice)
        for board in boards
        for n in range(rng.randint(2, 4))
    ]
    tasks = []
    for n in range(rng.randint(25, 45)):
        task = task_create(
            ticket=rng.choice(tickets),
            title=f"Task {n}",
            actor=alice,
            phase=rng.choice(PHASES),
            required_capabilities=some(rng, CAPABILITIES),
        )
        tasks.append(task)
    for task in tasks:
        back_off = rng.choice([None, None, -60, 600])
        # The stored score orders the queue: ties, broken by age, then by id.
        Task.objects.filter(pk=task.pk).update(
            score=rng.choice([2.0, 2.0, 3.0]),
            created_at=now - timedelta(minutes=rng.choice([30, 30, 90])),
            status=rng.choice(["pending"] * 6 + ["completed", "failed", "cancelled"]),
            next_attempt_at=None if back_off is None else now + timedelta(seconds=back_off),
        )
        if rng.random() < 0.25:
            task.dependencies.add(*rng.sample(tasks, rng.randint(1, 2)))
    agents = []
    for n in range(rng.randint(6, 10)):
        phase = rng.choice([None, None, *PHASES])
        agent, _ = agent_create(
            name=f"agent-{n}",
            boards=rng.choice([boards, boards[:1], boards[1:]]),
            actor=alice,
            phase=phases[phase] if phase else None,
            capabilities=some(rng, CAPABILITIES),
        )
        agents.append(agent)
    Agent.objects.filter(pk__in=[agent.pk for agent in agents]).update(status=Agent.Status.IDLE)
    kinds = rng.sample(agents, 3)
    Agent.objects.filter(pk=kinds[0].pk).update(revoked_at=now)
    Agent.objects.filter(pk=kinds[1].pk).update(status=Agent.Status.OFFLINE)
    held = Task.objects.filter(status="pending", ticket__board__in=kinds[2].boards.all()).order_by("pk").first()
    if held is not None:
        Task.objects.filter(pk=held.pk).update(status="running", assigned_agent=kinds[2])
        Agent.objects.filter(pk=kinds[2].pk).update(status=Agent.Status.BUSY)
    return list(Agent.objects.filter(pk__in=[agent.pk for agent in agents]).order_by("pk"))


@pytest.mark.parametrize("seed", range(8))
def test_the_claim_takes_the_task_the_queue_rule_names(seed, boards, alice):
    rng = random.Random(seed)
    now = timezone.now()
    agents = generate(rng, boards, alice, now)
    checked = 0
    for agent in agents:
        in_hand = Task.objects.in_hand().filter(assigned_agent=agent).first()
        its_boards = list(agent.boards.order_by("pk"))
        for board in [None, *its_boards]:
            taken = rolled_back(task_claim, agent=agent, board=board, now=now)
            if agent.revoked_at is not None:
                want = None
            elif in_hand is not None:
                want = in_hand if board is None or in_hand.ticket.board_id == board.pk else None
            else:
                want = expected(agent, board=board, now=now)
            assert taken == want, f"seed {seed}: {agent.name} on {board.slug if board else 'all boards'}"
            checked += want is not None
        assigned = rolled_back(task_assign, agent=agent, now=now)
        fit = agent.revoked_at is None and agent.status == Agent.Status.IDLE and in_hand is None
        assert assigned == (expected(agent, now=now) if fit else None), f"seed {seed}: assign {agent.name}"
    assert checked, "every claim came back empty: the generated queue tests nothing"


def test_a_claim_looks_past_the_head_of_the_queue(board, alice):
    """The best tasks are for others: the agent gets the best of its own, further down a long queue."""
    ticket = ticket_create(board=board, title="A long queue", actor=alice)
    for n in range(QUEUE_HEAD + 20):
        task_create(ticket=ticket, title=f"Needs a GPU {n}", actor=alice, score=50, required_capabilities=["gpu"])
    mine = [task_create(ticket=ticket, title=f"Plain {n}", actor=alice, score=n) for n in (3, 7, 5)]
    agent, _ = agent_create(name="plain", boards=[board], actor=alice)
    now = timezone.now()
    assert expected(agent, now=now) == mine[1]
    assert task_claim(agent=agent, now=now) == mine[1]
    gpu, _ = agent_create(name="gpu", boards=[board], actor=alice, capabilities=["gpu"])
    assert task_claim(agent=gpu, now=now).title.startswith("Needs a GPU")
