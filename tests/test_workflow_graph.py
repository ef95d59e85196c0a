"""The workflow graph: tasks as nodes, discovery branches and dependencies as edges, in a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from board.models import Board
from board.services import agent_create, task_claim, task_create, ticket_create
from discoveries.graph import workflow_graph
from discoveries.services import discovery_branch, discovery_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent(board, alice):
    return agent_create(name="builder", boards=[board], actor=alice)[0]


@pytest.fixture
def story(board, alice, agent):
    """Requirements, then code that waits on them, then a test that finds a bug and branches into a fix."""
    ticket = ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_IMPLEMENTATION")
    spec = task_create(ticket=ticket, title="Write the spec", actor=alice, phase="PHASE_REQUIREMENTS")
    code = task_create(ticket=ticket, title="<b>Write</b> the code", actor=alice, dependencies=[spec])
    test = task_create(ticket=ticket, title="Test it", actor=alice, phase="PHASE_TESTING", dependencies=[code])
    task_claim(agent=agent)  # the agent takes the spec, the only ready task
    discovery, fix = discovery_branch(
        source_task=test,
        discovery_type="bug",
        description="Empty <passwords> pass",
        actor=agent,
        phase="PHASE_IMPLEMENTATION",
        title="Fix empty passwords",
    )
    discovery_record(source_task=code, discovery_type="technical_debt", description="No branch here", actor=agent)
    return {"ticket": ticket, "spec": spec, "code": code, "test": test, "fix": fix, "discovery": discovery}


def test_nodes_are_the_tickets_tasks_in_creation_order(story):
    graph = workflow_graph(story["ticket"])
    assert [node["id"] for node in graph["nodes"]] == [story[name].pk for name in ("spec", "code", "test", "fix")]
    spec, code, _, fix = graph["nodes"]
    assert spec == {
        "id": story["spec"].pk,
        "ticket": story["ticket"].pk,
        "phase": "PHASE_REQUIREMENTS",
        "phase_name": story["spec"].phase.name,
        "status": "assigned",
        "priority": "MEDIUM",
        "title": "Write the spec",
        "agent": "builder",
        "parent": None,
    }
    assert code["title"] == "<b>Write</b> the code"  # as given; pages escape it
    assert (code["status"], code["agent"]) == ("pending", None)
    assert (fix["phase"], fix["parent"]) == ("PHASE_IMPLEMENTATION", story["test"].pk)


def test_edges_are_discovery_branches_and_dependencies(story):
    edges = workflow_graph(story["ticket"])["edges"]
    discovery = story["discovery"]
    assert edges[0] == {
        "id": f"discovery-{discovery.pk}-{story['fix'].pk}",
        "kind": "discovery",
        "source": story["test"].pk,
        "target": story["fix"].pk,
        "discovery_id": discovery.pk,
        "discovery_type": "bug",
        "description": "Empty <passwords> pass",
        "resolution_status": "open",
    }
    dependencies = [(edge["source"], edge["target"]) for edge in edges if edge["kind"] == "dependency"]
    # From the dependency to the task that waits on it.
    assert dependencies == [(story["spec"].pk, story["code"].pk), (story["code"].pk, story["test"].pk)]
    assert len(edges) == 3  # a discovery that did not branch draws no edge


def test_an_empty_ticket_has_an_empty_graph(board, alice):
    ticket = ticket_create(board=board, title="Nothing yet", actor=alice)
    assert workflow_graph(ticket) == {"nodes": [], "edges": []}


def test_a_board_graph_spans_its_tickets_and_their_cross_ticket_dependencies(story, board, alice, review_board):
    other_ticket = ticket_create(board=board, title="Audit log", actor=alice)
    audit = task_create(ticket=other_ticket, title="Log logins", actor=alice, dependencies=[story["code"]])
    task_create(ticket=review_board.tickets.first(), title="Elsewhere", actor=alice)

    board_graph = workflow_graph(board)
    assert [node["id"] for node in board_graph["nodes"]] == [
        *(story[name].pk for name in ("spec", "code", "test", "fix")),
        audit.pk,
    ]
    assert {node["ticket"] for node in board_graph["nodes"]} == {story["ticket"].pk, other_ticket.pk}
    cross = {"kind": "dependency", "source": story["code"].pk, "target": audit.pk}
    assert any(edge.items() >= cross.items() for edge in board_graph["edges"])
    assert len(board_graph["edges"]) == 4

    # A ticket's graph leaves out the edge whose other end is on another ticket.
    ticket_graph = workflow_graph(story["ticket"])
    assert not any(edge["target"] == audit.pk for edge in ticket_graph["edges"])
    assert workflow_graph(other_ticket)["edges"] == []


def test_the_graph_takes_a_ticket_or_a_board_only(story):
    with pytest.raises(TypeError, match="not Task"):
        workflow_graph(story["spec"])


def _grow(board, alice, agent, tickets, tasks_per_ticket):
    """Tickets whose tasks form a chain of dependencies, with a branch off every other task."""
    made = []
    for number in range(tickets):
        ticket = ticket_create(board=board, title=f"Ticket {number}", actor=alice)
        previous = None
        for step in range(tasks_per_ticket):
            task = task_create(
                ticket=ticket, title=f"Step {step}", actor=alice, dependencies=[previous] if previous else []
            )
            if step % 2:
                discovery_branch(source_task=task, discovery_type="bug", description=f"Bug {step}", actor=agent)
            previous = task
        made.append(ticket)
    task_claim(agent=agent)
    return made


def _queries(of):
    with CaptureQueriesContext(connection) as captured:
        graph = workflow_graph(of)
    return len(captured), graph


@pytest.mark.parametrize("scope", ["ticket", "board"])
def test_the_graph_takes_three_queries_whatever_its_size(board, alice, agent, workflow, scope):
    small_board = board
    large_board = Board.objects.create(name="Large", slug="large", workflow=workflow)
    agent.boards.add(large_board)
    small = _grow(small_board, alice, agent, tickets=1, tasks_per_ticket=2)
    large = _grow(large_board, alice, agent, tickets=6, tasks_per_ticket=12)

    small_count, small_graph = _queries(small[0] if scope == "ticket" else small_board)
    large_count, large_graph = _queries(large[0] if scope == "ticket" else large_board)

    assert small_count == large_count == 3
    assert len(small_graph["nodes"]) == 3  # two steps and one branch
    if scope == "ticket":
        assert (len(large_graph["nodes"]), len(large_graph["edges"])) == (18, 6 + 11)
    else:
        assert (len(large_graph["nodes"]), len(large_graph["edges"])) == (6 * 18, 6 * 17)
