"""The board admin: tickets change only through the ticket services; history and events are read-only."""

import pytest
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from board.models import Event, PhaseHistory, Ticket
from board.services import ticket_create
from phases.services import workflow_load
from phases.workflow_files import parse_workflow

from .admin_forms import change_data, errors_of

OTHER_WORKFLOW = """\
slug: other
name: Other
phases:
  - id: PHASE_ELSEWHERE
    name: Elsewhere
"""


@pytest.fixture
def board_ticket(board, alice):
    return ticket_create(board=board, title="Fix the login", actor=alice)


def ticket_url(ticket):
    return reverse("admin:board_ticket_change", args=[ticket.pk])


def edit_ticket(client, ticket, **changes):
    return client.post(ticket_url(ticket), change_data(client.get(ticket_url(ticket)), **changes))


def phase_of(ticket, key):
    return ticket.board.workflow.phases.get(key=key)


def test_every_board_page_renders(alice_client, board_ticket):
    history = board_ticket.history.get()
    event = Event.objects.get(type="ticket.created")
    urls = [
        reverse("admin:board_board_changelist"),
        reverse("admin:board_board_add"),
        reverse("admin:board_board_change", args=[board_ticket.board_id]),
        reverse("admin:board_ticket_changelist"),
        reverse("admin:board_ticket_changelist") + "?q=login&priority__exact=MEDIUM",
        reverse("admin:board_ticket_add"),
        ticket_url(board_ticket),
        reverse("admin:board_phasehistory_changelist"),
        reverse("admin:board_phasehistory_change", args=[history.pk]),
        reverse("admin:board_event_changelist"),
        reverse("admin:board_event_changelist") + f"?q={board_ticket.pk}&type__exact=ticket.created",
        reverse("admin:board_event_change", args=[event.pk]),
    ]
    for url in urls:
        assert alice_client.get(url).status_code == 200, url


@pytest.mark.parametrize("changelist", ["board_ticket", "board_event", "board_phasehistory"])
def test_changelists_query_the_same_for_more_rows(alice_client, board, alice, changelist):
    url = reverse(f"admin:{changelist}_changelist")
    ticket_create(board=board, title="First", actor=alice)
    with CaptureQueriesContext(connection) as few:
        assert alice_client.get(url).status_code == 200
    for number in range(5):
        ticket_create(board=board, title=f"More {number}", actor=alice)
    with CaptureQueriesContext(connection) as many:
        assert alice_client.get(url).status_code == 200

    assert len(many) == len(few)


def test_a_ticket_added_in_the_admin_goes_through_the_service(alice_client, board):
    response = alice_client.post(
        reverse("admin:board_ticket_add"),
        {
            "board": board.pk,
            "title": "  Add search  ",
            "description": "Users ask for it.",
            "priority": "HIGH",
            "_continue": "Save and continue editing",
        },
    )

    ticket = Ticket.objects.get()
    assert response.status_code == 302
    assert response["Location"].startswith(ticket_url(ticket))
    assert (ticket.title, ticket.priority, ticket.phase.key) == ("Add search", "HIGH", "PHASE_BACKLOG")
    assert ticket.created_by.username == "alice"
    event = Event.objects.get(type="ticket.created", entity_id=str(ticket.pk))
    assert (event.actor, event.payload["phase"]) == ("alice", "PHASE_BACKLOG")
    history = ticket.history.get()
    assert (history.from_key, history.to_key, history.actor) == ("", "PHASE_BACKLOG", "alice")


def test_a_ticket_added_in_a_chosen_phase(alice_client, board):
    design = board.workflow.phases.get(key="PHASE_DESIGN")

    alice_client.post(
        reverse("admin:board_ticket_add"),
        {"board": board.pk, "title": "Sketch", "priority": "LOW", "phase": design.pk},
    )

    assert Ticket.objects.get().phase == design


def test_a_ticket_cannot_be_added_in_another_workflows_phase(alice_client, board):
    elsewhere = workflow_load(definition=parse_workflow(OTHER_WORKFLOW)).workflow.phases.get()
    ContentType.objects.clear_cache()  # as in a new server process, where showing the form again reads them

    response = alice_client.post(
        reverse("admin:board_ticket_add"),
        {"board": board.pk, "title": "Lost", "priority": "LOW", "phase": elsewhere.pk},
    )

    assert response.status_code == 200
    assert errors_of(response)["phase"] == [f"Phase PHASE_ELSEWHERE belongs to another workflow than {board.workflow}."]
    assert not Ticket.objects.exists()
    assert not Event.objects.exists()


