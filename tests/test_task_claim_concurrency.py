"""Many agents claiming at once: each gets its own task, the best ones first, and a claim costs one statement."""

import re
import threading

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from board.models import Agent, Event, Task
from board.services import agent_create, task_claim, task_create, ticket_create

AGENTS = 12
# The test's own transaction makes the service's atomic block a savepoint; a request's would be BEGIN and COMMIT.
SAVEPOINTS = ("SAVEPOINT", "RELEASE SAVEPOINT")


def verb_and_table(sql):
    """'UPDATE board_task' for an UPDATE of that table: what a statement does, and to which table first."""
    table = re.search(r'(?:FROM|UPDATE|INTO) "(\w+)"', sql)[1]
    return f"{sql.split()[0]} {table}"


def claim_at_once(agents):
    """Every agent claims once, all released together, each from its own connection; (claims, errors)."""
    start = threading.Barrier(len(agents))
    got, errors = {}, []

    def claim(agent):
        try:
            start.wait()
            task = task_claim(agent=agent)
            got[agent.name] = task.pk if task is not None else None
        except Exception as exc:  # reported below, in the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(agent,)) for agent in agents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return got, errors


@pytest.mark.django_db(transaction=True)
def test_agents_claiming_at_once_get_distinct_tasks_the_best_first(board, alice):
    ticket = ticket_create(board=board, title="Much work", actor=alice)
    # Scores 1 to 30, created out of order, so the winners are the best scores, not the oldest tasks.
    tasks = {
        score: task_create(ticket=ticket, title=f"Score {score}", actor=alice, score=score)
        for score in range(30, 0, -3)
    }
    tasks |= {
        score: task_create(ticket=ticket, title=f"Score {score}", actor=alice, score=score)
        for score in range(1, 31)
        if score not in tasks
    }
    agents = [agent_create(name=f"agent-{n}", boards=[board], actor=alice)[0] for n in range(AGENTS)]

    got, errors = claim_at_once(agents)

    assert errors == []
    assert len(got) == AGENTS and None not in got.values()
    assert len(set(got.values())) == AGENTS  # never the same task twice
    best = {tasks[score].pk for score in range(30, 30 - AGENTS, -1)}
    assert set(got.values()) == best
    held = Task.objects.filter(status=Task.Status.ASSIGNED)
    assert sorted(held.values_list("assigned_agent__name", flat=True)) == sorted(got)  # one task per agent
    assert set(held.values_list("attempt", flat=True)) == {1}
    assert Event.objects.filter(type="task.assigned").count() == AGENTS
    assert set(Agent.objects.filter(pk__in=[a.pk for a in agents]).values_list("status", flat=True)) == {"busy"}


@pytest.mark.django_db(transaction=True)
def test_more_agents_than_tasks_leave_the_rest_with_nothing(board, alice):
    ticket = ticket_create(board=board, title="Little work", actor=alice)
    few = [task_create(ticket=ticket, title=f"Task {n}", actor=alice).pk for n in range(3)]
    agents = [agent_create(name=f"agent-{n}", boards=[board], actor=alice)[0] for n in range(AGENTS)]

    got, errors = claim_at_once(agents)

    assert errors == []
    taken = [pk for pk in got.values() if pk is not None]
    assert sorted(taken) == sorted(few)
    assert list(got.values()).count(None) == AGENTS - len(few)
    assert Event.objects.filter(type="task.assigned").count() == len(few)


@pytest.mark.django_db
def test_a_claim_takes_its_task_in_one_statement(board, alice):
    ticket = ticket_create(board=board, title="Work", actor=alice)
    for n in range(20):
        task_create(ticket=ticket, title=f"Task {n}", actor=alice, score=n)
    agent = agent_create(name="builder", boards=[board], actor=alice)[0]

    with CaptureQueriesContext(connection) as queries:
        task = task_claim(agent=agent)

    assert (task.title, task.status, task.attempt, task.phase.key) == ("Task 19", "assigned", 1, ticket.phase.key)
    assert task.ticket.board.slug == board.slug
    statements = [verb_and_table(query["sql"]) for query in queries if not query["sql"].startswith(SAVEPOINTS)]
    taking = ["UPDATE board_task", "UPDATE board_agent", "INSERT board_event"]
    if connection.vendor == "sqlite":
        # The write lock is taken at BEGIN: nothing to lock, and the task is found and taken at once.
        assert statements == taking
    else:
        # The agent's row is locked (its own concurrent claims take turns), then the head of the queue is read.
        assert statements == ["SELECT board_agent", "SELECT board_task", *taking]
