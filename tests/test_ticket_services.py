"""The ticket services: creation, edits and the one transition service every path calls."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError

from board.events import ORCHESTRATOR, board_group
from board.models import Board, Event, PhaseHistory, Priority, Ticket
from board.services import POSITION_GAP, TransitionRefused, ticket_create, ticket_transition, ticket_update
from phases.models import Phase, Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Search across tickets", actor=alice)


def snapshot(ticket):
    ticket.refresh_from_db()
    return (ticket.phase_id, ticket.position, ticket.version, ticket.history.count(), Event.objects.count())


# ticket_create


def test_create_puts_the_ticket_in_the_first_phase_at_the_end_of_its_column(board, alice, phase):
    first = ticket_create(board=board, title="First", actor=alice)
    second = ticket_create(board=board, title="Second", actor=alice, priority=Priority.HIGH)
    assert first.phase == phase("PHASE_BACKLOG")
    assert second.position == first.position + POSITION_GAP
    assert second.priority == "HIGH"
    assert first.created_by == alice


def test_create_records_history_and_an_event(board, alice):
    ticket = ticket_create(board=board, title="  Trimmed  ", description="<b>kept as given</b>", actor=alice)
    assert ticket.title == "Trimmed"
    assert ticket.description == "<b>kept as given</b>"
    history = ticket.history.get()
    assert (history.from_key, history.to_key, history.actor, history.user) == ("", "PHASE_BACKLOG", "alice", alice)
    event = Event.objects.get(type="ticket.created")
    assert (event.board, event.entity_type, event.entity_id, event.actor) == (board, "ticket", str(ticket.pk), "alice")
    assert event.payload["phase"] == "PHASE_BACKLOG"


def test_create_in_a_given_phase_by_key(board, alice, phase):
    ticket = ticket_create(board=board, title="Straight to design", actor=alice, phase="PHASE_DESIGN")
    assert ticket.phase == phase("PHASE_DESIGN")


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"title": "   "}, "title", "cannot be blank"),
        ({"title": "x" * 201}, "title", "At most 200 characters"),
        ({"title": "ok", "priority": "URGENT"}, "priority", "Unknown priority 'URGENT'"),
        ({"title": "ok", "phase": "PHASE_NOWHERE"}, "phase", "Unknown phase 'PHASE_NOWHERE'"),
    ],
)
def test_create_refuses_bad_input_and_writes_nothing(board, alice, kwargs, field, message):
    with pytest.raises(ValidationError) as info:
        ticket_create(board=board, actor=alice, **kwargs)
    assert message in " ".join(info.value.message_dict[field])
    assert not Ticket.objects.exists()
    assert not Event.objects.exists()


def test_create_refuses_a_phase_of_another_workflow(board, alice):
    other = Workflow.objects.create(slug="other", name="Other")
    stranger = Phase.objects.create(workflow=other, key="PHASE_BACKLOG", name="Backlog")
    with pytest.raises(ValidationError, match="another workflow"):
        ticket_create(board=board, title="Nope", actor=alice, phase=stranger)


# ticket_update


def test_update_changes_fields_bumps_the_version_and_records_the_diff(ticket, bob):
    updated = ticket_update(ticket=ticket, actor=bob, title="Search everything", priority="CRITICAL")
    assert (updated.title, updated.priority, updated.version) == ("Search everything", "CRITICAL", 2)
    event = Event.objects.get(type="ticket.updated")
    assert event.payload["changes"] == {
        "title": ["Search across tickets", "Search everything"],
        "priority": ["MEDIUM", "CRITICAL"],
    }
    assert event.actor == "bob"


def test_update_without_changes_writes_nothing(ticket, bob):
    before = snapshot(ticket)
    ticket_update(ticket=ticket, actor=bob, title="Search across tickets")
    assert snapshot(ticket) == before


def test_blocking_needs_a_reason_and_unblocking_clears_it(ticket, bob):
    with pytest.raises(ValidationError, match="Say what blocks the ticket"):
        ticket_update(ticket=ticket, actor=bob, is_blocked=True)
    blocked = ticket_update(ticket=ticket, actor=bob, is_blocked=True, blocked_reason="Waiting for API keys")
    assert (blocked.is_blocked, blocked.blocked_reason) == (True, "Waiting for API keys")
    unblocked = ticket_update(ticket=ticket, actor=bob, is_blocked=False)
    assert (unblocked.is_blocked, unblocked.blocked_reason) == (False, "")


def test_update_refuses_the_phase_and_unknown_fields(ticket, bob):
    with pytest.raises(ValidationError) as info:
        ticket_update(ticket=ticket, actor=bob, phase="PHASE_DONE", board=None)
    assert set(info.value.message_dict) == {"board", "phase"}


# ticket_transition


def test_an_allowed_transition_moves_the_ticket_and_records_it(ticket, bob, phase):
    moved = ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
    assert moved.phase == phase("PHASE_REQUIREMENTS")
    assert moved.version == 2
    history = moved.history.last()
    assert (history.from_phase, history.to_phase) == (phase("PHASE_BACKLOG"), phase("PHASE_REQUIREMENTS"))
    assert (history.kind, history.actor, history.user) == ("normal", "bob", bob)
    event = Event.objects.get(type="ticket.transitioned")
    assert event.payload == {
        "from": "PHASE_BACKLOG",
        "to": "PHASE_REQUIREMENTS",
        "kind": "normal",
        "reason": "",
        "column": "analyzing",
        "position": moved.position,
        "previous_id": None,
        "next_id": None,
        "version": 2,
        "wip": {"column": "analyzing", "count": 1, "limit": 5, "policy": "warn"},
    }


def test_a_transition_into_a_column_with_cards_goes_after_the_last_and_counts_them(board, ticket, bob):
    # Analyzing shows Requirements and Design: the cards of both count, and the ticket goes after the last.
    there = [
        ticket_create(board=board, title="Spec the export", actor=bob, phase="PHASE_REQUIREMENTS"),
        ticket_create(board=board, title="Design the export", actor=bob, phase="PHASE_DESIGN"),
    ]
    moved = ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
    assert moved.position == max(card.position for card in there) + POSITION_GAP
    wip = Event.objects.filter(type="ticket.transitioned").get().payload["wip"]
    assert wip == {"column": "analyzing", "count": 3, "limit": 5, "policy": "warn"}


@pytest.mark.parametrize("shown", [True, False], ids=["from a phase with a column", "between phases without one"])
def test_a_transition_into_a_phase_no_column_shows_goes_after_its_last_ticket(board, ticket, bob, workflow, shown):
    """A hand-edited workflow may leave phases out of every column: the phase's own tickets are its column."""
    requirements = workflow.phases.get(key="PHASE_REQUIREMENTS")
    hidden = [requirements] if shown else [requirements, workflow.phases.get(key="PHASE_BACKLOG")]
    for column in workflow.columns.all():
        column.phases.remove(*hidden)
    there = ticket_create(board=board, title="Spec the export", actor=bob, phase="PHASE_REQUIREMENTS")
    after = ticket_create(board=board, title="Spec the import", actor=bob, phase="PHASE_REQUIREMENTS")
    assert after.position == there.position + POSITION_GAP
    there = after
    moved = ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
    assert (moved.phase, moved.position) == (requirements, there.position + POSITION_GAP)
    assert Ticket.objects.get(pk=ticket.pk).phase == requirements
    payload = Event.objects.filter(type="ticket.transitioned").get().payload
    assert (payload["column"], payload["from"], payload["to"]) == (None, "PHASE_BACKLOG", "PHASE_REQUIREMENTS")


