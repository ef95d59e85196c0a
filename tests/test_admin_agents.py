"""The admin for agents, tasks and comments: agents are added through agent_create and retired by revoking."""

import re

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.models import Agent, Board, Event, Task, TicketComment
from board.services import (
    agent_authenticate,
    agent_create,
    agent_revoke,
    task_claim,
    task_create,
    ticket_comment,
    ticket_create,
)

from .agent_api import AgentClient
from .workflow_samples import SMALL, load

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:board_agent_add")
LIST_URL = reverse("admin:board_agent_changelist")
TOKEN = re.compile(r"omoi_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def builder(board, alice):
    return agent_create(name="builder", boards=[board], actor=alice, capabilities=["python"])


@pytest.fixture
def task(board, alice):
    ticket = ticket_create(board=board, title="Single sign-on", actor=alice)
    return task_create(ticket=ticket, title="Write the code", actor=alice)


def change_url(agent):
    return reverse("admin:board_agent_change", args=[agent.pk])


def add_agent(client, **changes):
    data = {"name": "scout", "agent_type": "worker", "boards": [], "phase": "", "capabilities": "", **changes}
    return client.post(ADD_URL, data, follow=True)


def form_errors(response):
    return {name: list(errors) for name, errors in response.context["adminform"].form.errors.items()}


def test_every_agent_task_and_comment_page_renders(alice_client, builder, task, alice):
    ticket_comment(ticket=task.ticket, body="Looks good", actor=alice)
    urls = [
        LIST_URL,
        LIST_URL + "?q=build&status__exact=idle&revoked_at__isempty=1",
        ADD_URL,
        change_url(builder[0]),
        reverse("admin:board_task_changelist"),
        reverse("admin:board_task_changelist") + "?q=code&status__exact=pending",
        reverse("admin:board_task_change", args=[task.pk]),
        reverse("admin:board_ticketcomment_changelist"),
        reverse("admin:board_ticketcomment_changelist") + "?q=good",
        reverse("admin:board_ticketcomment_change", args=[TicketComment.objects.get().pk]),
    ]
    for url in urls:
        assert alice_client.get(url).status_code == 200, url


def test_the_agent_list_shows_who_works_where(alice_client, builder, board, workflow, alice, phase):
    second = Board.objects.create(name="Second", slug="second", workflow=workflow)
    agent_create(name="tester", boards=[board, second], actor=alice, phase=phase("PHASE_TESTING"), agent_type="qa")
    html = alice_client.get(LIST_URL).content.decode()
    assert "builder" in html and "tester" in html
    assert "alices-board, second" in html
    assert "Testing (PHASE_TESTING)" in html


def test_the_agent_list_costs_the_same_queries_with_more_agents(alice_client, board, workflow, alice, phase):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert alice_client.get(LIST_URL).status_code == 200
        return len(captured)

    agent_create(name="first", boards=[board], actor=alice)
    few = queries()
    second = Board.objects.create(name="Second", slug="second", workflow=workflow)
    for n in range(10):
        agent_create(name=f"agent-{n}", boards=[board, second], actor=alice, phase=phase("PHASE_DESIGN"))
    assert queries() == few


# Adding


def test_adding_an_agent_shows_its_token_once_and_stores_only_the_hash(alice_client, board, alice, phase):
    response = add_agent(
        alice_client,
        name="scout",
        agent_type="reviewer",
        boards=[board.pk],
        phase=phase("PHASE_TESTING").pk,
        capabilities="qa, python",
    )
    assert response.status_code == 200
    html = response.content.decode()
    (token,) = TOKEN.findall(html)
    assert "only time it is shown" in html

    agent = Agent.objects.get()
    assert agent_authenticate(token) == agent
    assert (agent.name, agent.agent_type, agent.phase.key, agent.capabilities) == (
        "scout",
        "reviewer",
        "PHASE_TESTING",
        ["qa", "python"],
    )
    assert list(agent.boards.all()) == [board]
    stored = [str(value) for value in Agent.objects.values().get().values()]
    assert not any(token in value for value in stored)
    assert agent.token_prefix == token[:11] and len(agent.token_hash) == 64
    assert not any(token in str(payload) for payload in Event.objects.values_list("payload", flat=True))
    event = Event.objects.get(type="agent.registered")
    assert (event.actor, event.entity_id) == ("alice", str(agent.pk))

    for url in (LIST_URL, change_url(agent)):  # never again
        assert token not in alice_client.get(url).content.decode()
    assert f"{agent.token_prefix}…" in alice_client.get(change_url(agent)).content.decode()


def test_an_added_agent_can_call_the_api_at_once(alice_client, client, board, task):
    response = add_agent(alice_client, name="scout", boards=[board.pk])
    (token,) = set(TOKEN.findall(response.content.decode()))
    api = AgentClient(client, token)
    assert api.post("/tasks/next", {}).json()["id"] == task.pk


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": "builder"}, "name", "An agent named 'builder' already exists."),
        ({"name": ""}, "name", "This field is required."),
        ({"boards": []}, "boards", "This field is required."),
        ({"capabilities": "ok,,bad"}, "capabilities", "Each capability is a name of 1 to 64 characters"),
        ({"agent_type": "t" * 51}, "agent_type", "Ensure this value has at most 50 characters"),
    ],
)
def test_adding_refuses_bad_input_without_creating_anything(alice_client, builder, board, changes, field, message):
    events = Event.objects.count()
    ContentType.objects.clear_cache()  # as in a new server process, where showing the form again reads them
    response = add_agent(alice_client, **{"boards": [board.pk], **changes})
    assert response.status_code == 200
    assert any(message in error for error in form_errors(response)[field]), form_errors(response)
    assert not TOKEN.search(response.content.decode())
    assert list(Agent.objects.values_list("name", flat=True)) == ["builder"]
    assert Event.objects.count() == events


