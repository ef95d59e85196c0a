"""The ticket pages: the ticket with its gate, side panel, activity and phase change; creating and editing."""

import re

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


def test_the_detail_page_shows_the_ticket_its_checklist_and_activity_in_words(bob_client, ticket, alice, phase):
    ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=alice, reason="Ready to analyse")
    ticket_update(ticket=ticket, actor=alice, priority="HIGH")
    response = bob_client.get(detail_url(ticket))
    assert response.status_code == 200
    html = response.content.decode()
    assert "Single sign-on" in html
    assert "Use the &lt;b&gt;directory&lt;/b&gt;." in html  # raw HTML is shown as the text it is
    for criterion in phase("PHASE_REQUIREMENTS").done_definitions:
        assert f"☐</span> {escape(criterion)}" in html
    assert "<strong>alice</strong> moved it from Backlog to Requirements Analysis" in html
    assert "<q>Ready to analyse</q>" in html
    assert "<strong>alice</strong> changed the priority from Medium to High" in html
    assert "<strong>alice</strong> created the ticket in Backlog" in html
    assert "ticket.transitioned" not in html.replace('data-type="ticket.transitioned"', "")


def test_the_side_panel_shows_phase_gate_priority_blocked_agent_dates_and_links(bob_client, ticket, alice, board):
    from board.services import agent_create, task_claim, task_create

    ticket = ticket_update(ticket=ticket, actor=alice, is_blocked=True, blocked_reason="Waiting for <IT>")
    agent = agent_create(name="demo-agent-2", boards=[board], actor=alice)[0]
    task_create(ticket=ticket, title="Write the tests", actor=alice)
    task_claim(agent=agent, board=board)
    html = bob_client.get(detail_url(ticket)).content.decode()
    side = html[html.index('<aside class="ticket-side') :]
    assert "<dt>Phase</dt>" in side and "<strong>Backlog</strong>" in side
    assert '<span class="chip chip-prio-medium">Medium</span>' in side
    assert '<span class="chip chip-danger">Blocked</span> Waiting for &lt;IT&gt;' in side
    assert "<dt>Agent</dt>\n            <dd>demo-agent-2</dd>" in side
    assert "by alice" in side and "<dt>Updated</dt>" in side
    assert f'href="{reverse("board:ticket-edit", args=[board.slug, ticket.pk])}"' in side
    assert f'href="{reverse("discoveries:ticket-graph", args=[board.slug, ticket.pk])}"' in side
    assert f'href="{reverse("board:detail", args=[board.slug])}#ticket-{ticket.pk}"' in side
    assert "<strong>demo-agent-2</strong> claimed task “Write the tests”" in html


def test_the_description_is_markdown_with_nothing_that_runs(bob_client, ticket, alice):
    description = (
        "## Plan\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```\n<b>code</b>\n```\n\n"
        "<script>alert(1)</script><img src=x onerror=alert(2)> [link](javascript:alert(3)) "
        '<a href="https://example.org" onclick="alert(4)">raw</a> [web](https://example.org)'
    )
    ticket_update(ticket=ticket, actor=alice, description=description)
    html = bob_client.get(detail_url(ticket)).content.decode()
    assert "<h2>Plan</h2>" in html and "<td>1</td>" in html and "&lt;b&gt;code&lt;/b&gt;" in html
    tags = "".join(re.findall(r"<[^>]*>", html))  # the markup alone: escaped text holds no "<"
    for bad in ("<script>", "onerror", "javascript:", "onclick", "<img"):
        assert bad not in tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">web</a>' in html


def test_the_detail_page_shows_overrides_in_the_activity(alice_client, ticket, alice):
    ticket_transition(ticket=ticket, to_phase="PHASE_DONE", actor=alice, reason="Shipped elsewhere", force=True)
    html = alice_client.get(detail_url(ticket)).content.decode()
    assert "moved it from Backlog to Done, overriding the workflow as staff" in html
    assert "<q>Shipped elsewhere</q>" in html


