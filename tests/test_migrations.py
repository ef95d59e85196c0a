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
