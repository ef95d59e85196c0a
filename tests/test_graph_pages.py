"""The workflow graph pages, their JSON and one task's JSON: who sees them, the list of branches, filters, queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.models import Board, Event, Task
from board.services import agent_create, task_claim, task_complete, task_create, ticket_create
from discoveries.services import discovery_branch, discovery_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def agent(board, alice):
    return agent_create(name="scout", boards=[board], actor=alice)[0]


@pytest.fixture
def story(board, alice, agent):
    """A spec, then code found buggy (a branch into a fix, which itself branches), and a test waiting on the code."""
    ticket = ticket_create(board=board, title="Single <i>sign-on</i>", actor=alice, phase="PHASE_IMPLEMENTATION")
    spec = task_create(ticket=ticket, title="Write the spec", actor=alice, phase="PHASE_REQUIREMENTS")
    claimed = task_claim(agent=agent)
    task_complete(task=claimed, agent=agent, result={"summary": "Spec <em>written</em>."}, attempt=claimed.attempt)
    code = task_create(ticket=ticket, title="<b>Write</b> the code", actor=alice)
    test = task_create(ticket=ticket, title="Test it", actor=alice, phase="PHASE_TESTING", dependencies=[code])
    bug, fix = discovery_branch(
        source_task=code,
        discovery_type="bug",
        description="Empty <script>alert(1)</script> passwords pass",
        actor=agent,
        title="Fix <img src=x> empty passwords",
    )
    _, audit = discovery_branch(
        source_task=fix, discovery_type="security_issue", description="Audit the other forms", actor=agent
    )
    discovery_record(source_task=code, discovery_type="technical_debt", description="No branch here", actor=agent)
    return {"ticket": ticket, "spec": spec, "code": code, "test": test, "fix": fix, "audit": audit, "bug": bug}


def board_graph_url(board, query=""):
    url = reverse("discoveries:board-graph", args=[board.slug])
    return f"{url}?{query}" if query else url


def ticket_graph_url(board, ticket, query=""):
    url = reverse("discoveries:ticket-graph", args=[board.slug, ticket.pk])
    return f"{url}?{query}" if query else url


def all_urls(board, story):
    ticket = story["ticket"]
    return [
        board_graph_url(board),
        ticket_graph_url(board, ticket),
        reverse("discoveries:board-graph-data", args=[board.slug]),
        reverse("discoveries:ticket-graph-data", args=[board.slug, ticket.pk]),
        reverse("discoveries:graph-task", args=[board.slug, story["code"].pk]),
    ]


def listed(response):
    """The list's rows as (depth, task id) from the rendered context, in page order."""
    return [(row["depth"], row["node"]["id"]) for _, _, rows in response.context["tickets"] for row in rows]


# Who sees what


def test_anonymous_visitors_are_asked_to_log_in(client, board, story):
    for url in all_urls(board, story):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_an_outsider_gets_404_everywhere(client, charlie, board, story):
    client.force_login(charlie)
    for url in all_urls(board, story):
        assert client.get(url).status_code == 404, url


def test_a_member_and_staff_who_are_not_members_see_them(bob_client, client, board, story):
    for url in all_urls(board, story):
        assert bob_client.get(url).status_code == 200, url
    from django.contrib.auth import get_user_model

    dana = get_user_model().objects.create_user("dana", password="x", is_staff=True)
    client.force_login(dana)
    for url in all_urls(board, story):
        assert client.get(url).status_code == 200, url


def test_a_ticket_or_task_of_another_board_is_not_found_here(bob_client, board, story, workflow, alice):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    other.members.add(alice)
    elsewhere = task_create(ticket=ticket_create(board=other, title="Elsewhere", actor=alice), title="X", actor=alice)
    urls = [
        reverse("discoveries:ticket-graph", args=[board.slug, elsewhere.ticket_id]),
        reverse("discoveries:ticket-graph-data", args=[board.slug, elsewhere.ticket_id]),
        reverse("discoveries:graph-task", args=[board.slug, elsewhere.pk]),
        reverse("discoveries:graph-task", args=[board.slug, 999999]),
    ]
    for url in urls:
        assert bob_client.get(url).status_code == 404, url


def test_the_pages_are_read_only(bob_client, board, story):
    for url in all_urls(board, story):
        assert bob_client.post(url).status_code == 405, url