def test_the_detail_page_costs_the_same_queries_with_a_long_history(bob_client, ticket, alice):
    from board.models import Task, TicketResult
    from board.services import task_create, ticket_comment
    from discoveries.services import discovery_record

    def count():
        with CaptureQueriesContext(connection) as queries:
            assert bob_client.get(detail_url(ticket)).status_code == 200
        return len(queries)

    task_create(ticket=ticket, title="First", actor=alice)  # with no task at all, their discoveries are not read
    few = count()
    for key in ["PHASE_BLOCKED", "PHASE_BACKLOG", "PHASE_REQUIREMENTS", "PHASE_DESIGN"]:
        ticket_transition(ticket=ticket, to_phase=key, actor=alice)
        ticket_update(ticket=ticket, actor=alice, title=f"Title in {key}")
        ticket_comment(ticket=ticket, body=f"Comment in {key}", actor=alice)
        # Tasks of every state, with what they reported, and results: the gate panel reads all of them.
        for status in (Task.Status.COMPLETED, Task.Status.FAILED, Task.Status.PENDING):
            task = task_create(ticket=ticket, title=f"{status} in {key}", actor=alice)
            discovery_record(source_task=task, discovery_type="bug", description=f"Bug in {key}", actor=alice)
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
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, not run
    assert f"☑</span> {escape(first_criterion)}" in html
    assert html.count("☐</span>") == len(ticket.phase.done_definitions) - 1
    assert Task.objects.count() == 2


# Changing the phase from the ticket page


def phase_url(ticket):
    return reverse("board:ticket-phase", args=[ticket.board.slug, ticket.pk])


def snapshot(ticket):
    """What a refused phase change must leave as it was."""
    from board.models import PhaseHistory

    ticket.refresh_from_db()
    return (ticket.phase_id, ticket.version, ticket.position, PhaseHistory.objects.count(), Event.objects.count())


def test_a_member_is_offered_only_the_allowed_phases(bob_client, ticket, phase):
    html = bob_client.get(detail_url(ticket)).content.decode()
    form = html[html.index('id="phase-change"') : html.index("</form>", html.index('id="phase-change"'))]
    offered = [name for name in ("Requirements Analysis", "Blocked", "Design", "Done") if f">{name}</option>" in form]
    assert offered == ["Requirements Analysis", "Blocked"]
    assert "Staff override" not in form and 'name="force"' not in form


def test_staff_are_offered_every_phase_with_why_it_needs_forcing(alice_client, board, alice):
    testing = ticket_create(board=board, title="Tested", actor=alice, phase="PHASE_TESTING")
    for n in range(3):
        ticket_create(board=board, title=f"Ship {n}", actor=alice, phase="PHASE_DEPLOYMENT")
    html = alice_client.get(detail_url(testing)).content.decode()
    form = html[html.index('id="phase-change"') : html.index("</form>", html.index('id="phase-change"'))]
    assert ">Implementation</option>" in form and ">Blocked</option>" in form
    assert "Staff override (needs a reason)" in form
    assert ">Deployment — Deploying is full (3/3)</option>" in form
    assert ">Design — not allowed from Testing</option>" in form
    assert 'name="force"' in form


def test_a_member_moves_the_ticket_to_an_allowed_phase(bob_client, ticket, phase):
    from board.models import PhaseHistory

    response = bob_client.post(phase_url(ticket), {"to_phase": phase("PHASE_REQUIREMENTS").pk, "reason": "Groomed"})
    assert response.status_code == 302
    assert response["Location"] == detail_url(ticket)
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_REQUIREMENTS"
    entry = PhaseHistory.objects.latest("id")
    assert (entry.from_key, entry.to_key, entry.kind, entry.reason, entry.actor) == (
        "PHASE_BACKLOG",
        "PHASE_REQUIREMENTS",
        "normal",
        "Groomed",
        "bob",
    )
    html = bob_client.get(detail_url(ticket)).content.decode()
    assert "Moved “Single sign-on” from Backlog to Requirements Analysis." in html
    assert "<strong>bob</strong> moved it from Backlog to Requirements Analysis" in html