def test_a_transition_not_allowed_is_refused_with_the_reason_and_changes_nothing(ticket, bob):
    before = snapshot(ticket)
    with pytest.raises(TransitionRefused) as info:
        ticket_transition(ticket=ticket, to_phase="PHASE_TESTING", actor=bob)
    assert str(info.value) == (
        "Backlog cannot move to Testing; from Backlog a ticket may move to: Requirements Analysis, Blocked."
    )
    assert snapshot(ticket) == before


def test_a_move_to_the_same_phase_is_refused(ticket, bob):
    with pytest.raises(TransitionRefused, match="already in Backlog"):
        ticket_transition(ticket=ticket, to_phase="PHASE_BACKLOG", actor=bob)


def test_an_unknown_phase_is_refused_and_changes_nothing(ticket, bob):
    before = snapshot(ticket)
    with pytest.raises(TransitionRefused, match="Unknown phase 'PHASE_QA' in workflow Software Development."):
        ticket_transition(ticket=ticket, to_phase="PHASE_QA", actor=bob)
    assert snapshot(ticket) == before


def test_a_phase_of_another_workflow_is_refused(ticket, bob):
    other = Workflow.objects.create(slug="other", name="Other")
    stranger = Phase.objects.create(workflow=other, key="PHASE_REQUIREMENTS", name="Requirements")
    with pytest.raises(TransitionRefused, match="another workflow"):
        ticket_transition(ticket=ticket, to_phase=stranger, actor=bob)


def test_staff_may_force_a_move_with_a_reason(ticket, alice, phase):
    moved = ticket_transition(ticket=ticket, to_phase="PHASE_TESTING", actor=alice, force=True, reason=" Hotfix ")
    assert moved.phase == phase("PHASE_TESTING")
    history = moved.history.last()
    assert (history.kind, history.reason, history.user) == ("override", "Hotfix", alice)
    assert Event.objects.get(type="ticket.transitioned").payload["kind"] == "override"


def test_a_forced_move_needs_a_reason(ticket, alice):
    before = snapshot(ticket)
    with pytest.raises(TransitionRefused, match="; a forced move needs a written reason."):
        ticket_transition(ticket=ticket, to_phase="PHASE_TESTING", actor=alice, force=True, reason="  ")
    assert snapshot(ticket) == before