def test_ticket_edits_go_through_the_update_service(alice_client, board_ticket):
    response = edit_ticket(alice_client, board_ticket, title="Fix the login form", priority="CRITICAL")

    assert response.status_code == 302
    board_ticket.refresh_from_db()
    assert (board_ticket.title, board_ticket.priority, board_ticket.version) == ("Fix the login form", "CRITICAL", 2)
    event = Event.objects.get(type="ticket.updated")
    assert event.payload["changes"] == {
        "title": ["Fix the login", "Fix the login form"],
        "priority": ["MEDIUM", "CRITICAL"],
    }
    assert event.actor == "alice"


def test_a_service_refusal_is_shown_on_its_field(alice_client, board_ticket):
    response = edit_ticket(alice_client, board_ticket, is_blocked="on", blocked_reason="  ")

    assert response.status_code == 200
    assert errors_of(response)["blocked_reason"] == ["Say what blocks the ticket."]
    board_ticket.refresh_from_db()
    assert (board_ticket.is_blocked, board_ticket.version) == (False, 1)
    assert not Event.objects.filter(type="ticket.updated").exists()


def test_the_phase_is_read_only_and_moves_offer_the_workflows_phases(alice_client, board_ticket):
    form = alice_client.get(ticket_url(board_ticket)).context["adminform"].form

    assert "phase" not in form.fields
    assert set(form.fields["move_to_phase"].queryset) == set(
        board_ticket.board.workflow.phases.exclude(pk=board_ticket.phase_id)
    )
    # Posting a phase directly changes nothing: only a move does.
    design = phase_of(board_ticket, "PHASE_DESIGN")
    edit_ticket(alice_client, board_ticket, phase=design.pk)
    board_ticket.refresh_from_db()
    assert board_ticket.phase.key == "PHASE_BACKLOG"


def test_a_move_goes_through_the_transition_service(alice_client, board_ticket):
    requirements = phase_of(board_ticket, "PHASE_REQUIREMENTS")

    response = edit_ticket(alice_client, board_ticket, move_to_phase=requirements.pk, transition_reason="Triaged")

    assert response.status_code == 302
    board_ticket.refresh_from_db()
    assert board_ticket.phase == requirements
    history = board_ticket.history.latest("id")
    assert (history.from_key, history.to_key, history.kind, history.reason, history.actor) == (
        "PHASE_BACKLOG",
        "PHASE_REQUIREMENTS",
        PhaseHistory.Kind.NORMAL,
        "Triaged",
        "alice",
    )
    [event] = Event.objects.filter(type="ticket.transitioned")
    assert (event.payload["from"], event.payload["to"], event.actor) == ("PHASE_BACKLOG", "PHASE_REQUIREMENTS", "alice")


def test_a_refused_move_is_shown_and_changes_nothing(alice_client, board_ticket):
    done = phase_of(board_ticket, "PHASE_DONE")

    response = edit_ticket(alice_client, board_ticket, move_to_phase=done.pk, title="Renamed on the way")

    assert response.status_code == 200
    [message] = errors_of(response)["__all__"]
    assert message.startswith("Backlog cannot move to Done; from Backlog a ticket may move to: ")
    assert message in response.text
    board_ticket.refresh_from_db()
    assert (board_ticket.phase.key, board_ticket.title, board_ticket.version) == ("PHASE_BACKLOG", "Fix the login", 1)
    assert board_ticket.history.count() == 1
    assert list(Event.objects.values_list("type", flat=True)) == ["ticket.created"]


def test_a_form_shown_again_for_any_reason_leaves_nothing_written(alice_client, board_ticket):
    requirements = phase_of(board_ticket, "PHASE_REQUIREMENTS")
    data = change_data(alice_client.get(ticket_url(board_ticket)), title="Renamed", move_to_phase=requirements.pk)
    del data["history-TOTAL_FORMS"]  # a broken inline: the ticket form is valid, the page is not saved

    response = alice_client.post(ticket_url(board_ticket), data)

    assert response.status_code == 200
    board_ticket.refresh_from_db()
    assert (board_ticket.title, board_ticket.phase.key, board_ticket.version) == ("Fix the login", "PHASE_BACKLOG", 1)
    assert list(Event.objects.values_list("type", flat=True)) == ["ticket.created"]