@pytest.mark.parametrize(
    ("target", "data", "status", "message"),
    [
        (
            "PHASE_DONE",
            {},
            409,
            "Backlog cannot move to Done; from Backlog a ticket may move to: Requirements Analysis",
        ),
        ("PHASE_DONE", {"force": "on", "reason": "Because"}, 409, "only staff may force it."),
        (None, {}, 422, "Choose the phase to move the ticket to."),
        (None, {"to_phase": "not a number"}, 422, "That phase is not one this ticket can be moved to"),
        (None, {"to_phase": "999999"}, 422, "That phase is not one this ticket can be moved to"),
        ("PHASE_BACKLOG", {}, 422, "That phase is not one this ticket can be moved to"),  # where it is
        ("PHASE_REQUIREMENTS", {"reason": "x" * 2001}, 422, "Ensure this value has at most 2000 characters"),
    ],
)
def test_a_refused_phase_change_says_why_and_changes_nothing(bob_client, ticket, phase, target, data, status, message):
    before = snapshot(ticket)
    if target:
        data = {"to_phase": phase(target).pk, **data}
    response = bob_client.post(phase_url(ticket), data)
    assert response.status_code == status
    html = response.content.decode()
    assert escape(message) in html
    assert 'role="alert"' in html
    assert snapshot(ticket) == before


def test_a_phase_of_another_workflow_cannot_be_moved_to(bob_client, ticket, review_board):
    before = snapshot(ticket)
    response = bob_client.post(phase_url(ticket), {"to_phase": review_board.workflow.phases.first().pk})
    assert response.status_code == 422
    assert snapshot(ticket) == before


def test_a_full_column_refuses_the_move_with_its_count(bob_client, board, alice, phase):
    testing = ticket_create(board=board, title="Tested", actor=alice, phase="PHASE_TESTING")
    for n in range(3):
        ticket_create(board=board, title=f"Ship {n}", actor=alice, phase="PHASE_DEPLOYMENT")
    before = snapshot(testing)
    response = bob_client.post(phase_url(testing), {"to_phase": phase("PHASE_DEPLOYMENT").pk})
    assert response.status_code == 409
    assert "Deploying is full (3/3)." in response.content.decode()
    assert snapshot(testing) == before


def test_staff_force_a_move_with_a_reason(alice_client, ticket, phase):
    from board.models import PhaseHistory

    before = snapshot(ticket)
    refused = alice_client.post(phase_url(ticket), {"to_phase": phase("PHASE_DONE").pk, "force": "on"})
    assert refused.status_code == 409
    assert "a forced move needs a written reason." in refused.content.decode()
    assert snapshot(ticket) == before

    response = alice_client.post(
        phase_url(ticket), {"to_phase": phase("PHASE_DONE").pk, "force": "on", "reason": "Shipped elsewhere"}
    )
    assert response.status_code == 302
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_DONE"
    assert PhaseHistory.objects.latest("id").kind == "override"


def test_staff_without_force_are_refused_like_anyone(alice_client, ticket, phase):
    before = snapshot(ticket)
    response = alice_client.post(phase_url(ticket), {"to_phase": phase("PHASE_DONE").pk, "reason": "Hmm"})
    assert response.status_code == 409
    html = response.content.decode()
    assert "Backlog cannot move to Done" in html
    assert 'name="force"' in html  # the override is offered on the refusal
    assert snapshot(ticket) == before


def test_an_outsider_cannot_change_the_phase(client, charlie, ticket, phase):
    client.force_login(charlie)
    before = snapshot(ticket)
    assert client.post(phase_url(ticket), {"to_phase": phase("PHASE_REQUIREMENTS").pk}).status_code == 404
    assert snapshot(ticket) == before


def test_the_phase_change_takes_only_a_logged_in_post(client, bob_client, ticket, phase):
    assert bob_client.get(phase_url(ticket)).status_code == 405
    bob_client.logout()
    response = client.post(phase_url(ticket), {"to_phase": phase("PHASE_REQUIREMENTS").pk})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_BACKLOG"


def test_a_ticket_of_another_board_cannot_be_moved_through_this_board(bob_client, review_board, phase):
    other = Ticket.objects.filter(board=review_board).first()
    url = reverse("board:ticket-phase", args=["alices-board", other.pk])
    assert bob_client.post(url, {"to_phase": phase("PHASE_REQUIREMENTS").pk}).status_code == 404


# The forms


def test_the_forms_say_the_description_is_markdown(bob_client, ticket):
    for url in (
        reverse("board:ticket-create", args=[ticket.board.slug]),
        reverse("board:ticket-edit", args=[ticket.board.slug, ticket.pk]),
    ):
        html = bob_client.get(url).content.decode()
        assert 'class="form panel panel-body ticket-form"' in html
        assert 'id="id_description_helptext"' in html and "Markdown:" in html
        assert 'aria-describedby="id_description_helptext"' in html