def test_a_phase_must_belong_to_the_workflow_of_every_board(alice_client, board, phase):
    small = Board.objects.create(name="Small", slug="small-board", workflow=load(SMALL).workflow)
    response = add_agent(alice_client, boards=[board.pk, small.pk], phase=phase("PHASE_TESTING").pk)
    assert form_errors(response) == {"phase": ["Phase PHASE_TESTING is not in the workflow of every board given."]}
    assert not Agent.objects.exists() and not Event.objects.filter(type="agent.registered").exists()


def test_members_who_are_not_staff_cannot_add_agents(client, bob, board):
    client.force_login(bob)
    response = add_agent(client, boards=[board.pk])
    assert not Agent.objects.exists()
    assert "omoi_" not in response.content.decode()


# Revoking


def test_the_revoke_action_stops_the_tokens_at_once(alice_client, client, builder, board, alice, task):
    agent, token = builder
    other, other_token = agent_create(name="other", boards=[board], actor=alice)
    task_claim(agent=agent)
    api = AgentClient(client, token)
    assert api.get("/agents/me").status_code == 200

    response = alice_client.post(LIST_URL, {"action": "revoke_agents", "_selected_action": [agent.pk]}, follow=True)
    assert response.status_code == 200
    assert "Revoked 1 agent(s)" in response.content.decode()
    assert api.get("/agents/me").status_code == 401
    assert agent_authenticate(token) is None
    assert agent_authenticate(other_token) == other
    agent.refresh_from_db()
    assert agent.revoked_at is not None and agent.status == "offline"
    task.refresh_from_db()
    assert (task.status, task.assigned_agent) == ("pending", None)  # back in the queue
    assert Event.objects.get(type="task.released").actor == "alice"


def test_revoking_twice_changes_nothing_more(alice_client, builder):
    alice_client.post(LIST_URL, {"action": "revoke_agents", "_selected_action": [builder[0].pk]})
    revoked_at = Agent.objects.get().revoked_at
    response = alice_client.post(
        LIST_URL, {"action": "revoke_agents", "_selected_action": [builder[0].pk]}, follow=True
    )
    assert "Revoked 0 agent(s)" in response.content.decode()
    assert Agent.objects.get().revoked_at == revoked_at


def test_the_revoke_button_on_the_agent_page_revokes_it(alice_client, builder):
    agent, token = builder
    page = alice_client.get(change_url(agent)).content.decode()
    assert 'name="_revoke"' in page
    response = alice_client.post(change_url(agent), {"_revoke": "Revoke"}, follow=True)
    assert response.status_code == 200
    assert "its token no longer works" in response.content.decode()
    assert agent_authenticate(token) is None
    assert 'name="_revoke"' not in alice_client.get(change_url(agent)).content.decode()


def test_staff_change_capabilities_type_and_phase_through_the_service(alice_client, builder, phase):
    agent = builder[0]
    response = alice_client.post(
        change_url(agent),
        {
            "name": "renamed",
            "status": "busy",
            "agent_type": "tester",
            "phase": phase("PHASE_TESTING").pk,
            "capabilities": "qa, python, qa",
        },
    )
    assert response.status_code == 302, form_errors(response)
    agent.refresh_from_db()
    assert (agent.name, agent.status, agent.agent_type, agent.phase.key, agent.capabilities) == (
        "builder",  # read-only: the name labels its history, the status is the agent's own report
        "idle",
        "tester",
        "PHASE_TESTING",
        ["qa", "python"],
    )
    event = Event.objects.get(type="agent.updated")
    assert event.actor == "alice"
    assert event.payload == {"agent_type": "tester", "phase": "PHASE_TESTING", "capabilities": ["qa", "python"]}