def test_a_forced_move_needs_a_reason(alice_client, board_ticket):
    done = phase_of(board_ticket, "PHASE_DONE")

    response = edit_ticket(alice_client, board_ticket, move_to_phase=done.pk, force="on", transition_reason=" ")

    assert errors_of(response)["__all__"] == [
        "Backlog cannot move to Done; from Backlog a ticket may move to: Requirements Analysis, Blocked; "
        "a forced move needs a written reason."
    ]
    board_ticket.refresh_from_db()
    assert board_ticket.phase.key == "PHASE_BACKLOG"


def test_a_forced_move_by_staff_with_a_reason_is_an_override(alice_client, board_ticket):
    done = phase_of(board_ticket, "PHASE_DONE")

    response = edit_ticket(
        alice_client, board_ticket, move_to_phase=done.pk, force="on", transition_reason="Shipped by hand"
    )

    assert response.status_code == 302
    board_ticket.refresh_from_db()
    assert board_ticket.phase == done
    history = board_ticket.history.latest("id")
    assert (history.kind, history.reason, history.user.username) == (
        PhaseHistory.Kind.OVERRIDE,
        "Shipped by hand",
        "alice",
    )
    assert Event.objects.filter(type="ticket.transitioned").count() == 1


def test_the_ticket_page_shows_its_history_newest_first(alice_client, board_ticket, alice):
    from board.services import ticket_transition

    ticket_transition(ticket=board_ticket, to_phase="PHASE_REQUIREMENTS", actor=alice)
    ticket_transition(ticket=board_ticket, to_phase="PHASE_DESIGN", actor=alice)

    response = alice_client.get(ticket_url(board_ticket))

    [history] = response.context["inline_admin_formsets"]
    assert [form.instance.to_key for form in history.formset.forms] == [
        "PHASE_DESIGN",
        "PHASE_REQUIREMENTS",
        "PHASE_BACKLOG",
    ]
    assert not history.has_add_permission and not history.has_change_permission and not history.has_delete_permission


def test_tickets_are_not_deleted_in_the_admin(alice_client, board_ticket):
    response = alice_client.get(reverse("admin:board_ticket_delete", args=[board_ticket.pk]))

    assert response.status_code == 403
    assert Ticket.objects.filter(pk=board_ticket.pk).exists()


@pytest.mark.parametrize("model", ["event", "phasehistory"])
def test_the_logs_are_read_only(alice_client, board_ticket, model):
    row = (Event if model == "event" else PhaseHistory).objects.first()
    changelist = alice_client.get(reverse(f"admin:board_{model}_changelist"))

    assert reverse(f"admin:board_{model}_add") not in changelist.text
    assert "delete_selected" not in changelist.text
    assert alice_client.get(reverse(f"admin:board_{model}_add")).status_code == 403
    assert alice_client.get(reverse(f"admin:board_{model}_delete", args=[row.pk])).status_code == 403
    assert alice_client.post(reverse(f"admin:board_{model}_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    assert alice_client.post(reverse(f"admin:board_{model}_change", args=[row.pk]), {}).status_code == 403
    assert type(row).objects.filter(pk=row.pk).exists()


def test_the_event_payload_is_pretty_and_escaped(alice_client, board, alice):
    ticket_create(board=board, title="<b>bold</b>", actor=alice)
    event = Event.objects.get(type="ticket.created")

    response = alice_client.get(reverse("admin:board_event_change", args=[event.pk]))

    assert "<pre>{\n  &quot;phase&quot;: &quot;PHASE_BACKLOG&quot;," in response.text
    assert "&quot;title&quot;: &quot;&lt;b&gt;bold&lt;/b&gt;&quot;" in response.text


def test_events_are_searchable(alice_client, board_ticket, board, alice):
    other = ticket_create(board=board, title="Other", actor="orchestrator")
    url = reverse("admin:board_event_changelist")

    by_actor = alice_client.get(url, {"q": "orchestrator"}).context["cl"].result_list
    by_type = (
        alice_client.get(url, {"type__exact": "ticket.created", "q": str(board_ticket.pk)}).context["cl"].result_list
    )

    assert [event.entity_id for event in by_actor] == [str(other.pk)]
    assert [event.entity_id for event in by_type] == [str(board_ticket.pk)]


def test_a_boards_workflow_is_fixed_once_created(alice_client, board):
    form = alice_client.get(reverse("admin:board_board_change", args=[board.pk])).context["adminform"].form

    assert "workflow" not in form.fields
    assert "members" in form.fields
