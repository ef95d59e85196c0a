"""Discoveries: recording, branching the work into one new task in any phase, resolving, and what each refuses."""

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

import discoveries.services as discovery_services
from board.events import event_emit
from board.models import Event, PhaseHistory, Task
from board.services import agent_create, task_claim, task_complete, task_create, ticket_create
from discoveries.models import Discovery
from discoveries.services import (
    METADATA_MAX_BYTES,
    DiscoveryStateError,
    discovery_branch,
    discovery_record,
    discovery_resolve,
)

pytestmark = pytest.mark.django_db

ALL_TYPES = [
    "bug",
    "optimization",
    "clarification_needed",
    "new_component",
    "security_issue",
    "performance_issue",
    "missing_requirement",
    "integration_issue",
    "technical_debt",
    "diagnostic_no_result",
]

METADATA = {
    "file": "src/auth/login.py",
    "lines": [12, 48],
    "nested": {"deeper": {"deepest": [1, 2.5, None, True, False, "", {}, []]}},
    "unicode": "Ünïcødé — 日本語 — 🚀",
    "<b>html</b>": "<script>alert(1)</script>",
    "big": 2**62,
    "zero": 0,
}


@pytest.fixture
def ticket(board, alice):
    return ticket_create(board=board, title="Single sign-on", actor=alice, phase="PHASE_TESTING")


@pytest.fixture
def agent(board, alice):
    return agent_create(name="tester", boards=[board], actor=alice)[0]


@pytest.fixture
def source(ticket, alice):
    return task_create(ticket=ticket, title="Run the login tests", actor=alice, phase="PHASE_TESTING")


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return {"deep": value}


def counts():
    return Discovery.objects.count(), Task.objects.count(), Event.objects.count()


# Recording


def test_recording_keeps_the_discovery_and_announces_it_on_the_board(source, agent, board):
    discovery = discovery_record(
        source_task=source, discovery_type="bug", description="Login fails with an empty password", actor=agent
    )
    discovery.refresh_from_db()
    assert discovery.source_task == source
    assert (discovery.discovery_type, discovery.resolution_status) == ("bug", "open")
    assert discovery.discovered_by == "agent:tester"
    assert discovery.discovered_at is not None
    assert list(discovery.spawned_tasks.all()) == []
    event = Event.objects.get(type="discovery.recorded")
    assert (event.board, event.entity_type, event.entity_id) == (board, "discovery", str(discovery.pk))
    assert event.payload["source_task"] == source.pk
    assert event.payload["phase"] == "PHASE_TESTING"
    assert event.payload["discovery_type"] == "bug"
    assert Task.objects.count() == 1  # recording alone does not branch


@pytest.mark.parametrize("discovery_type", ALL_TYPES)
def test_every_type_of_the_issue_can_be_recorded(source, agent, discovery_type):
    discovery = discovery_record(source_task=source, discovery_type=discovery_type, description="Found", actor=agent)
    assert discovery.discovery_type == discovery_type


def test_an_unknown_type_is_refused_with_the_list_of_valid_ones(source, agent):
    before = counts()
    with pytest.raises(ValidationError) as caught:
        discovery_record(source_task=source, discovery_type="bug_found", description="x", actor=agent)
    message = caught.value.message_dict["discovery_type"][0]
    assert "'bug_found'" in message
    assert all(name in message for name in ALL_TYPES)
    assert counts() == before


@pytest.mark.parametrize("description", ["", "   \n ", None, "x" * 20_001])
def test_a_blank_or_overlong_description_is_refused(source, agent, description):
    with pytest.raises(ValidationError) as caught:
        discovery_record(source_task=source, discovery_type="bug", description=description, actor=agent)
    assert "description" in caught.value.message_dict
    assert Discovery.objects.count() == 0


def test_the_description_is_stored_exactly_as_given(source, agent):
    text = "  <b>Crash</b> when the password is '' \n\n  second line\t"
    discovery = discovery_record(source_task=source, discovery_type="bug", description=text, actor=agent)
    discovery.refresh_from_db()
    assert discovery.description == text