def test_only_staff_may_force(ticket, bob):
    before = snapshot(ticket)
    with pytest.raises(TransitionRefused, match="; only staff may force it."):
        ticket_transition(ticket=ticket, to_phase="PHASE_TESTING", actor=bob, force=True, reason="Please")
    assert snapshot(ticket) == before


def test_a_system_process_forces_as_a_jump(ticket):
    moved = ticket_transition(ticket=ticket, to_phase="PHASE_DESIGN", actor=ORCHESTRATOR, force=True, reason="Stuck")
    history = moved.history.last()
    assert (history.kind, history.actor, history.user) == ("jump", "orchestrator", None)


@pytest.mark.parametrize("actor", ["orchestrator", "system"], ids=["a process's name", "any string"])
def test_a_name_is_not_a_system_actor_and_cannot_force(ticket, actor):
    before = snapshot(ticket)
    with pytest.raises(TransitionRefused, match=f"{actor} may not force"):
        ticket_transition(ticket=ticket, to_phase="PHASE_DESIGN", actor=actor, force=True, reason="Stuck")
    assert snapshot(ticket) == before


def test_a_real_agent_cannot_force(ticket, builder):
    with pytest.raises(TransitionRefused, match="agent:.* may not force"):
        ticket_transition(ticket=ticket, to_phase="PHASE_DESIGN", actor=builder[0], force=True, reason="Because")


def test_an_object_that_is_neither_a_user_nor_a_process_cannot_force(ticket):
    class Agent:
        actor_label = "agent:builder-1"

    with pytest.raises(TransitionRefused, match="agent:builder-1 may not force"):
        ticket_transition(ticket=ticket, to_phase="PHASE_DESIGN", actor=Agent(), force=True, reason="Because")


def test_force_is_not_needed_for_an_allowed_move(ticket, alice):
    moved = ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=alice, force=True, reason="x")
    assert moved.history.last().kind == "normal"


def test_a_move_to_another_column_goes_to_its_end(board, alice):
    waiting = ticket_create(board=board, title="Waiting", actor=alice, phase="PHASE_REQUIREMENTS")
    moved = ticket_transition(
        ticket=ticket_create(board=board, title="Mover", actor=alice), to_phase="PHASE_REQUIREMENTS", actor=alice
    )
    assert moved.position == waiting.position + POSITION_GAP


def test_a_move_within_one_column_keeps_the_position(board, alice):
    # Requirements and Design share the "analyzing" column.
    ticket = ticket_create(board=board, title="Analyse", actor=alice, phase="PHASE_REQUIREMENTS")
    ticket_create(board=board, title="Later", actor=alice, phase="PHASE_DESIGN")
    moved = ticket_transition(ticket=ticket, to_phase="PHASE_DESIGN", actor=alice)
    assert moved.position == ticket.position


def test_the_service_works_from_a_stale_copy(ticket, bob, alice):
    stale = Ticket.objects.get(pk=ticket.pk)
    ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
    # The stale copy still says Backlog; the service reads the row it locks.
    moved = ticket_transition(ticket=stale, to_phase="PHASE_DESIGN", actor=alice)
    assert moved.version == 3
    assert [h.to_key for h in moved.history.all()] == ["PHASE_BACKLOG", "PHASE_REQUIREMENTS", "PHASE_DESIGN"]


def test_history_outlives_the_phases_it_names(ticket, bob):
    ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
    PhaseHistory.objects.update(from_phase=None, to_phase=None)
    assert [str(h) for h in ticket.history.all()] == ["(new) → PHASE_BACKLOG", "PHASE_BACKLOG → PHASE_REQUIREMENTS"]


# events reach the board's channel group once committed


def test_events_are_broadcast_to_the_board_after_commit(ticket, bob, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(board_group(ticket.board_id), channel)
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
        assert len(callbacks) == 1  # nothing is sent before the transaction commits
        callbacks[0]()
        message = async_to_sync(layer.receive)(channel)
    finally:
        async_to_sync(layer.group_discard)(board_group(ticket.board_id), channel)
    event = Event.objects.get(type="ticket.transitioned")
    assert message["type"] == "board.event"
    assert message["event"]["id"] == event.pk
    assert message["event"]["payload"]["to"] == "PHASE_REQUIREMENTS"


def test_a_failed_broadcast_loses_nothing(ticket, bob, monkeypatch, django_capture_on_commit_callbacks):
    class BrokenLayer:
        async def group_send(self, group, message):
            raise ConnectionError("redis is down")

    monkeypatch.setattr("board.events.get_channel_layer", lambda: BrokenLayer())
    with django_capture_on_commit_callbacks(execute=True):
        ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=bob)
    assert Event.objects.filter(type="ticket.transitioned").exists()


def test_boards_are_visible_to_members_and_staff_only(board, alice, bob, charlie):
    assert list(Board.objects.visible_to(bob)) == [board]
    assert list(Board.objects.visible_to(alice)) == [board]
    assert list(Board.objects.visible_to(charlie)) == []
