"""Ticket results: an agent submits, staff review on the ticket page, the orchestrator applies an accepted one once."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from board.errors import Refused
from board.events import ORCHESTRATOR
from board.models import Agent, Event, PhaseHistory, Task, Ticket, TicketResult
from board.orchestration.tickets import apply_results
from board.services import (
    agent_create,
    task_claim,
    task_complete,
    task_create,
    ticket_create,
    ticket_result_apply,
    ticket_result_review,
    ticket_result_submit,
    ticket_transition,
)
from phases.models import Workflow

from .agent_api import messages_of, row_counts
from .gate_samples import NOW, gated_board

pytestmark = pytest.mark.django_db


@pytest.fixture
def gated(alice, bob):
    board = gated_board(alice, bob)
    Workflow.objects.filter(pk=board.workflow_id).update(
        has_result=True, result_criteria=["Answers the question"], on_result_found="stop_all"
    )
    board.workflow.refresh_from_db()
    return board


@pytest.fixture
def scout(gated, alice):
    """An agent on the gated board: (agent, token)."""
    return agent_create(name="scout", boards=[gated], actor=alice)


@pytest.fixture
def ticket(gated, alice):
    return ticket_create(board=gated, title="Find the answer", actor=alice, phase="PHASE_BUILD")


@pytest.fixture
def submitted(ticket, scout):
    return ticket_result_submit(ticket=ticket, agent=scout[0], summary="It is 42.", artifacts=[{"type": "note"}])


def set_outcome(board, on_result_found):
    Workflow.objects.filter(pk=board.workflow_id).update(on_result_found=on_result_found)


# Submitting


def test_an_agent_submits_a_result(ticket, scout):
    result = ticket_result_submit(
        ticket=ticket, agent=scout[0], summary="  It is 42. ", artifacts=[{"type": "document", "path": "a.md"}]
    )
    assert (result.summary, result.status, result.submitted_by, result.applied_at) == (
        "It is 42.",
        "submitted",
        scout[0],
        None,
    )
    event = Event.objects.get(type="ticket.result_submitted")
    assert (event.entity_type, event.entity_id, event.actor) == ("ticket", str(ticket.pk), "agent:scout")
    assert event.payload == {"result": result.pk, "status": "submitted", "phase": "PHASE_BUILD", "summary": "It is 42."}


def test_a_workflow_without_results_refuses_them(ticket, scout):
    Workflow.objects.filter(pk=ticket.board.workflow_id).update(has_result=False)
    with pytest.raises(Refused, match="Workflow Gated takes no ticket results") as refused:
        ticket_result_submit(ticket=ticket, agent=scout[0], summary="It is 42.")
    assert refused.value.status == 409
    assert not TicketResult.objects.exists()


@pytest.mark.parametrize("key", ["PHASE_DONE", "PHASE_BLOCKED"])
def test_a_ticket_in_a_terminal_phase_takes_no_result(gated, scout, alice, key):
    ticket = ticket_create(board=gated, title="Over", actor=alice, phase=key)
    with pytest.raises(Refused, match="a terminal phase: its work is over"):
        ticket_result_submit(ticket=ticket, agent=scout[0], summary="Late")
    assert not TicketResult.objects.exists()


@pytest.mark.parametrize(
    ("summary", "artifacts", "field"),
    [
        ("   ", [], "summary"),
        ("x" * 20001, [], "summary"),
        ("Fine", "a.md", "artifacts"),
        ("Fine", [{}] * 101, "artifacts"),
    ],
)
def test_bad_input_is_refused_and_saves_nothing(ticket, scout, summary, artifacts, field):
    with pytest.raises(ValidationError) as invalid:
        ticket_result_submit(ticket=ticket, agent=scout[0], summary=summary, artifacts=artifacts)
    assert field in invalid.value.message_dict
    assert not TicketResult.objects.exists() and not Event.objects.filter(type__startswith="ticket.result").exists()


def test_an_agent_of_another_board_may_not_submit(ticket, builder):
    with pytest.raises(PermissionDenied):
        ticket_result_submit(ticket=ticket, agent=builder[0], summary="Not mine")


# Reviewing


def test_staff_accept_a_submitted_result(submitted, alice):
    result = ticket_result_review(result=submitted, user=alice, accept=True, note="")
    assert (result.status, result.reviewed_by, result.review_note) == ("accepted", alice, "")
    assert result.reviewed_at is not None and result.applied_at is None
    event = Event.objects.get(type="ticket.result_reviewed")
    assert (event.actor, event.payload["status"], event.payload["result"]) == ("alice", "accepted", submitted.pk)


def test_a_rejection_says_why(submitted, alice):
    with pytest.raises(ValidationError, match="Say why the result is rejected."):
        ticket_result_review(result=submitted, user=alice, accept=False, note="  ")
    result = ticket_result_review(result=submitted, user=alice, accept=False, note="Not 42 here")
    assert (result.status, result.review_note) == ("rejected", "Not 42 here")


def test_only_staff_review(submitted, bob):
    with pytest.raises(PermissionDenied, match="Only staff review ticket results."):
        ticket_result_review(result=submitted, user=bob, accept=True, note="")
    submitted.refresh_from_db()
    assert submitted.status == "submitted"


def test_a_result_is_reviewed_once(submitted, alice):
    ticket_result_review(result=submitted, user=alice, accept=False, note="No")
    with pytest.raises(Refused, match="This result was already rejected; only a submitted result can be reviewed."):
        ticket_result_review(result=submitted, user=alice, accept=True, note="")
    submitted.refresh_from_db()
    assert submitted.status == "rejected"
    assert Event.objects.filter(type="ticket.result_reviewed").count() == 1


# Applying


@pytest.fixture
def busy(ticket, scout, alice):
    """Open work on the ticket: one task held by Scout, one pending, one completed."""
    done = task_create(ticket=ticket, title="Done already", actor=alice)
    task_claim(agent=scout[0])
    task_complete(task=done, agent=scout[0])
    held = task_create(ticket=ticket, title="Held", actor=alice)
    task_claim(agent=scout[0])
    pending = task_create(ticket=ticket, title="Pending", actor=alice, phase="PHASE_CHECK")
    return done, held, pending


def test_an_accepted_result_stops_all_work_on_the_ticket(submitted, busy, alice, scout):
    done, held, pending = busy
    ticket_result_review(result=submitted, user=alice, accept=True, note="")
    assert Agent.objects.get(pk=scout[0].pk).status == "busy"
    assert ticket_result_apply(result=submitted, actor=ORCHESTRATOR, now=NOW) is True
    ticket = Ticket.objects.get(pk=submitted.ticket_id)
    assert ticket.phase.key == "PHASE_DONE"
    entry = PhaseHistory.objects.filter(ticket=ticket).latest("id")
    assert (entry.kind, entry.reason, entry.actor) == ("jump", "Result accepted: stop all", "orchestrator")
    statuses = dict(Task.objects.values_list("title", "status"))
    assert statuses == {"Done already": "completed", "Held": "cancelled", "Pending": "cancelled"}
    assert Task.objects.get(pk=held.pk).finished_at == NOW
    cancelled = Event.objects.filter(type="task.cancelled").order_by("id")
    assert [e.entity_id for e in cancelled] == [str(held.pk), str(pending.pk)]
    assert cancelled[0].payload["reason"] == "Result accepted: stop all" and cancelled[0].actor == "orchestrator"
    assert Agent.objects.get(pk=scout[0].pk).status == "idle"
    submitted.refresh_from_db()
    assert submitted.applied_at == NOW


def test_an_accepted_result_is_applied_once(submitted, busy, alice):
    ticket_result_review(result=submitted, user=alice, accept=True, note="")
    assert ticket_result_apply(result=submitted, actor=ORCHESTRATOR, now=NOW) is True
    before = row_counts()
    assert ticket_result_apply(result=submitted, actor=ORCHESTRATOR, now=NOW) is False
    assert apply_results(now=NOW, batch=10) is False
    assert row_counts() == before


def test_results_not_accepted_are_not_applied(submitted, alice):
    assert ticket_result_apply(result=submitted, actor=ORCHESTRATOR, now=NOW) is False
    ticket_result_review(result=submitted, user=alice, accept=False, note="No")
    assert apply_results(now=NOW, batch=10) is False
    submitted.refresh_from_db()
    assert submitted.applied_at is None


def test_with_do_nothing_an_accepted_result_is_only_marked_applied(submitted, busy, alice):
    set_outcome(submitted.ticket.board, "do_nothing")
    ticket_result_review(result=submitted, user=alice, accept=True, note="")
    before = row_counts()
    assert apply_results(now=NOW, batch=10) is True
    assert row_counts() == before
    submitted.refresh_from_db()
    assert submitted.applied_at == NOW
    assert Ticket.objects.get(pk=submitted.ticket_id).phase.key == "PHASE_BUILD"
    assert Task.objects.filter(status="cancelled").count() == 0


def test_a_blocked_ticket_whose_result_is_accepted_goes_to_done(submitted, alice):
    ticket_transition(ticket=submitted.ticket, to_phase="PHASE_BLOCKED", actor=alice)
    ticket_result_review(result=submitted, user=alice, accept=True, note="")
    apply_results(now=NOW, batch=10)
    assert Ticket.objects.get(pk=submitted.ticket_id).phase.key == "PHASE_DONE"


def test_the_step_applies_accepted_results_a_batch_at_a_time(gated, scout, alice):
    results = []
    for n in range(3):
        ticket = ticket_create(board=gated, title=f"T{n}", actor=alice, phase="PHASE_BUILD")
        result = ticket_result_submit(ticket=ticket, agent=scout[0], summary=f"Answer {n}")
        results.append(ticket_result_review(result=result, user=alice, accept=True, note=""))
    assert apply_results(now=NOW, batch=2) is True
    assert TicketResult.objects.filter(applied_at__isnull=False).count() == 2
    assert apply_results(now=NOW, batch=2) is True
    assert apply_results(now=NOW, batch=2) is False
    assert set(Ticket.objects.values_list("phase__key", flat=True)) == {"PHASE_DONE"}


# The ticket page


def page(client, result):
    return client.get(reverse("board:ticket", args=[result.ticket.board.slug, result.ticket_id])).content.decode()


def review_url(result):
    return reverse("board:result-review", args=[result.ticket.board.slug, result.ticket_id, result.pk])


def test_the_ticket_page_lists_results_with_review_buttons_for_staff(submitted, alice_client):
    html = page(alice_client, submitted)
    assert f'id="result-{submitted.pk}"' in html and "It is 42." in html and "submitted by scout" in html
    assert "Answers the question" in html
    assert f'action="{review_url(submitted)}"' in html
    assert 'name="decision" value="accept"' in html and 'name="decision" value="reject"' in html
    assert "csrfmiddlewaretoken" in html


def test_members_see_results_without_review_buttons(submitted, client, bob):
    client.force_login(bob)
    html = page(client, submitted)
    assert "It is 42." in html and review_url(submitted) not in html


def test_staff_accept_from_the_ticket_page(submitted, alice_client):
    response = alice_client.post(review_url(submitted), {"decision": "accept", "note": "Good"}, follow=True)
    assert "Result accepted." in response.content.decode()
    submitted.refresh_from_db()
    assert (submitted.status, submitted.review_note) == ("accepted", "Good")
    assert "Reviewed by alice: <q>Good</q>" in response.content.decode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"decision": "reject", "note": ""}, "Say why the result is rejected."),
        ({"decision": "maybe"}, "Select a valid choice. maybe is not one of the available choices."),
        ({}, "This field is required."),
    ],
)
def test_a_refused_review_on_the_page_says_why(submitted, alice_client, data, message):
    response = alice_client.post(review_url(submitted), data, follow=True)
    assert message in response.content.decode()
    submitted.refresh_from_db()
    assert submitted.status == "submitted"


def test_a_member_reviewing_is_told_only_staff_may(submitted, client, bob):
    client.force_login(bob)
    response = client.post(review_url(submitted), {"decision": "accept"}, follow=True)
    assert "Only staff review ticket results." in response.content.decode()
    submitted.refresh_from_db()
    assert submitted.status == "submitted"


def test_reviewing_twice_on_the_page_says_it_was_reviewed(submitted, alice_client):
    alice_client.post(review_url(submitted), {"decision": "reject", "note": "No"})
    response = alice_client.post(review_url(submitted), {"decision": "accept"}, follow=True)
    assert "This result was already rejected" in response.content.decode()


def test_an_outsider_cannot_review(submitted, client, charlie):
    client.force_login(charlie)
    assert client.post(review_url(submitted), {"decision": "accept"}).status_code == 404


def test_reviewing_needs_a_post(submitted, alice_client):
    assert alice_client.get(review_url(submitted)).status_code == 405


# The API


def test_the_api_takes_a_result(ticket, scout, client):
    from .agent_api import AgentClient

    api = AgentClient(client, scout[1])
    body = {"summary": "It is 42.", "artifacts": [{"type": "document", "path": "docs/answer.md"}]}
    response = api.post(f"/tickets/{ticket.pk}/result", body)
    assert response.status_code == 201
    answer = response.json()
    assert answer["ticket_id"] == ticket.pk and answer["status"] == "submitted" and answer["submitted_by"] == "scout"
    assert answer["artifacts"] == body["artifacts"] and answer["review_note"] == ""


def test_the_api_refuses_a_result_the_workflow_does_not_take(board, alice, api):
    ticket = ticket_create(board=board, title="No results here", actor=alice)
    response = api.post(f"/tickets/{ticket.pk}/result", {"summary": "It is 42."})
    assert response.status_code == 409
    assert messages_of(response) == ["Workflow Software Development takes no ticket results (has_result is off)."]


def test_the_api_does_not_find_another_boards_ticket(ticket, api):
    response = api.post(f"/tickets/{ticket.pk}/result", {"summary": "It is 42."})
    assert response.status_code == 404
    assert not TicketResult.objects.exists()


@pytest.mark.parametrize("body", [{"summary": "   "}, {}, {"summary": "Ok", "artifacts": "a.md"}, {"summary": 4}])
def test_the_api_refuses_a_bad_result(ticket, scout, client, body):
    from .agent_api import AgentClient

    response = AgentClient(client, scout[1]).post(f"/tickets/{ticket.pk}/result", body)
    assert response.status_code == 422
    assert not TicketResult.objects.exists()