def test_metadata_is_kept_exactly(source, agent):
    discovery = discovery_record(
        source_task=source, discovery_type="bug", description="x", actor=agent, metadata=METADATA
    )
    assert Discovery.objects.get(pk=discovery.pk).metadata == METADATA
    stored = Discovery.objects.get(pk=discovery.pk).metadata["nested"]["deeper"]["deepest"]
    assert [type(value) for value in stored] == [int, float, type(None), bool, bool, str, dict, list]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (["not", "an", "object"], "JSON object"),
        ({"blob": "x" * METADATA_MAX_BYTES}, "bytes of metadata"),
        (_nested(40), "nested at most"),
        ({"when": object()}, "plain JSON"),
    ],
)
def test_metadata_must_be_a_json_object_of_bounded_size(source, agent, metadata, message):
    with pytest.raises(ValidationError, match=message):
        discovery_record(source_task=source, discovery_type="bug", description="x", actor=agent, metadata=metadata)
    assert Discovery.objects.count() == 0


# Branching


def test_a_branch_spawns_exactly_one_task_in_any_phase_bypassing_the_allowed_transitions(source, agent, ticket):
    assert not source.phase.can_transition_to("PHASE_REQUIREMENTS")
    tasks_before, history_before = Task.objects.count(), PhaseHistory.objects.count()

    discovery, task = discovery_branch(
        source_task=source,
        discovery_type="missing_requirement",
        description="Nobody said what happens after three failed logins.",
        actor=agent,
        phase="PHASE_REQUIREMENTS",
        title="Decide the lock-out rule",
    )

    assert Task.objects.count() == tasks_before + 1
    assert list(discovery.spawned_tasks.all()) == [task]
    assert list(task.spawned_by.all()) == [discovery]
    task.refresh_from_db()
    assert task.phase.key == "PHASE_REQUIREMENTS"
    assert (task.ticket, task.parent) == (ticket, source)
    assert task.title == "Decide the lock-out rule"
    assert task.description == "Nobody said what happens after three failed logins."
    assert task.task_type == "discovery_missing_requirement"
    assert (task.status, task.created_by) == ("pending", "agent:tester")
    # The ticket itself does not move: only its work branched.
    ticket.refresh_from_db()
    assert ticket.phase.key == "PHASE_TESTING"
    assert PhaseHistory.objects.count() == history_before


