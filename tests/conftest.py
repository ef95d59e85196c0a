"""Shared fixtures. The cast: Alice runs the team (staff, superuser), Bob works on her board,
Charlie is a user who must see nothing of it."""

import pytest
from django.contrib.auth import get_user_model

from board.models import Board
from board.services import agent_create, ticket_create
from phases.defaults import DEFAULT_WORKFLOW_FILE, DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow
from phases.services import workflow_load
from phases.workflow_files import read_workflow_file

from .agent_api import AgentClient
from .workflow_samples import WITH_REVIEW, load


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """Keep the SQLite test database in a file: the browser tests' server is another process,
    and an in-memory database exists only inside the process that opened it."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The real hasher is slow on purpose; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def workflow(db):
    """The default workflow; reloaded when a transactional test has flushed the data migration's copy."""
    existing = Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).first()
    if existing:
        return existing
    return workflow_load(definition=read_workflow_file(DEFAULT_WORKFLOW_FILE), slug=DEFAULT_WORKFLOW_SLUG).workflow


@pytest.fixture
def phase(workflow):
    """A phase of the default workflow by key."""
    return lambda key: workflow.phases.get(key=key)


@pytest.fixture
def alice(db):
    return get_user_model().objects.create_superuser("alice", "alice@example.org", "password")


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def bob(db):
    return get_user_model().objects.create_user("bob", "bob@example.org", "password")


@pytest.fixture
def charlie(db):
    return get_user_model().objects.create_user("charlie", "charlie@example.org", "password")


@pytest.fixture
def board(workflow, alice, bob):
    board = Board.objects.create(name="Alice's board", slug="alices-board", workflow=workflow)
    board.members.add(alice, bob)
    return board


@pytest.fixture
def review_board(alice):
    """A board on the WITH_REVIEW workflow, with two tickets in review."""
    workflow = load(WITH_REVIEW).workflow
    board = Board.objects.create(name="Review board", slug="review-board", workflow=workflow)
    for title in ("First", "Second"):
        ticket_create(board=board, title=title, actor=alice, phase="PHASE_REVIEW")
    return board


@pytest.fixture
def builder(board, alice):
    """Builder, an agent on Alice's board: (agent, token). Modules that need it capable override this."""
    return agent_create(name="builder", boards=[board], actor=alice)


@pytest.fixture
def api(client, builder):
    """The agent API as Builder calls it."""
    return AgentClient(client, builder[1])


@pytest.fixture
def fast_poll(settings):
    """Live sockets poll the event log (and re-check access) every 50 ms instead of every second."""
    settings.OMOI_LIVE_POLL_SECONDS = 0.05