# The page


def test_the_ticket_page_links_to_its_graph(bob_client, board, story):
    response = bob_client.get(reverse("board:ticket", args=[board.slug, story["ticket"].pk]))
    assert f'href="{ticket_graph_url(board, story["ticket"])}"'.encode() in response.content


def test_the_list_nests_each_branch_under_the_task_that_spawned_it(bob_client, board, story):
    response = bob_client.get(ticket_graph_url(board, story["ticket"]))
    assert response.status_code == 200
    ids = {name: task.pk for name, task in story.items() if isinstance(task, Task)}
    assert listed(response) == [
        (0, ids["spec"]),
        (0, ids["code"]),
        (1, ids["fix"]),
        (2, ids["audit"]),
        (0, ids["test"]),
    ]
    html = response.content.decode()
    # Real nesting: the audit's list item sits inside the fix's, inside the code's.
    code_at = html.index(f'id="list-task-{ids["code"]}"')
    fix_at = html.index(f'id="list-task-{ids["fix"]}"')
    audit_at = html.index(f'id="list-task-{ids["audit"]}"')
    test_at = html.index(f'id="list-task-{ids["test"]}"')
    assert html[code_at:fix_at].count("<ul>") == 1
    assert html[fix_at:audit_at].count("<ul>") == 1
    assert html[audit_at:test_at].count("</ul></li>") == 2
    # Each task links to its row on the ticket page.
    assert f'href="/boards/{board.slug}/tickets/{story["ticket"].pk}/#task-{ids["fix"]}"' in html
    assert "Security issue" in html and "✓ Completed" in html


def test_the_board_graph_groups_the_list_by_ticket_and_links_each_tickets_graph(bob_client, board, story, alice):
    other = ticket_create(board=board, title="Audit log", actor=alice)
    log = task_create(ticket=other, title="Log logins", actor=alice)
    response = bob_client.get(board_graph_url(board))
    assert [ticket_id for ticket_id, _, _ in response.context["tickets"]] == [story["ticket"].pk, other.pk]
    assert (0, log.pk) in listed(response)
    assert ticket_graph_url(board, other).encode() in response.content


def test_agent_text_is_escaped_on_the_page(bob_client, board, story):
    html = bob_client.get(board_graph_url(board)).content.decode()
    for raw in ("<b>Write</b>", "<script>alert(1)</script>", "<img src=x>", "<i>sign-on</i>"):
        assert raw not in html
    assert "&lt;b&gt;Write&lt;/b&gt; the code" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # The page's own configuration is JSON in a script element that cannot be closed early.
    config = html[html.index('id="graph-config"') :]
    assert "</script" not in config[: config.index("</script>")]


def test_filters_keep_phases_statuses_and_discovery_types_and_stay_in_the_url(bob_client, board, story):
    ids = {name: task.pk for name, task in story.items() if isinstance(task, Task)}
    response = bob_client.get(ticket_graph_url(board, story["ticket"], "phase=PHASE_TESTING"))
    assert [task for _, task in listed(response)] == [ids["test"]]
    response = bob_client.get(ticket_graph_url(board, story["ticket"], "status=completed&status=pending"))
    assert {task for _, task in listed(response)} == set(ids.values())
    response = bob_client.get(ticket_graph_url(board, story["ticket"], "type=security_issue"))
    assert listed(response) == [(0, ids["fix"]), (1, ids["audit"])]
    html = response.content.decode()
    assert 'value="security_issue" id="id_type_4" checked' in html
    assert "2 of 5 tasks match the filters" in html


