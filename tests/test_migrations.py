"""Data migrations keep what was saved: rows written before a migration come out of it complete."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from board.services import agent_create, task_create, ticket_create
from discoveries.models import Discovery
from discoveries.services import discovery_record

pytestmark = pytest.mark.django_db(transaction=True)


def migrate(app, name):
    executor = MigrationExecutor(connection)
    executor.migrate([(app, name)])


@pytest.fixture(autouse=True)
def back_to_the_latest():
    """Going back to an old migration undoes every later one (of other apps too): redo them after each test."""
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_discoveries_recorded_before_the_link_are_linked_to_their_agent(board, alice):
    agent, _ = agent_create(name="scout", boards=[board], actor=alice)
    task = task_create(ticket=ticket_create(board=board, title="Login", actor=alice), title="Test it", actor=alice)
    by_agent = discovery_record(source_task=task, discovery_type="bug", description="x", actor=agent)
    by_person = discovery_record(source_task=task, discovery_type="bug", description="y", actor=alice)

    migrate("discoveries", "0001_discovery")  # before discovered_by_agent existed
    migrate("discoveries", "0002_discovered_by_agent")

    linked = dict(Discovery.objects.values_list("pk", "discovered_by_agent"))
    assert linked == {by_agent.pk: agent.pk, by_person.pk: None}


def test_events_logged_before_positions_keep_their_ids_as_positions_and_chain_on(board, workflow):
    from board.events import event_emit
    from board.models import Board, Event
    from board.selectors.events import events_after

    other = Board.objects.create(name="Other", slug="other", workflow=workflow)
    migrate("board", "0005_board_owners")  # before events had positions
    with connection.cursor() as cursor:
        for target, kind in [(board, "a"), (other, "b"), (board, "c")]:
            cursor.execute(
                "INSERT INTO board_event (board_id, type, entity_type, entity_id, payload, actor, created_at)"
                " VALUES (%s, %s, 'board', %s, '{}', 'test', CURRENT_TIMESTAMP)",
                [target.pk, f"test.{kind}", str(target.pk)],
            )
    migrate("board", "0006_event_log_positions")

    old = dict(Event.objects.values_list("type", "pk"))
    positions = {
        kind: (seq, previous) for kind, seq, previous in Event.objects.values_list("type", "seq", "previous_seq")
    }
    assert positions == {
        "test.a": (old["test.a"], 0),
        "test.b": (old["test.b"], 0),
        "test.c": (old["test.c"], old["test.a"]),
    }
    event_emit(board=board, type="test.d", entity=board, actor="test")
    new = Event.objects.get(type="test.d")
    assert new.previous_seq == old["test.c"]
    assert [event["type"] for event in events_after(board.pk, old["test.a"], limit=10)] == ["test.c", "test.d"]
