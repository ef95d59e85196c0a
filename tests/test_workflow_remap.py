"""A workflow reload that remaps a removed phase moves its tickets as board moves: history, versions, events."""

import ast
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from board.errors import TransitionRefused
from board.events import WORKFLOW_RELOAD, board_group
from board.models import Agent, Board, Event, PhaseHistory, Task, Ticket
from board.services import POSITION_GAP, agent_create, task_create, ticket_create, tickets_remap_phase
from phases.watch import WorkflowWatcher

from .workflow_samples import SMALL, WITH_REVIEW, database_state, load

pytestmark = pytest.mark.django_db

REMAP = {"PHASE_REVIEW": "PHASE_TODO"}


def reload_events(board):
    return list(Event.objects.filter(board=board, actor="workflow reload").order_by("pk"))


def in_review(board):
    return list(board.tickets.filter(phase__key="PHASE_REVIEW").order_by("position", "pk"))


# What a remap writes


def test_each_remapped_ticket_gets_a_jump_in_its_history_and_a_new_version(review_board):
    before = {ticket.pk: ticket.version for ticket in in_review(review_board)}

    load(SMALL, overwrite=True, remap=REMAP)

    todo = review_board.workflow.phases.get(key="PHASE_TODO")
    for pk, version in before.items():
        ticket = Ticket.objects.get(pk=pk)
        assert (ticket.phase, ticket.version) == (todo, version + 1)
        last = ticket.history.order_by("pk").last()
        assert (last.from_key, last.to_key, last.to_phase, last.kind) == (
            "PHASE_REVIEW",
            "PHASE_TODO",
            todo,
            PhaseHistory.Kind.JUMP,
        )
        assert last.reason.startswith("workflow reload: ")
        assert "without checking transitions or WIP limits" in last.reason
        assert (last.actor, last.user) == ("workflow reload", None)


def test_each_remapped_ticket_emits_a_transition_event_on_its_board(review_board):
    moving = in_review(review_board)

    load(SMALL, overwrite=True, remap=REMAP)

    events = reload_events(review_board)
    assert [(event.type, event.entity_type, event.entity_id) for event in events] == [
        ("ticket.transitioned", "ticket", str(ticket.pk)) for ticket in moving
    ]
    for event, ticket in zip(events, moving, strict=True):
        ticket.refresh_from_db()
        assert event.payload == {
            "column": "todo",
            "position": ticket.position,
            "previous_id": None,
            "next_id": None,
            "version": ticket.version,
            "from": "PHASE_REVIEW",
            "to": "PHASE_TODO",
            "kind": "jump",
            "reason": ticket.history.order_by("pk").last().reason,
        }


def test_remapped_tickets_go_to_the_end_of_the_new_column_in_their_order(review_board, alice):
    first, second = in_review(review_board)
    waiting = ticket_create(board=review_board, title="Already waiting", actor=alice, phase="PHASE_TODO")

    load(SMALL, overwrite=True, remap=REMAP)

    column = list(review_board.tickets.order_by("position").values_list("pk", "position"))
    assert [pk for pk, _ in column] == [waiting.pk, first.pk, second.pk]
    assert [position for _, position in column][1:] == [
        waiting.position + POSITION_GAP,
        waiting.position + 2 * POSITION_GAP,
    ]


def test_a_full_block_column_does_not_stop_a_reload(review_board, alice):
    # SMALL's todo column holds 3 and blocks; with 2 waiting, the 2 remapped make 4.
    for title in ("One", "Two"):
        ticket_create(board=review_board, title=title, actor=alice, phase="PHASE_TODO")

    load(SMALL, overwrite=True, remap=REMAP)

    column = review_board.workflow.columns.get(key="todo")
    assert (column.wip_limit, column.wip_policy) == (3, "block")
    assert review_board.tickets.filter(phase__key="PHASE_TODO").count() == 4


