"""The ticket pages: detail with history, checklist and activity; creating and editing with validation."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from board.models import Event, Ticket
from board.services import ticket_create, ticket_transition, ticket_update

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client, bob):
    client.force_login(bob)
    return client


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", description="Use the <b>directory</b>.", actor=alice)


def detail_url(ticket):
    return reverse("board:ticket", args=[ticket.board.slug, ticket.pk])


def test_the_detail_page_shows_the_ticket_its_history_checklist_and_activity(bob_client, ticket, alice, phase):
    ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=alice, reason="Ready to analyse")
    ticket_update(ticket=ticket, actor=alice, priority="HIGH")
    response = bob_client.get(detail_url(ticket))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Single sign-on" in html
    assert "Use the &lt;b&gt;directory&lt;/b&gt;." in html  # escaped, never rendered as markup
    assert "Backlog → <strong>Requirements Analysis</strong>" in html
    assert "<q>Ready to analyse</q>" in html
    for criterion in phase("PHASE_REQUIREMENTS").done_definitions:
        assert f"☐</span> {escape(criterion)}" in html
    assert "ticket.updated" in html and "priority: “MEDIUM” → “HIGH”" in html
    assert "ticket.transitioned" in html


def test_the_detail_page_shows_overrides_in_the_history(alice_client, ticket, alice):
    ticket_transition(ticket=ticket, to_phase="PHASE_DONE", actor=alice, reason="Shipped elsewhere", force=True)
    html = alice_client.get(detail_url(ticket)).content.decode()
    assert "Override (forced by staff)" in html


def test_the_detail_page_costs_the_same_queries_with_a_long_history(bob_client, ticket, alice):
    from board.models import Task, TicketResult
    from board.services import task_create

    def count():
        with CaptureQueriesContext(connection) as queries:
            assert bob_client.get(detail_url(ticket)).status_code == 200
        return len(queries)

    task_create(ticket=ticket, title="First", actor=alice)  # with no task at all, their discoveries are not read
    few = count()
    for key in ["PHASE_BLOCKED", "PHASE_BACKLOG", "PHASE_REQUIREMENTS", "PHASE_DESIGN"]:
        ticket_transition(ticket=ticket, to_phase=key, actor=alice)
        ticket_update(ticket=ticket, actor=alice, title=f"Title in {key}")
        # Tasks of every state, with what they reported, and results: the gate panel reads all of them.
        for status in (Task.Status.COMPLETED, Task.Status.FAILED, Task.Status.PENDING):
            task = task_create(ticket=ticket, title=f"{status} in {key}", actor=alice)
            Task.objects.filter(pk=task.pk).update(
                status=status, completed_criteria=["Anything"], artifacts=[{"type": "document", "path": "a.md"}]
            )
        TicketResult.objects.create(ticket=ticket, summary=f"Result in {key}")
    assert count() == few


def test_a_ticket_of_another_board_is_not_found_there(bob_client, review_board):
    other = Ticket.objects.filter(board=review_board).first()
    assert bob_client.get(reverse("board:ticket", args=["alices-board", other.pk])).status_code == 404


def test_a_member_creates_a_ticket(bob_client, board):
    url = reverse("board:ticket-create", args=[board.slug])
    assert bob_client.get(url).status_code == 200
    response = bob_client.post(url, {"title": "New work", "description": "Details", "priority": "HIGH", "phase": ""})
    ticket = Ticket.objects.get(title="New work")
    assert response.status_code == 302
    assert response["Location"] == detail_url(ticket)
    assert (ticket.phase.key, ticket.priority, ticket.created_by.username) == ("PHASE_BACKLOG", "HIGH", "bob")
    assert Event.objects.filter(type="ticket.created", entity_id=str(ticket.pk)).exists()


def test_creating_in_a_chosen_phase(bob_client, board, phase):
    url = reverse("board:ticket-create", args=[board.slug])
    bob_client.post(url, {"title": "Designed", "priority": "LOW", "phase": phase("PHASE_DESIGN").pk})
    assert Ticket.objects.get(title="Designed").phase.key == "PHASE_DESIGN"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"title": "", "priority": "LOW"}, "This field is required."),
        ({"title": "x" * 201, "priority": "LOW"}, "Ensure this value has at most 200 characters"),
        ({"title": "Ok", "priority": "URGENT"}, "Select a valid choice. URGENT is not one of the available choices."),
        ({"title": "Ok", "priority": "LOW", "phase": "999999"}, "Select a valid choice."),
    ],
)
def test_creating_with_bad_input_shows_the_errors_and_saves_nothing(bob_client, board, data, message):
    response = bob_client.post(reverse("board:ticket-create", args=[board.slug]), data)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Ticket.objects.exists()


def test_a_phase_of_another_workflow_cannot_be_chosen(bob_client, board, review_board):
    other_phase = review_board.workflow.phases.first()
    before = Ticket.objects.count()
    response = bob_client.post(
        reverse("board:ticket-create", args=[board.slug]), {"title": "Ok", "priority": "LOW", "phase": other_phase.pk}
    )
    assert response.status_code == 422
    assert Ticket.objects.count() == before


def test_creating_into_a_full_block_column_is_refused(bob_client, board, alice, phase):
    for n in range(3):
        ticket_create(board=board, title=f"Ship {n}", actor=alice, phase="PHASE_DEPLOYMENT")
    response = bob_client.post(
        reverse("board:ticket-create", args=[board.slug]),
        {"title": "One more", "priority": "LOW", "phase": phase("PHASE_DEPLOYMENT").pk},
    )
    assert response.status_code == 422
    assert "Deploying is full (3/3)." in response.content.decode()
    assert not Ticket.objects.filter(title="One more").exists()


def test_a_member_edits_a_ticket(bob_client, ticket):
    url = reverse("board:ticket-edit", args=[ticket.board.slug, ticket.pk])
    assert bob_client.get(url).status_code == 200
    response = bob_client.post(
        url,
        {
            "title": "Single sign-on v2",
            "description": "New text",
            "priority": "CRITICAL",
            "is_blocked": "on",
            "blocked_reason": "Waiting for IT",
        },
    )
    assert response.status_code == 302
    ticket.refresh_from_db()
    assert (ticket.title, ticket.priority, ticket.is_blocked, ticket.blocked_reason) == (
        "Single sign-on v2",
        "CRITICAL",
        True,
        "Waiting for IT",
    )
    event = Event.objects.filter(type="ticket.updated").get()
    assert event.actor == "bob"
    assert event.payload["phase"] == "PHASE_BACKLOG"


def test_blocking_without_a_reason_is_refused(bob_client, ticket):
    url = reverse("board:ticket-edit", args=[ticket.board.slug, ticket.pk])
    response = bob_client.post(url, {"title": "Single sign-on", "priority": "MEDIUM", "is_blocked": "on"})
    assert response.status_code == 422
    assert "Say what blocks the ticket." in response.content.decode()
    ticket.refresh_from_db()
    assert not ticket.is_blocked


def test_an_outsider_cannot_create_or_edit(client, charlie, ticket):
    client.force_login(charlie)
    assert client.post(reverse("board:ticket-create", args=[ticket.board.slug]), {"title": "x"}).status_code == 404
    edit = reverse("board:ticket-edit", args=[ticket.board.slug, ticket.pk])
    assert client.post(edit, {"title": "Hacked", "priority": "LOW"}).status_code == 404
    ticket.refresh_from_db()
    assert ticket.title == "Single sign-on"


def test_the_detail_page_lists_tasks_discoveries_comments_and_ticks_reported_criteria(bob_client, ticket, alice):
    from board.models import Task
    from board.services import agent_create, task_claim, task_complete, task_create, ticket_comment
    from discoveries.models import Discovery

    agent = agent_create(name="scribe", boards=[ticket.board], actor=alice)[0]
    first_criterion = ticket.phase.done_definitions[0]
    task = task_create(ticket=ticket, title="Groom <i>it</i>", actor=alice)
    task_claim(agent=agent)
    task_complete(task=task, agent=agent, completed_criteria=[first_criterion.upper()])
    task_create(ticket=ticket, title="Follow-up", actor=alice, phase="PHASE_TESTING", parent=task)
    Discovery.objects.create(source_task=task, discovery_type="bug", description="<b>Crash</b>", discovered_by="scribe")
    ticket_comment(ticket=ticket, body="<script>alert(1)</script>", actor=agent)

    html = bob_client.get(detail_url(ticket)).content.decode()
    assert "Groom &lt;i&gt;it&lt;/i&gt;" in html and "Follow-up" in html and "(from task #" in html
    assert "&lt;b&gt;Crash&lt;/b&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert f"☑</span> {escape(first_criterion)}" in html
    assert html.count("☐</span>") == len(ticket.phase.done_definitions) - 1
    assert Task.objects.count() == 2