def test_saving_the_agent_page_unchanged_writes_nothing(alice_client, builder):
    agent = builder[0]
    before = Agent.objects.values().get()
    events = Event.objects.count()
    response = alice_client.post(change_url(agent), {"agent_type": "worker", "phase": "", "capabilities": "python"})
    assert response.status_code == 302
    assert Agent.objects.values().get() == before
    assert Event.objects.count() == events


def test_the_agent_page_refuses_bad_capabilities_and_saves_nothing(alice_client, builder):
    agent = builder[0]
    before = Agent.objects.values().get()
    response = alice_client.post(change_url(agent), {"agent_type": "worker", "phase": "", "capabilities": "ok,,bad"})
    assert response.status_code == 200
    assert any("Each capability is a name" in error for error in form_errors(response)["capabilities"])
    assert Agent.objects.values().get() == before
    assert not Event.objects.filter(type="agent.updated").exists()


def test_the_phase_choices_are_those_of_the_agents_boards(alice_client, builder, board):
    load(SMALL)
    choices = alice_client.get(change_url(builder[0])).context["adminform"].form.fields["phase"].queryset
    assert {phase.workflow_id for phase in choices} == {board.workflow_id}


def test_a_revoked_agent_cannot_be_changed(alice_client, builder, alice):
    agent = builder[0]
    agent_revoke(agent=agent, actor=alice)
    response = alice_client.post(change_url(agent), {"agent_type": "x", "capabilities": "deploy"})
    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.agent_type, agent.capabilities) == ("worker", ["python"])


def test_agents_cannot_be_deleted(alice_client, builder):
    assert alice_client.get(reverse("admin:board_agent_delete", args=[builder[0].pk])).status_code == 403
    assert Agent.objects.exists()


# Tasks and comments


def test_tasks_are_listed_filtered_and_searched_but_not_edited(alice_client, task, board, alice, builder):
    ticket = task.ticket
    task_create(ticket=ticket, title="Review the design", actor=alice, phase="PHASE_DESIGN")
    task_claim(agent=builder[0])
    url = reverse("admin:board_task_changelist")
    assert [t.title for t in alice_client.get(url + "?status__exact=assigned").context["cl"].result_list] == [
        "Write the code"
    ]
    design = ticket.board.workflow.phases.get(key="PHASE_DESIGN")
    by_phase = alice_client.get(url + f"?phase__id__exact={design.pk}").context["cl"].result_list
    assert [t.title for t in by_phase] == ["Review the design"]
    assert [t.title for t in alice_client.get(url + "?q=review").context["cl"].result_list] == ["Review the design"]

    assert alice_client.get(reverse("admin:board_task_add")).status_code == 403
    page = alice_client.get(reverse("admin:board_task_change", args=[task.pk])).content.decode()
    assert 'name="_save"' not in page
    alice_client.post(reverse("admin:board_task_change", args=[task.pk]), {"title": "Changed", "status": "completed"})
    task.refresh_from_db()
    assert (task.title, task.status) == ("Write the code", "assigned")
    assert alice_client.post(reverse("admin:board_task_delete", args=[task.pk])).status_code == 403
    assert Task.objects.count() == 2


def test_the_task_list_costs_the_same_queries_with_more_tasks(alice_client, task, alice, builder):
    def queries():
        with CaptureQueriesContext(connection) as captured:
            assert alice_client.get(reverse("admin:board_task_changelist")).status_code == 200
        return len(captured)

    few = queries()
    for n in range(10):
        task_create(ticket=task.ticket, title=f"Task {n}", actor=alice, phase="PHASE_DESIGN")
    task_claim(agent=builder[0])
    assert queries() == few


def test_comments_are_read_only_and_shown_as_text(alice_client, task, builder):
    comment = ticket_comment(ticket=task.ticket, body="<script>alert(1)</script>", actor=builder[0])
    html = alice_client.get(reverse("admin:board_ticketcomment_changelist")).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)</script>" not in html
    assert alice_client.get(reverse("admin:board_ticketcomment_add")).status_code == 403
    url = reverse("admin:board_ticketcomment_change", args=[comment.pk])
    alice_client.post(url, {"body": "changed"})
    assert TicketComment.objects.get().body == "<script>alert(1)</script>"