def test_tickets_of_every_board_on_the_workflow_move_each_on_its_board(review_board, alice):
    other = Board.objects.create(name="Other", slug="other", workflow=review_board.workflow)
    elsewhere = ticket_create(board=other, title="Elsewhere", actor=alice, phase="PHASE_REVIEW")

    load(SMALL, overwrite=True, remap=REMAP)

    assert [event.entity_id for event in reload_events(other)] == [str(elsewhere.pk)]
    assert len(reload_events(review_board)) == 2


def test_tasks_and_agents_follow_the_phase_without_events_of_their_own(review_board, alice):
    ticket = in_review(review_board)[0]
    task = task_create(ticket=ticket, title="Review it", actor=alice)
    agent, _ = agent_create(name="reviewer", boards=[review_board], actor=alice, phase="PHASE_REVIEW")
    events = Event.objects.count()

    load(SMALL, overwrite=True, remap=REMAP)

    todo = review_board.workflow.phases.get(key="PHASE_TODO")
    assert Task.objects.get(pk=task.pk).phase == todo
    assert Agent.objects.get(pk=agent.pk).phase == todo
    assert Event.objects.count() == events + 2
    assert set(Event.objects.order_by("-pk")[:2].values_list("type", flat=True)) == {"ticket.transitioned"}


def test_the_summary_still_counts_what_moved(review_board, alice):
    task_create(ticket=in_review(review_board)[0], title="Review it", actor=alice)

    result = load(SMALL, overwrite=True, remap=REMAP)

    assert result.remapped == {"PHASE_REVIEW": ("PHASE_TODO", {"tickets": 2, "task": 1})}


def test_a_dry_run_moves_nothing_and_tells_no_board(review_board):
    before, events = database_state(), Event.objects.count()

    result = load(SMALL, overwrite=True, remap=REMAP, dry_run=True)

    assert result.remapped == {"PHASE_REVIEW": ("PHASE_TODO", {"tickets": 2})}
    assert database_state() == before
    assert Event.objects.count() == events


def test_an_open_board_hears_the_reload_once_it_commits(review_board, django_capture_on_commit_callbacks):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(board_group(review_board.pk), channel)
    moving = in_review(review_board)

    with django_capture_on_commit_callbacks(execute=True):
        load(SMALL, overwrite=True, remap=REMAP)

    async def hear(count):
        # In one event loop: channels-redis keeps what it has read ahead per loop, so one loop per
        # receive may hand out the same message twice. Redis may also deliver messages sent in the
        # same instant out of order; pages order them by event id.
        return [(await layer.receive(channel))["event"] for _ in range(count)]

    heard = sorted(async_to_sync(hear)(len(moving)), key=lambda event: event["id"])
    assert [(message["type"], message["entity_id"], message["actor"]) for message in heard] == [
        ("ticket.transitioned", str(ticket.pk), "workflow reload") for ticket in moving
    ]
    assert [message["payload"]["to"] for message in heard] == ["PHASE_TODO", "PHASE_TODO"]
    async_to_sync(layer.group_discard)(board_group(review_board.pk), channel)


# Every path that loads a workflow goes through the board's mover


def test_load_workflow_moves_tickets_through_the_board(review_board, tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL, encoding="utf-8")

    call_command("load_workflow", str(path), "--overwrite", "--remap", "PHASE_REVIEW=PHASE_TODO", stdout=StringIO())

    assert len(reload_events(review_board)) == 2
    assert PhaseHistory.objects.filter(ticket__board=review_board, kind="jump").count() == 2


def test_the_admin_import_moves_tickets_through_the_board(review_board, alice_client):
    upload = SimpleUploadedFile("small.yaml", SMALL.encode(), content_type="application/yaml")

    response = alice_client.post(
        reverse("admin:phases_workflow_import"),
        {"file": upload, "overwrite": "on", "remap": "PHASE_REVIEW=PHASE_TODO"},
    )

    assert response.status_code == 302
    assert len(reload_events(review_board)) == 2


def touch(path, text, second):
    """Write the file with its own modification time, so a poll sees each change at once."""
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(second * 10**9, second * 10**9))


