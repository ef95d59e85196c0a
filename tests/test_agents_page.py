"""The agents page of a board: who sees it, what each agent shows, revoking, markup, and its query count."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from board.models import Agent, Board, Task
from board.services import (
    agent_create,
    task_claim,
    task_complete,
    task_create,
    task_fail,
    task_time_out,
    ticket_create,
)

pytestmark = pytest.mark.django_db

MARKUP = '<img src=x onerror="alert(1)">'


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def agents_url(board):
    return reverse("board:agents", args=[board.slug])


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Build the thing", actor=alice, phase="PHASE_IMPLEMENTATION")


def revoke_url(board, agent):
    return reverse("board:agent-revoke", args=[board.slug, agent.pk])


def row_of(html, agent):
    row = html[html.index(f'id="agent-{agent.pk}"') :]
    return row[: row.index("</tr>")]


def hand(agent, ticket, alice, title="Work in hand"):
    """Give `agent` a task of `ticket` through the queue, and start it."""
    task = task_create(ticket=ticket, title=title, actor=alice)
    claimed = task_claim(agent=agent, board=ticket.board)
    assert claimed.pk == task.pk
    Task.objects.filter(pk=task.pk).update(status=Task.Status.RUNNING, started_at=timezone.now())
    return task


# Who sees it


def test_anonymous_visitors_are_asked_to_log_in(client, board, builder):
    agent, _ = builder
    for response in (client.get(reverse("board:agents", args=[board.slug])), client.post(revoke_url(board, agent))):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    agent.refresh_from_db()
    assert not agent.is_revoked


def test_an_outsider_gets_404_and_cannot_revoke(client, charlie, board, builder, agents_url):
    agent, _ = builder
    client.force_login(charlie)
    assert client.get(agents_url).status_code == 404
    assert client.post(revoke_url(board, agent)).status_code == 404
    agent.refresh_from_db()
    assert not agent.is_revoked


def test_a_member_sees_the_agents_of_the_board_only(bob_client, board, builder, workflow, alice, agents_url):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    agent_create(name="elsewhere", boards=[other], actor=alice)
    response = bob_client.get(agents_url)
    assert response.status_code == 200
    html = response.content.decode()
    assert "builder" in html
    assert "elsewhere" not in html
    assert response["Vary"] and "HX-Request" in response["Vary"]


# What each agent shows


def test_an_agent_shows_its_type_phase_capabilities_and_status(bob_client, board, alice, phase, agents_url):
    agent, _ = agent_create(
        name="tester-1",
        boards=[board],
        actor=alice,
        agent_type="tester",
        phase=phase("PHASE_TESTING"),
        capabilities=["pytest", "playwright"],
    )
    row = row_of(bob_client.get(agents_url).content.decode(), agent)
    assert "tester" in row
    assert phase("PHASE_TESTING").name in row
    assert "pytest" in row and "playwright" in row
    assert "Idle" in row
    assert "Never" in row  # no heartbeat yet


def test_an_agent_without_a_phase_takes_any(bob_client, builder, agents_url):
    agent, _ = builder
    assert "Any phase" in row_of(bob_client.get(agents_url).content.decode(), agent)


def test_a_late_heartbeat_says_how_long_the_agent_has_been_silent(bob_client, board, alice, settings, agents_url):
    settings.OMOI_HEARTBEAT_INTERVAL = timedelta(seconds=30)
    settings.OMOI_MISSED_HEARTBEATS = 10
    now = timezone.now()
    quiet, _ = agent_create(name="quiet", boards=[board], actor=alice)
    fresh, _ = agent_create(name="fresh", boards=[board], actor=alice)
    gone, _ = agent_create(name="gone", boards=[board], actor=alice)
    Agent.objects.filter(pk=quiet.pk).update(last_heartbeat=now - timedelta(minutes=3, seconds=5))
    Agent.objects.filter(pk=fresh.pk).update(last_heartbeat=now - timedelta(seconds=10))
    Agent.objects.filter(pk=gone.pk).update(last_heartbeat=now - timedelta(minutes=20))
    html = bob_client.get(agents_url).content.decode()
    assert "silent for 3\xa0minutes" in row_of(html, quiet)
    assert "past the limit" not in row_of(html, quiet)
    assert "silent" not in row_of(html, fresh)
    assert "past the limit" in row_of(html, gone)


def test_the_current_task_links_to_its_row_on_the_ticket_page(bob_client, board, builder, ticket, alice, agents_url):
    agent, _ = builder
    task = hand(agent, ticket, alice)
    row = row_of(bob_client.get(agents_url).content.decode(), agent)
    link = reverse("board:ticket", args=[board.slug, ticket.pk]) + f"#task-{task.pk}"
    assert f'href="{link}"' in row
    assert "Work in hand" in row
    assert "running" in row


def test_a_task_held_on_another_board_is_not_shown(bob_client, board, workflow, alice, agents_url):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    agent, _ = agent_create(name="both", boards=[board, other], actor=alice)
    secret = ticket_create(board=other, title="Secret ticket", actor=alice, phase="PHASE_IMPLEMENTATION")
    hand(agent, secret, alice, title="Secret task")
    row = row_of(bob_client.get(agents_url).content.decode(), agent)
    assert "Secret" not in row
    assert "None" in row


def test_done_and_failed_count_what_the_agent_reported_on_this_board(bob_client, board, alice, ticket, agents_url):
    agent, _ = agent_create(name="worker", boards=[board], actor=alice)
    for n in range(2):
        task = hand(agent, ticket, alice, title=f"Done {n}")
        task_complete(task=task, agent=agent)
    task = hand(agent, ticket, alice, title="Broken")
    task_fail(task=task, agent=agent, error="It broke", retryable=False)
    row = row_of(bob_client.get(agents_url).content.decode(), agent)
    cells = [cell.split(">", 1)[1].split("<", 1)[0] for cell in row.split('class="number"')[1:]]
    assert cells == ["2", "1"]


def test_a_time_out_by_the_orchestrator_counts_as_a_failure_of_the_agent_that_held_the_task(
    bob_client, board, alice, ticket, agents_url
):
    agent, _ = agent_create(name="slowpoke", boards=[board], actor=alice)
    task = hand(agent, ticket, alice, title="Too slow")
    task_time_out(task=Task.objects.get(pk=task.pk), now=timezone.now() + timedelta(days=1))
    assert Task.objects.get(pk=task.pk).assigned_agent is None
    row = row_of(bob_client.get(agents_url).content.decode(), agent)
    cells = [cell.split(">", 1)[1].split("<", 1)[0] for cell in row.split('class="number"')[1:]]
    assert cells == ["0", "1"]


def test_a_revoked_agent_is_listed_as_revoked(alice_client, board, builder, agents_url):
    agent, _ = builder
    Agent.objects.filter(pk=agent.pk).update(revoked_at=timezone.now(), status=Agent.Status.OFFLINE)
    row = row_of(alice_client.get(agents_url).content.decode(), agent)
    assert "Revoked" in row
    assert revoke_url(board, agent) not in row


def test_markup_an_agent_sent_is_shown_escaped(bob_client, board, alice, ticket, agents_url):
    agent, _ = agent_create(name=MARKUP, boards=[board], actor=alice, agent_type=MARKUP, capabilities=[MARKUP])
    hand(agent, ticket, alice, title=MARKUP)
    html = bob_client.get(agents_url).content.decode()
    assert MARKUP not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_a_board_without_agents_says_so(bob_client, board, agents_url):
    assert "No agent works on this board yet." in bob_client.get(agents_url).content.decode()


def test_an_htmx_request_gets_the_list_alone(bob_client, builder, agents_url):
    response = bob_client.get(agents_url, headers={"HX-Request": "true", "HX-Target": "agent-list"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="agent-list"')
    assert "<html" not in html
    assert "builder" in html


def test_the_page_has_the_boards_tabs_with_agents_current(bob_client, board, agents_url):
    html = bob_client.get(agents_url).content.decode()
    assert f'<a href="{agents_url}" aria-current="page">Agents</a>' in html
    for name in ("board:detail", "discoveries:board-graph", "discoveries:list", "discoveries:analytics"):
        assert f'<a href="{reverse(name, args=[board.slug])}">' in html


def test_the_page_carries_its_live_connection(bob_client, board, builder, agents_url):
    html = bob_client.get(agents_url).content.decode()
    assert f'data-socket-path="/ws/boards/{board.slug}/"' in html
    assert "js/live.js" in html and "js/lists.js" in html
    assert 'data-live-events="agent. task."' in html


# Revoking


def test_a_member_sees_no_revoke_button_and_is_refused(bob_client, board, builder, agents_url):
    agent, _ = builder
    html = bob_client.get(agents_url).content.decode()
    assert revoke_url(board, agent) not in html
    assert "Revoke" not in html
    assert bob_client.post(revoke_url(board, agent)).status_code == 403
    agent.refresh_from_db()
    assert not agent.is_revoked


def test_staff_see_a_clearly_labelled_revoke_step(alice_client, board, builder, agents_url):
    agent, _ = builder
    row = row_of(alice_client.get(agents_url).content.decode(), agent)
    assert f'action="{revoke_url(board, agent)}"' in row
    assert '<summary class="button button-sm">Revoke…</summary>' in row
    assert ">Revoke builder</button>" in row
    assert "every board" in row


def test_staff_revoke_an_agent_and_its_task_goes_back_to_the_queue(alice_client, board, builder, ticket, alice):
    agent, _ = builder
    task = hand(agent, ticket, alice)
    response = alice_client.post(revoke_url(board, agent), follow=True)
    assert response.redirect_chain[-1][0] == reverse("board:agents", args=[board.slug]) + f"#agent-{agent.pk}"
    agent.refresh_from_db()
    task.refresh_from_db()
    assert agent.is_revoked
    assert task.status == Task.Status.PENDING and task.assigned_agent is None
    html = response.content.decode()
    assert "Agent builder is revoked" in html
    assert "Revoked" in row_of(html, agent)


def test_staff_who_are_not_members_may_revoke(client, board, builder):
    dana = get_user_model().objects.create_user("dana", password="x", is_staff=True)
    client.force_login(dana)
    agent, _ = builder
    assert client.post(revoke_url(board, agent)).status_code == 302
    agent.refresh_from_db()
    assert agent.is_revoked


def test_revoking_twice_says_it_was_already_done(alice_client, board, builder):
    agent, _ = builder
    alice_client.post(revoke_url(board, agent))
    agent.refresh_from_db()
    revoked_at = agent.revoked_at
    response = alice_client.post(revoke_url(board, agent), follow=True)
    assert "already revoked" in response.content.decode()
    agent.refresh_from_db()
    assert agent.revoked_at == revoked_at


def test_an_agent_of_another_board_cannot_be_revoked_from_this_one(alice_client, board, workflow, alice):
    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    agent, _ = agent_create(name="elsewhere", boards=[other], actor=alice)
    assert alice_client.post(revoke_url(board, agent)).status_code == 404
    agent.refresh_from_db()
    assert not agent.is_revoked


@pytest.mark.parametrize("path", ["agents/0/revoke/", "agents/999999999/revoke/", "agents/x/revoke/"])
def test_revoking_an_unknown_agent_is_a_404(alice_client, board, path):
    url = reverse("board:detail", args=[board.slug]) + path
    assert alice_client.post(url).status_code == 404


def test_revoke_takes_only_a_post(alice_client, board, builder):
    agent, _ = builder
    assert alice_client.get(revoke_url(board, agent)).status_code == 405
    agent.refresh_from_db()
    assert not agent.is_revoked


def test_a_revoke_without_the_csrf_token_is_refused(board, builder, alice):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    agent, _ = builder
    assert client.post(revoke_url(board, agent)).status_code == 403
    agent.refresh_from_db()
    assert not agent.is_revoked


# Query count


def count_queries(client, url):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


def test_the_page_costs_the_same_queries_with_2_or_40_agents(bob_client, board, alice, ticket, agents_url):
    def add_agents(start, count):
        for n in range(start, start + count):
            agent, _ = agent_create(name=f"agent-{n}", boards=[board], actor=alice, capabilities=["python"])
            task = hand(agent, ticket, alice, title=f"Task {n}")
            if n % 2:
                task_complete(task=task, agent=agent)
                Agent.objects.filter(pk=agent.pk).update(last_heartbeat=timezone.now() - timedelta(hours=1))

    add_agents(0, 2)
    few = count_queries(bob_client, agents_url)
    add_agents(2, 38)
    many = count_queries(bob_client, agents_url)
    assert few == many
    assert many <= 8


# Live, in a real browser


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("server_log", "no_broadcasts_from_the_test_process")
def test_the_list_follows_the_agents_work_as_it_happens(open_as, board, bob, alice, ticket):
    from playwright.sync_api import expect

    agent, _ = agent_create(name="demo-agent-1", boards=[board], actor=alice)
    page = open_as(bob, reverse("board:agents", args=[board.slug]), live=True)
    row = page.locator(f"#agent-{agent.pk}")
    expect(row).to_contain_text("Idle")

    task = hand(agent, ticket, alice, title="Build <the> form")
    expect(row).to_contain_text("Busy")
    expect(row.get_by_role("link", name=f"#{task.pk} Build <the> form")).to_have_attribute(
        "href", reverse("board:ticket", args=[board.slug, ticket.pk]) + f"#task-{task.pk}"
    )

    task_complete(task=task, agent=agent)
    expect(row).to_contain_text("Idle")
    expect(row.locator("td.number").first).to_have_text("1")
    newcomer, _ = agent_create(name="demo-agent-2", boards=[board], actor=alice)
    expect(page.locator(f"#agent-{newcomer.pk}")).to_be_visible()
    assert page.evaluate("window.sameDocument === true"), "the page reloaded instead of swapping its list"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("server_log")
def test_staff_revoke_through_the_confirm_step(open_as, board, alice, builder):
    from playwright.sync_api import expect

    agent, _ = builder
    page = open_as(alice, reverse("board:agents", args=[board.slug]), live=True)
    row = page.locator(f"#agent-{agent.pk}")
    row.get_by_text("Revoke…").click()
    row.get_by_role("button", name="Revoke builder").click()
    expect(page.locator("#messages")).to_contain_text("Agent builder is revoked")
    expect(page.locator(f"#agent-{agent.pk}")).to_contain_text("Revoked")
    agent.refresh_from_db()
    assert agent.is_revoked
