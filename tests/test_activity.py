"""A ticket's activity in words: every event type as a sentence, its tasks' and discoveries' events included."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from board.activity import DESCRIBERS, Names, describe, ticket_activity
from board.events import ORCHESTRATOR, EventType
from board.models import Event, Task
from board.services import (
    agent_create,
    task_claim,
    task_create,
    task_fail,
    task_start,
    task_time_out,
    ticket_comment,
    ticket_create,
    ticket_transition,
    ticket_update,
)
from discoveries.services import discovery_branch, discovery_record, discovery_resolve

pytestmark = pytest.mark.django_db

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAMES = Names(
    phases={"PHASE_DESIGN": "Design", "PHASE_IMPLEMENTATION": "Implementation", "PHASE_TESTING": "Testing"},
    columns={"building": "Building", "testing": "Testing"},
    tasks={7: "Write the tests", 8: "Fix the leak"},
)


def event(type, payload=None, *, actor="admin", entity_type="ticket", entity_id="1"):
    return Event(
        pk=1, type=type, payload=payload or {}, actor=actor, entity_type=entity_type, entity_id=entity_id, created_at=AT
    )


def sentence(type, payload=None, **kwargs):
    return describe(event(type, payload, **kwargs), NAMES).sentence


def test_every_event_type_has_its_own_words():
    assert set(DESCRIBERS) >= set(EventType)
    for type in EventType:
        entry = describe(event(type, entity_type="task", entity_id="7"), NAMES)
        assert type.value not in entry.sentence, f"{type} fell back to its code name"
        assert entry.at == AT


@pytest.mark.parametrize(
    ("type", "payload", "actor", "expected"),
    [
        ("ticket.created", {"phase": "PHASE_DESIGN"}, "bob", "bob created the ticket in Design"),
        (
            "ticket.transitioned",
            {"from": "PHASE_DESIGN", "to": "PHASE_IMPLEMENTATION", "kind": "normal"},
            "admin",
            "admin moved it from Design to Implementation",
        ),
        (
            "ticket.transitioned",
            {"from": "PHASE_DESIGN", "to": "PHASE_TESTING", "kind": "override", "reason": "Hotfix"},
            "admin",
            "admin moved it from Design to Testing, overriding the workflow as staff",
        ),
        (
            "ticket.transitioned",
            {"from": "PHASE_DESIGN", "to": "PHASE_TESTING", "kind": "jump"},
            "orchestrator",
            "orchestrator moved it from Design to Testing, outside the workflow's transitions",
        ),
        (
            "ticket.transitioned",
            {
                "from": "PHASE_DESIGN",
                "to": "PHASE_IMPLEMENTATION",
                "kind": "normal",
                "wip": {"column": "building", "count": 4, "limit": 3, "policy": "warn", "exceeded": True},
            },
            "bob",
            "bob moved it from Design to Implementation, over the WIP limit of Building (4/3)",
        ),
        ("ticket.moved", {"column": "building"}, "bob", "bob reordered it in Building"),
        (
            "ticket.updated",
            {"changes": {"priority": ["MEDIUM", "HIGH"], "title": ["Old", "New"]}},
            "bob",
            "bob renamed it from “Old” to “New” and changed the priority from Medium to High",
        ),
        (
            "ticket.updated",
            {"changes": {"description": ["a", "b"], "is_blocked": [False, True], "blocked_reason": ["", "Legal"]}},
            "bob",
            "bob edited the description and marked it blocked",
        ),
        ("ticket.updated", {"changes": {"is_blocked": [True, False]}}, "bob", "bob unblocked it"),
        ("ticket.commented", {"comment": 3}, "bob", "bob commented"),
        ("ticket.result_submitted", {"result": 2, "summary": "It is 42."}, "agent:scout", "scout submitted a result"),
        ("ticket.result_reviewed", {"result": 2, "status": "accepted"}, "alice", "alice accepted the result"),
        ("ticket.result_reviewed", {"result": 2, "status": "rejected"}, "alice", "alice rejected the result"),
        (
            "phase_gate.evaluated",
            {"phase": "PHASE_DESIGN", "passed": False, "missing": ["Spec written"]},
            "orchestrator",
            "orchestrator checked the phase gate of Design: not passed yet",
        ),
        (
            "phase_gate.evaluated",
            {"phase": "PHASE_DESIGN", "passed": True, "hold": "Waiting for room in Checking (1/1)."},
            "orchestrator",
            "orchestrator checked the phase gate of Design: passed, but the ticket is held",
        ),
    ],
)
def test_ticket_events_in_words(type, payload, actor, expected):
    assert sentence(type, payload, actor=actor) == expected


@pytest.mark.parametrize(
    ("type", "payload", "actor", "expected"),
    [
        (
            "task.created",
            {"title": "Write the tests", "phase": "PHASE_TESTING"},
            "admin",
            "admin added task “Write the tests” in Testing",
        ),
        (
            "task.created",
            {"title": "Fix the leak", "phase": "PHASE_TESTING", "parent": 7},
            "agent:builder",
            "builder added task “Fix the leak” in Testing, following up task “Write the tests”",
        ),
        (
            "task.assigned",
            {"title": "Write the tests", "agent": "builder"},
            "agent:builder",
            "builder claimed task “Write the tests”",
        ),
        (
            "task.assigned",
            {"title": "Write the tests", "agent": "builder"},
            "orchestrator",
            "orchestrator assigned task “Write the tests” to builder",
        ),
        ("task.started", {"title": "Write the tests"}, "agent:builder", "builder started task “Write the tests”"),
        ("task.completed", {"title": "Write the tests"}, "agent:builder", "builder completed task “Write the tests”"),
        (
            "task.failed",
            {"title": "Write the tests", "held_by": "builder", "will_retry": True, "retry_count": 1},
            "agent:builder",
            "builder reported task “Write the tests” failed; it will be retried (retry 1)",
        ),
        (
            "task.failed",
            {"title": "Write the tests", "held_by": "builder", "will_retry": False, "retry_count": 3},
            "agent:builder",
            "builder reported task “Write the tests” failed; no retries are left",
        ),
        (
            "task.failed",
            {"title": "Write the tests", "held_by": "builder", "timed_out": True, "will_retry": True, "retry_count": 2},
            "orchestrator",
            "orchestrator timed out task “Write the tests” held by builder; it will be retried (retry 2)",
        ),
        (
            "task.failed",
            {"title": "Write the tests", "held_by": "builder", "will_retry": True, "retry_count": 1},
            "orchestrator",
            "orchestrator failed task “Write the tests” held by builder; it will be retried (retry 1)",
        ),
        (
            "task.released",
            {"title": "Write the tests", "reason": "Agent builder was revoked."},
            "alice",
            "alice put task “Write the tests” back in the queue",
        ),
        ("task.cancelled", {"title": "Write the tests"}, "alice", "alice cancelled task “Write the tests”"),
    ],
)
def test_task_events_in_words(type, payload, actor, expected):
    assert sentence(type, payload, actor=actor, entity_type="task", entity_id="7") == expected


@pytest.mark.parametrize(
    ("type", "payload", "actor", "expected"),
    [
        (
            "discovery.recorded",
            {"source_task": 7, "discovery_type": "security_issue", "summary": "Tokens in logs"},
            "agent:builder",
            "builder recorded a discovery (security issue) in task “Write the tests”",
        ),
        (
            "discovery.branch_created",
            {"source_task": 7, "spawned_task": 8, "spawn_phase": "PHASE_IMPLEMENTATION", "discovery_type": "bug"},
            "agent:builder",
            "builder branched the work: task “Fix the leak” in Implementation, for a discovery (bug) in task “Write the tests”",
        ),
        (
            "discovery.resolved",
            {"source_task": 7, "status": "resolved", "reason": "Fixed"},
            "bob",
            "bob resolved a discovery in task “Write the tests”",
        ),
        (
            "discovery.resolved",
            {"source_task": 7, "status": "invalid", "reason": "Not a bug"},
            "bob",
            "bob closed a discovery in task “Write the tests” as invalid",
        ),
    ],
)
def test_discovery_events_in_words(type, payload, actor, expected):
    assert sentence(type, payload, actor=actor, entity_type="discovery", entity_id="5") == expected


def test_agent_events_in_words():
    assert sentence("agent.registered", {"name": "builder"}, entity_type="agent") == "admin registered agent builder"
    assert sentence("agent.online", {"name": "builder"}, actor="agent:builder") == "builder came back online"
    offline = sentence("agent.offline", {"name": "builder", "tasks": [7, 8]}, actor="orchestrator")
    assert offline == "orchestrator took agent builder off the queue: it went silent; 2 tasks went back to the queue"


def test_board_events_in_words():
    assert sentence("board.created", {"name": "Platform"}, entity_type="board") == "admin created the board Platform"
    added = sentence("board.member_added", {"user": "bob", "owner": True}, entity_type="board")
    assert added == "admin added bob to the board as an owner"
    updated = sentence("board.member_updated", {"user": "bob", "owner": False}, entity_type="board")
    assert updated == "admin made bob a member, no longer an owner"
    assert sentence("board.member_removed", {"user": "bob"}, entity_type="board") == "admin removed bob from the board"
    assert sentence("board.member_removed", {"user": "bob"}, actor="bob", entity_type="board") == "bob left the board"


def test_details_carry_reasons_errors_and_notes():
    moved = describe(event("ticket.transitioned", {"from": "A", "to": "B", "reason": "Phase gate passed: 2/2"}), NAMES)
    assert moved.detail == "Phase gate passed: 2/2"
    assert moved.text == "moved it from A to B"  # a phase no longer in the workflow is named by its key
    failed = describe(event("task.failed", {"error": "Out of\nmemory", "will_retry": False}, entity_id="8"), NAMES)
    assert (failed.detail, failed.anchor, failed.tone) == ("Out of memory", "task-8", "danger")
    gate = describe(
        event(
            "phase_gate.evaluated",
            {"phase": "PHASE_DESIGN", "tasks": {"done": 1, "total": 2, "failed": [9]}, "missing": ["Spec written"]},
        ),
        NAMES,
    )
    assert gate.detail == "1/2 tasks completed. 1 failed after their retries. Not met yet: Spec written."
    long = describe(event("ticket.commented", {"comment": 4}), NAMES)
    assert long.anchor == "comment-4"
    assert len(describe(event("task.failed", {"error": "x" * 5000}), NAMES).detail) == 300


@pytest.mark.parametrize(
    ("type", "payload"),
    [
        ("widget.frobbed", {"a": 1}),
        ("ticket.transitioned", ["not", "a", "dict"]),
        ("ticket.updated", {"changes": {"title": "not a pair"}}),
        ("task.failed", None),
    ],
)
def test_unknown_types_and_odd_payloads_still_get_a_line(type, payload):
    entry = describe(event(type, payload, actor="", entity_type="task", entity_id="7"), NAMES)
    assert entry.actor == "system"
    assert entry.sentence.startswith("system ")
    if type == "widget.frobbed":
        assert entry.sentence == "system recorded “widget.frobbed” on task #7"


# The ticket's activity, from the services that write the events


@pytest.fixture
def builder(board, alice):
    agent, _ = agent_create(name="builder", boards=[board], actor=alice)
    return agent


def test_the_story_of_a_ticket_with_its_tasks_and_discoveries(board, alice, bob, builder):
    ticket = ticket_create(board=board, title="Single sign-on", actor=alice)
    ticket = ticket_transition(ticket=ticket, to_phase="PHASE_REQUIREMENTS", actor=alice, reason="Ready")
    ticket = ticket_update(ticket=ticket, actor=bob, priority="HIGH")
    task = task_create(ticket=ticket, title="Write the spec", actor=alice)
    task_claim(agent=builder, board=board)
    task = Task.objects.get(pk=task.pk)
    task_start(task=task, agent=builder)
    discovery, spawned = discovery_branch(
        source_task=Task.objects.get(pk=task.pk),
        discovery_type="missing_requirement",
        description="No password reset flow",
        actor=builder,
    )
    found = discovery_record(
        source_task=Task.objects.get(pk=task.pk), discovery_type="bug", description="Typo", actor=builder
    )
    discovery_resolve(discovery=found, status="invalid", reason="Not a bug", actor=bob)
    task_fail(task=Task.objects.get(pk=task.pk), agent=builder, error="Out of memory")
    ticket_comment(ticket=ticket, body="Looks good", actor=bob)

    activity, more = ticket_activity(ticket)
    sentences = [entry.sentence for entry in reversed(activity)]
    assert not more
    assert sentences == [
        "alice created the ticket in Backlog",
        "alice moved it from Backlog to Requirements Analysis",
        "bob changed the priority from Medium to High",
        "alice added task “Write the spec” in Requirements Analysis",
        "builder claimed task “Write the spec”",
        "builder started task “Write the spec”",
        "builder recorded a discovery (missing requirement) in task “Write the spec”",
        f"builder added task “{spawned.title}” in Requirements Analysis, following up task “Write the spec”",
        f"builder branched the work: task “{spawned.title}” in Requirements Analysis, "
        "for a discovery (missing requirement) in task “Write the spec”",
        "builder recorded a discovery (bug) in task “Write the spec”",
        "bob closed a discovery in task “Write the spec” as invalid",
        "builder reported task “Write the spec” failed; it will be retried (retry 1)",
        "bob commented",
    ]
    anchors = {entry.type: entry.anchor for entry in reversed(activity)}  # the newest of each type
    assert anchors["discovery.recorded"] == f"discovery-{found.pk}"
    assert anchors["discovery.branch_created"] == f"task-{spawned.pk}"
    assert activity[0].anchor.startswith("comment-")


def test_a_time_out_by_the_orchestrator(board, alice, builder, settings):
    from datetime import timedelta

    from django.utils import timezone

    ticket = ticket_create(board=board, title="Slow", actor=alice)
    task = task_create(ticket=ticket, title="Crawl", actor=alice)
    task_claim(agent=builder, board=board)
    later = timezone.now() + settings.OMOI_START_TIMEOUT + timedelta(seconds=5)
    assert task_time_out(task=Task.objects.get(pk=task.pk), now=later, actor=ORCHESTRATOR)
    entry = ticket_activity(ticket)[0][0]
    assert entry.sentence == "orchestrator timed out task “Crawl” held by builder; it will be retried (retry 1)"
    assert entry.detail.startswith("Timed out: not started within")


def test_only_this_tickets_events_count(board, alice, review_board):
    ticket = ticket_create(board=board, title="Mine", actor=alice)
    other = ticket_create(board=board, title="Theirs", actor=alice)
    task_create(ticket=other, title="Their task", actor=alice)
    elsewhere = review_board.tickets.first()
    task_create(ticket=elsewhere, title="Another board's task", actor=alice)
    # An event of a task whose id happens to be the ticket's id: another entity, not this ticket.
    Event.objects.create(board=board, type="task.created", entity_type="task", entity_id=str(ticket.pk), actor="x")
    activity, _ = ticket_activity(ticket)
    assert [entry.sentence for entry in activity] == ["alice created the ticket in Backlog"]


def test_the_newest_come_first_and_the_count_is_capped(board, alice):
    ticket = ticket_create(board=board, title="Busy", actor=alice)
    for n in range(5):
        ticket_update(ticket=ticket, actor=alice, title=f"Busy {n}")
    activity, more = ticket_activity(ticket, limit=3)
    assert more
    assert [entry.text for entry in activity] == [
        "renamed it from “Busy 3” to “Busy 4”",
        "renamed it from “Busy 2” to “Busy 3”",
        "renamed it from “Busy 1” to “Busy 2”",
    ]


def test_the_activity_costs_the_same_queries_for_5_and_50_events(board, alice, builder):
    ticket = ticket_create(board=board, title="Counted", actor=alice)

    def add_events(count):
        for n in range(count):
            if n % 3 == 0:
                task = task_create(ticket=ticket, title=f"Task {n}", actor=alice)
                discovery_record(source_task=task, discovery_type="bug", description=f"Bug {n}", actor=alice)
            else:
                ticket_comment(ticket=ticket, body=f"Comment {n}", actor=alice)

    def queries():
        with CaptureQueriesContext(connection) as captured:
            activity, _ = ticket_activity(ticket)
        return len(captured), len(activity)

    add_events(4)
    few, shown_few = queries()
    add_events(36)
    many, shown_many = queries()
    assert shown_few >= 5 and shown_many >= 50
    assert few == many == 4