def test_a_branch_writes_its_events_on_the_board_in_order(source, agent, board):
    first_new = (Event.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1
    discovery, task = discovery_branch(
        source_task=source, discovery_type="bug", description="Crash", actor=agent, phase="PHASE_IMPLEMENTATION"
    )
    events = list(Event.objects.filter(id__gte=first_new).order_by("id"))
    assert [event.type for event in events] == ["discovery.recorded", "task.created", "discovery.branch_created"]
    assert {event.board for event in events} == {board}
    created, branched = events[1], events[2]
    assert created.entity_id == str(task.pk)
    assert created.payload["discovery"] == discovery.pk
    assert created.payload["parent"] == source.pk
    assert branched.entity_id == str(discovery.pk)
    assert branched.payload["source_task"] == source.pk
    assert branched.payload["spawned_task"] == task.pk
    assert (branched.payload["from_phase"], branched.payload["spawn_phase"]) == (
        "PHASE_TESTING",
        "PHASE_IMPLEMENTATION",
    )


def test_a_branch_defaults_to_the_source_tasks_phase_and_a_title_from_the_description(source, agent):
    _, task = discovery_branch(
        source_task=source,
        discovery_type="performance_issue",
        description="  The login page takes 4 s\nProfile attached.",
        actor=agent,
    )
    assert task.phase == source.phase
    assert task.title == "Performance issue: The login page takes 4 s"


def test_the_spawned_task_may_have_its_own_description_and_required_capabilities(source, agent):
    _, task = discovery_branch(
        source_task=source,
        discovery_type="security_issue",
        description="SQL injection in the login form",
        actor=agent,
        task_description="Use parameterised queries",
        required_capabilities=["security", "python"],
    )
    assert task.description == "Use parameterised queries"
    assert task.required_capabilities == ["security", "python"]


@pytest.mark.parametrize(
    ("source_priority", "spawned_priority"),
    [("LOW", "MEDIUM"), ("MEDIUM", "HIGH"), ("HIGH", "CRITICAL"), ("CRITICAL", "CRITICAL")],
)
def test_a_priority_boost_puts_the_task_one_level_above_the_source(
    ticket, alice, agent, source_priority, spawned_priority
):
    source = task_create(ticket=ticket, title="Source", actor=alice, priority=source_priority)
    discovery, task = discovery_branch(
        source_task=source, discovery_type="bug", description="x", actor=agent, priority_boost=True
    )
    assert task.priority == spawned_priority
    assert discovery.priority_boost is True


def test_without_a_boost_the_task_takes_the_source_tasks_priority(ticket, alice, agent):
    source = task_create(ticket=ticket, title="Source", actor=alice, priority="HIGH")
    assert ticket.priority == "MEDIUM"
    _, task = discovery_branch(source_task=source, discovery_type="bug", description="x", actor=agent)
    assert task.priority == "HIGH"


def test_a_given_priority_wins_over_the_boost(ticket, alice, agent):
    source = task_create(ticket=ticket, title="Source", actor=alice, priority="HIGH")
    _, task = discovery_branch(
        source_task=source, discovery_type="bug", description="x", actor=agent, priority="LOW", priority_boost=True
    )
    assert task.priority == "LOW"


def test_a_branch_keeps_its_metadata_exactly(source, agent):
    discovery, _ = discovery_branch(
        source_task=source, discovery_type="bug", description="x", actor=agent, metadata=METADATA
    )
    assert Discovery.objects.get(pk=discovery.pk).metadata == METADATA


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"phase": "PHASE_NOPE"}, "phase"),
        ({"required_capabilities": ["ok", ""]}, "required_capabilities"),
        ({"title": "x" * 201}, "title"),
        ({"priority": "URGENT"}, "priority"),
        ({"discovery_type": "bug_found"}, "discovery_type"),
    ],
)
def test_a_branch_that_fails_leaves_no_discovery_no_task_and_no_event(source, agent, kwargs, field):
    before = counts()
    arguments = {"source_task": source, "discovery_type": "bug", "description": "x", "actor": agent, **kwargs}
    with pytest.raises(ValidationError) as caught:
        discovery_branch(**arguments)
    assert field in caught.value.message_dict
    assert counts() == before


def test_a_phase_of_another_workflow_is_refused(source, agent, review_board):
    phase = review_board.workflow.phases.get(key="PHASE_REVIEW")
    before = counts()
    with pytest.raises(ValidationError, match="belongs to another workflow"):
        discovery_branch(source_task=source, discovery_type="bug", description="x", actor=agent, phase=phase)
    assert counts() == before


def test_a_failure_after_the_task_was_made_undoes_the_whole_branch(source, agent, monkeypatch):
    def failing_emit(**kwargs):
        if kwargs["type"] == "discovery.branch_created":
            raise RuntimeError("the database went away")
        return event_emit(**kwargs)

    monkeypatch.setattr(discovery_services, "event_emit", failing_emit)
    before = counts()
    with pytest.raises(RuntimeError):
        discovery_branch(source_task=source, discovery_type="bug", description="x", actor=agent)
    assert counts() == before


# Resolving


def test_resolving_records_who_and_why_and_announces_it(source, agent, board):
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=agent)
    resolved = discovery_resolve(discovery=discovery, status="resolved", reason="Fixed in task 12", actor=agent)
    resolved.refresh_from_db()
    assert resolved.resolution_status == "resolved"
    assert (resolved.resolved_by, resolved.resolved_by_user) == ("agent:tester", None)
    assert resolved.resolution_note == "Fixed in task 12"
    assert resolved.resolved_at is not None
    event = Event.objects.get(type="discovery.resolved")
    assert (event.board, event.entity_id) == (board, str(discovery.pk))
    assert event.payload["status"] == "resolved"