def test_the_watcher_moves_tickets_through_the_board(review_board, tmp_path):
    path = tmp_path / "small.yaml"
    touch(path, WITH_REVIEW, 2_000_000_000)
    watcher = WorkflowWatcher(tmp_path, remap=REMAP)

    touch(path, SMALL, 2_000_000_001)
    [report] = watcher.poll()

    assert report.ok is True, report.message
    assert "  PHASE_REVIEW -> PHASE_TODO: 2 tickets" in report.message.splitlines()
    assert len(reload_events(review_board)) == 2


def test_the_watcher_uses_a_remap_only_where_its_file_removes_the_phase(review_board, tmp_path):
    path = tmp_path / "small.yaml"
    touch(path, WITH_REVIEW, 2_000_000_000)
    watcher = WorkflowWatcher(tmp_path, remap=REMAP)

    touch(path, WITH_REVIEW.replace("name: Review\n", "name: Peer review\n"), 2_000_000_001)
    [report] = watcher.poll()

    assert report.ok is True, report.message
    assert review_board.workflow.phases.get(key="PHASE_REVIEW").name == "Peer review"
    assert reload_events(review_board) == []


def test_the_watcher_without_a_remap_still_refuses_to_strand_tickets(review_board, tmp_path):
    path = tmp_path / "small.yaml"
    touch(path, WITH_REVIEW, 2_000_000_000)
    watcher = WorkflowWatcher(tmp_path)
    before = database_state()

    touch(path, SMALL, 2_000_000_001)
    [report] = watcher.poll()

    assert report.ok is False
    assert "remap it (PHASE_REVIEW=NEW_PHASE)" in report.message
    assert database_state() == before


# The service on its own


def test_the_service_refuses_a_phase_of_another_workflow(review_board, workflow):
    review = review_board.workflow.phases.get(key="PHASE_REVIEW")
    with pytest.raises(TransitionRefused, match="belongs to another workflow"):
        tickets_remap_phase(old_phase=review, new_phase=workflow.phases.get(key="PHASE_DESIGN"))
    assert len(in_review(review_board)) == 2


def test_the_service_refuses_the_same_phase(review_board):
    review = review_board.workflow.phases.get(key="PHASE_REVIEW")
    with pytest.raises(TransitionRefused, match="already there"):
        tickets_remap_phase(old_phase=review, new_phase=review)
    assert Event.objects.filter(actor="workflow reload").count() == 0


def test_the_service_moves_within_a_live_workflow_with_the_given_reason(review_board, alice):
    done = review_board.workflow.phases.get(key="PHASE_DONE")
    review = review_board.workflow.phases.get(key="PHASE_REVIEW")
    finished = ticket_create(board=review_board, title="Finished", actor=alice, phase="PHASE_DONE")

    moved = tickets_remap_phase(old_phase=review, new_phase=done, actor=WORKFLOW_RELOAD, reason="merged into Done")

    assert [ticket.phase for ticket in moved] == [done, done]
    assert [ticket.history.order_by("pk").last().reason for ticket in moved] == ["merged into Done"] * 2
    assert min(ticket.position for ticket in moved) > finished.position


# Imports go one way


def test_phases_never_import_board():
    # Django's own apps and phases only: with board installed, setup itself would import it.
    code = (
        "import sys, django; from django.conf import settings; "
        "settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS "
        "if app.split('.')[0] not in ('board', 'discoveries', 'omoi_site')]; "
        "django.setup(); "
        "import phases.admin, phases.forms, phases.services, phases.watch, phases.defaults; "
        "import phases.management.commands.load_workflow, phases.management.commands.export_workflow; "
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('board', 'discoveries')))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "omoi_site.settings"}
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_no_phases_module_imports_board_even_inside_a_function():
    found = []
    for path in sorted((Path(settings.BASE_DIR) / "phases").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            found += [f"{path.name}: {name}" for name in names if name.split(".")[0] in ("board", "discoveries")]
    assert found == []
