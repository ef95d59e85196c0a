"""The workflow graph: tasks as nodes, discovery branches and dependencies as edges, in a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from board.models import Board
from board.services import agent_create, task_claim, task_complete, task_create, ticket_create
from discoveries.graph import branch_rows, graph_filtered, result_summary, task_details, workflow_graph
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
        "ticket_title": "Single sign-on",
        "phase": "PHASE_REQUIREMENTS",
        "phase_name": story["spec"].phase.name,
        "status": "assigned",
        "priority": "MEDIUM",
        "title": "Write the spec",
        "agent": "builder",
        "parent": None,
        "attempt": 1,
        "retry_count": 0,
        "max_retries": 3,
        "discoveries": 0,
    }
    assert code["title"] == "<b>Write</b> the code"  # as given; pages escape it
    assert (code["status"], code["agent"]) == ("pending", None)
    assert (fix["phase"], fix["parent"]) == ("PHASE_IMPLEMENTATION", story["test"].pk)
    # Discoveries recorded by each task, whether they branched or not.
    assert [node["discoveries"] for node in graph["nodes"]] == [0, 1, 1, 0]


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


# The filters of the graph page and its list of branches


@pytest.fixture
def tree(board, alice, agent):
    """A hand-built tree: root → (a → a1, b), and a lone task; a bug and an optimisation branch."""
    ticket = ticket_create(board=board, title="Tree", actor=alice)
    root = task_create(ticket=ticket, title="Root", actor=alice, phase="PHASE_DESIGN")
    _, a = discovery_branch(source_task=root, discovery_type="bug", description="A", actor=agent)
    _, b = discovery_branch(
        source_task=root, discovery_type="optimization", description="B", actor=agent, phase="PHASE_TESTING"
    )
    _, a1 = discovery_branch(source_task=a, discovery_type="bug", description="A1", actor=agent)
    lone = task_create(ticket=ticket, title="Lone", actor=alice, dependencies=[b])
    return {"ticket": ticket, "root": root, "a": a, "b": b, "a1": a1, "lone": lone}


def _ids(graph):
    return [node["id"] for node in graph["nodes"]]


def test_the_tree_has_the_shape_it_was_built_with(tree):
    graph = workflow_graph(tree["ticket"])
    ids = {name: task.pk for name, task in tree.items() if name != "ticket"}
    assert _ids(graph) == [ids[name] for name in ("root", "a", "b", "a1", "lone")]
    shape = {(edge["kind"], edge["source"], edge["target"], edge["discovery_type"]) for edge in graph["edges"]}
    assert shape == {
        ("discovery", ids["root"], ids["a"], "bug"),
        ("discovery", ids["root"], ids["b"], "optimization"),
        ("discovery", ids["a"], ids["a1"], "bug"),
        ("dependency", ids["b"], ids["lone"], None),
    }
    assert [node["parent"] for node in graph["nodes"]] == [None, ids["root"], ids["root"], ids["a"], None]


def test_branch_rows_nest_each_task_under_the_one_that_spawned_it(tree):
    [(ticket_id, title, rows)] = branch_rows(workflow_graph(tree["ticket"]))
    assert (ticket_id, title) == (tree["ticket"].pk, "Tree")
    names = {task.pk: name for name, task in tree.items() if name != "ticket"}
    assert [(names[row["node"]["id"]], row["depth"], row["opens"], len(row["closes"])) for row in rows] == [
        ("root", 0, True, 0),
        ("a", 1, True, 0),
        ("a1", 2, False, 1),  # closes a's list
        ("b", 1, False, 1),  # closes root's list
        ("lone", 0, False, 0),
    ]
    assert [row["branch"] and row["branch"]["discovery_type"] for row in rows] == [
        None,
        "bug",
        "bug",
        "optimization",
        None,
    ]


def test_filters_keep_phases_and_statuses_and_a_hidden_parent_makes_a_root(tree):
    graph = workflow_graph(tree["ticket"])
    # Branches are spawned in their source's phase unless told otherwise: root, a and a1 are in Design.
    design = graph_filtered(graph, phases=["PHASE_DESIGN"])
    assert _ids(design) == [tree[name].pk for name in ("root", "a", "a1")]
    assert [(edge["source"], edge["target"]) for edge in design["edges"]] == [
        (tree["root"].pk, tree["a"].pk),
        (tree["a"].pk, tree["a1"].pk),
    ]
    later = graph_filtered(graph, phases=["PHASE_TESTING", tree["lone"].phase.key])
    assert _ids(later) == [tree["b"].pk, tree["lone"].pk]
    assert [edge["kind"] for edge in later["edges"]] == ["dependency"]
    [(_, _, rows)] = branch_rows(later)
    assert [(row["node"]["id"], row["depth"], row["branch"]) for row in rows] == [
        (tree["b"].pk, 0, None),  # its spawning task is filtered out
        (tree["lone"].pk, 0, None),
    ]
    assert graph_filtered(graph, statuses=["completed"]) == {"nodes": [], "edges": []}
    assert graph_filtered(graph) == graph


def test_a_discovery_type_filter_keeps_its_branches_and_their_ends(tree):
    graph = workflow_graph(tree["ticket"])
    optimisations = graph_filtered(graph, types=["optimization"])
    assert set(_ids(optimisations)) == {tree["root"].pk, tree["b"].pk}
    assert [edge["discovery_type"] for edge in optimisations["edges"]] == ["optimization"]
    bugs = graph_filtered(graph, types=["bug"])
    assert set(_ids(bugs)) == {tree["root"].pk, tree["a"].pk, tree["a1"].pk}
    # Dependencies stay when both ends do; a branch of another type does not.
    both = graph_filtered(graph, types=["optimization"], statuses=["pending"])
    assert set(_ids(both)) == {tree["root"].pk, tree["b"].pk}


def test_task_details_give_the_node_its_edges_and_what_it_found(tree, board, agent):
    details = task_details(board, tree["root"].pk)
    assert details["node"] == next(n for n in workflow_graph(board)["nodes"] if n["id"] == tree["root"].pk)
    assert {(edge["source"], edge["target"]) for edge in details["edges"]} == {
        (tree["root"].pk, tree["a"].pk),
        (tree["root"].pk, tree["b"].pk),
    }
    assert [(d["discovery_type"], d["spawned"]) for d in details["discoveries"]] == [
        ("bug", [tree["a"].pk]),
        ("optimization", [tree["b"].pk]),
    ]
    b = task_details(board, tree["b"].pk)
    assert {(edge["kind"], edge["source"], edge["target"]) for edge in b["edges"]} == {
        ("discovery", tree["root"].pk, tree["b"].pk),
        ("dependency", tree["b"].pk, tree["lone"].pk),
    }
    assert task_details(board, 999999) is None


def test_task_details_take_at_most_six_queries_whatever_the_task(tree, board):
    counts = []
    for name in ("root", "a1", "lone"):
        with CaptureQueriesContext(connection) as captured:
            task_details(board, tree[name].pk)
        counts.append(len(captured))
    # The tasks they spawned are read only when the task found something.
    assert counts == [6, 5, 5]


def test_task_details_of_another_boards_task_are_none(tree, review_board):
    assert task_details(review_board, tree["root"].pk) is None


@pytest.mark.parametrize(
    ("result", "summary"),
    [
        (None, ""),
        ({}, ""),
        ({"summary": "Done <b>well</b>."}, "Done <b>well</b>."),
        ("plain text", "plain text"),
        ({"files": 3}, '{"files": 3}'),
        ({"summary": "x" * 600}, "x" * 499 + "…"),
    ],
)
def test_a_result_is_summed_up_in_a_line(result, summary):
    assert result_summary(result) == summary


def test_a_completed_tasks_result_summary_reaches_its_details(board, alice, agent):
    ticket = ticket_create(board=board, title="Done", actor=alice)
    task_create(ticket=ticket, title="Do it", actor=alice)
    task = task_claim(agent=agent)
    task_complete(task=task, agent=agent, result={"summary": "All good."}, attempt=task.attempt)
    assert task_details(board, task.pk)["task"]["result_summary"] == "All good."


def test_an_edge_carries_the_start_of_a_long_description(board, alice, agent):
    ticket = ticket_create(board=board, title="Long", actor=alice)
    source = task_create(ticket=ticket, title="Source", actor=alice)
    discovery_branch(source_task=source, discovery_type="bug", description="x" * 5000, actor=agent)
    [edge] = workflow_graph(ticket)["edges"]
    assert edge["description"] == "x" * 199 + "…"
    assert task_details(board, source.pk)["discoveries"][0]["description"] == "x" * 5000