def test_a_person_may_mark_a_discovery_invalid(source, agent, bob):
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=agent)
    resolved = discovery_resolve(discovery=discovery, status="invalid", reason="Works as designed", actor=bob)
    assert (resolved.resolution_status, resolved.resolved_by, resolved.resolved_by_user) == ("invalid", "bob", bob)


def test_a_closed_discovery_cannot_be_resolved_again(source, agent, bob):
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=agent)
    discovery_resolve(discovery=discovery, status="invalid", reason="Duplicate", actor=bob)
    with pytest.raises(DiscoveryStateError, match="already invalid \\(by bob\\)"):
        discovery_resolve(discovery=discovery, status="resolved", reason="Fixed", actor=agent)
    discovery.refresh_from_db()
    assert (discovery.resolution_status, discovery.resolution_note) == ("invalid", "Duplicate")
    assert Event.objects.filter(type="discovery.resolved").count() == 1


@pytest.mark.parametrize(
    ("status", "reason", "field"),
    [("open", "because", "status"), ("done", "because", "status"), ("resolved", "  ", "reason")],
)
def test_resolving_needs_a_closing_status_and_a_reason(source, agent, status, reason, field):
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=agent)
    with pytest.raises(ValidationError) as caught:
        discovery_resolve(discovery=discovery, status=status, reason=reason, actor=agent)
    assert field in caught.value.message_dict
    discovery.refresh_from_db()
    assert discovery.resolution_status == "open"


# Who may resolve


@pytest.fixture
def other_agent(board, alice):
    return agent_create(name="reviewer", boards=[board], actor=alice)[0]


def test_an_agent_may_not_close_what_another_agent_found(source, agent, other_agent):
    discovery = discovery_record(source_task=source, discovery_type="bug", description="x", actor=agent)
    assert discovery.discovered_by_agent == agent
    with pytest.raises(
        PermissionDenied, match="may resolve only discoveries it recorded or whose spawned task it holds"
    ):
        discovery_resolve(discovery=discovery, status="invalid", reason="Not a bug", actor=other_agent)
    discovery.refresh_from_db()
    assert discovery.resolution_status == "open"
    assert not Event.objects.filter(type="discovery.resolved").exists()


def test_an_agent_holding_a_spawned_task_may_close_the_discovery(source, agent, other_agent, board):
    assert task_claim(agent=agent, board=board) == source  # the finder holds its own task
    discovery, spawned = discovery_branch(source_task=source, discovery_type="bug", description="x", actor=agent)
    assert task_claim(agent=other_agent, board=board) == spawned
    resolved = discovery_resolve(discovery=discovery, status="resolved", reason="Fixed", actor=other_agent)
    assert resolved.resolved_by == "agent:reviewer"


def test_an_agent_that_no_longer_holds_the_spawned_task_may_not_close_it(source, agent, other_agent, board):
    assert task_claim(agent=agent, board=board) == source  # the finder holds its own task
    discovery, spawned = discovery_branch(source_task=source, discovery_type="bug", description="x", actor=agent)
    task_claim(agent=other_agent, board=board)
    task_complete(task=spawned, agent=other_agent)
    with pytest.raises(PermissionDenied):
        discovery_resolve(discovery=discovery, status="resolved", reason="Fixed", actor=other_agent)


def test_members_and_staff_close_any_discovery_on_their_board_and_nobody_else_does(source, agent, alice, charlie):
    first = discovery_record(source_task=source, discovery_type="bug", description="x", actor=agent)
    second = discovery_record(source_task=source, discovery_type="bug", description="y", actor=agent)
    with pytest.raises(PermissionDenied, match="charlie is not a member"):
        discovery_resolve(discovery=first, status="invalid", reason="No", actor=charlie)
    assert (
        discovery_resolve(discovery=first, status="invalid", reason="Duplicate", actor=alice).resolved_by_user == alice
    )
    assert discovery_resolve(discovery=second, status="resolved", reason="Done", actor="orchestrator").resolved_by == (
        "orchestrator"
    )