def test_a_bad_filter_value_is_reported_and_ignored(bob_client, board, story):
    response = bob_client.get(ticket_graph_url(board, story["ticket"], "phase=<b>nope</b>&status=done"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "This filter is ignored." in html
    assert "<b>nope</b>" not in html and "&lt;b&gt;nope&lt;/b&gt;" in html
    assert len(listed(response)) == 5


def test_an_htmx_filter_request_gets_the_list_only(bob_client, board, story):
    response = bob_client.get(ticket_graph_url(board, story["ticket"], "status=completed"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="graph-list"')
    assert "graph-config" not in html
    assert "HX-Request" in response["Vary"]


def test_an_empty_graph_says_so(bob_client, board, alice):
    ticket = ticket_create(board=board, title="Nothing yet", actor=alice)
    assert b"No tasks yet." in bob_client.get(ticket_graph_url(board, ticket)).content
    assert b"No task matches the filters." in bob_client.get(ticket_graph_url(board, ticket, "status=failed")).content


# The JSON


def test_the_graph_json_carries_the_last_event_it_reflects(bob_client, board, story):
    last = Event.objects.filter(board=board).latest("id").pk
    data = bob_client.get(reverse("discoveries:board-graph-data", args=[board.slug])).json()
    assert data["last_event_id"] == last
    assert len(data["nodes"]) == 5 and len(data["edges"]) == 3
    ticket_data = bob_client.get(reverse("discoveries:ticket-graph-data", args=[board.slug, story["ticket"].pk])).json()
    assert ticket_data["nodes"] == data["nodes"]
    assert data["nodes"][1]["title"] == "<b>Write</b> the code"  # as sent: the page shows it as text


def test_the_task_json_has_what_the_side_panel_shows(bob_client, board, story):
    code = bob_client.get(reverse("discoveries:graph-task", args=[board.slug, story["code"].pk])).json()
    assert code["node"]["id"] == story["code"].pk
    assert code["node"]["discoveries"] == 2
    assert [d["discovery_type"] for d in code["discoveries"]] == ["bug", "technical_debt"]
    assert code["discoveries"][0]["spawned"] == [story["fix"].pk]
    assert {(e["kind"], e["source"], e["target"]) for e in code["edges"]} == {
        ("discovery", story["code"].pk, story["fix"].pk),
        ("dependency", story["code"].pk, story["test"].pk),
    }
    spec = bob_client.get(reverse("discoveries:graph-task", args=[board.slug, story["spec"].pk])).json()
    assert spec["task"]["result_summary"] == "Spec <em>written</em>."
    assert spec["task"]["status_name"] == "Completed"
    assert (spec["node"]["agent"], spec["node"]["attempt"]) == ("scout", 1)


# Queries


def grow(board, alice, agent, tickets, tasks_per_ticket):
    """Tickets whose tasks form a chain of dependencies, with a branch off every other task."""
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
    return ticket


def queries(client, url):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize("name", ["board-graph", "ticket-graph", "board-graph-data", "ticket-graph-data", "graph-task"])
def test_the_same_queries_for_a_small_or_a_large_graph(bob_client, board, alice, agent, workflow, name):
    large_board = Board.objects.create(name="Large", slug="large", workflow=workflow)
    large_board.members.add(board.members.get(username="bob"))
    agent.boards.add(large_board)
    small = grow(board, alice, agent, tickets=1, tasks_per_ticket=2)
    large = grow(large_board, alice, agent, tickets=8, tasks_per_ticket=14)

    def url(of_board, ticket):
        if name.startswith("board"):
            return reverse(f"discoveries:{name}", args=[of_board.slug])
        if name == "graph-task":
            return reverse("discoveries:graph-task", args=[of_board.slug, ticket.tasks.order_by("pk")[1].pk])
        return reverse(f"discoveries:{name}", args=[of_board.slug, ticket.pk])

    assert queries(bob_client, url(board, small)) == queries(bob_client, url(large_board, large))


def test_a_list_over_the_threshold_asks_to_filter_first_and_shows_all_when_asked(bob_client, board, alice):
    from discoveries.views.graph import LARGE_GRAPH

    ticket = ticket_create(board=board, title="Large", actor=alice)
    Task.objects.bulk_create(
        Task(ticket=ticket, phase=ticket.phase, title=f"Step {n}", created_by="test") for n in range(LARGE_GRAPH + 1)
    )
    response = bob_client.get(board_graph_url(board, "status=pending"))
    html = response.content.decode()
    assert f"{LARGE_GRAPH + 1} tasks match: the list shows at most {LARGE_GRAPH}" in html
    assert listed(response) == []
    assert 'href="/boards/alices-board/graph/?status=pending&amp;list=all"' in html
    response = bob_client.get(board_graph_url(board, "status=pending&list=all"))
    assert len(listed(response)) == LARGE_GRAPH + 1
    assert "the list shows at most" not in response.content.decode()
    # Under the threshold, the list is whole.
    assert len(listed(bob_client.get(board_graph_url(board, "status=failed")))) == 0
