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

from . import browser
from .agent_api import AgentClient
from .workflow_samples import WITH_REVIEW, load


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """Keep the SQLite test database in a file: the browser tests' server is another process,
    and an in-memory database exists only inside the process that opened it."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] in ("django.db.backends.sqlite3", "omoi_site.sqlite"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # The real hasher is slow on purpose; tests create many users.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def default_workflow():
    """The default workflow, put back as the migrations left it when a flush removed their copy."""
    existing = Workflow.objects.filter(slug=DEFAULT_WORKFLOW_SLUG).first()
    if existing:
        return existing
    return workflow_load(definition=read_workflow_file(DEFAULT_WORKFLOW_FILE), slug=DEFAULT_WORKFLOW_SLUG).workflow


@pytest.fixture
def workflow(db):
    """The default workflow; reloaded when a transactional test has flushed the data migration's copy."""
    return default_workflow()


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
    """Live sockets poll the event log and re-check access every 50 ms instead of every second and every 10 s."""
    settings.OMOI_LIVE_POLL_SECONDS = 0.05
    settings.OMOI_LIVE_ACCESS_SECONDS = 0.05


# The browser tests (tests/browser.py): Debian's Chromium driving a Daphne server on the test database.
# Both last a module, not the session: Playwright's sync API keeps an event loop running in this thread,
# and Django's async guard is lifted while it runs (see `browser.chromium_browser`); a module's tests
# live with that, the next module's async tests must not.


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium for the whole module."""
    browser.require_chromium()
    with browser.chromium_browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def server(chromium, django_db_setup, tmp_path_factory):
    """Daphne on the test database, for the whole module; after `chromium`, so no browser means no server."""
    with browser.running_server(tmp_path_factory.mktemp("daphne") / "daphne.log") as server:
        yield server


@pytest.fixture
def server_log(server):
    """Show what the server logged during a test when it fails (pytest prints captured output then)."""
    offset = server.log_size()
    yield
    print(f"--- Daphne log ({server.log_path}) ---\n{server.log_since(offset)}")


@pytest.fixture
def no_broadcasts_from_the_test_process(settings):
    # The test process stands for another process (an agent, the orchestrator) whose broadcasts do not
    # reach the server: what it changes reaches the pages through the server's poll of the event log.
    # (Nor could it broadcast: async_to_sync refuses to run beside Playwright's event loop.)
    settings.CHANNEL_LAYERS = {}


@pytest.fixture
def open_as(chromium, server):
    """Open `path` as `user`, logged in through the form in a new browser context, and return the page.

    Keyword arguments go to the new context (`viewport`, `color_scheme`); `context=` opens the page as
    another tab of a context already open instead. With `live=True` it waits until the page's live
    channel is up and marks the document (`browser.same_document` tells a swap from a reload).
    Every page must get through its test without an uncaught script error.
    """
    from playwright.sync_api import expect

    contexts, errors = [], []

    def new_page(user, context):
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"{user.username}: {error}"))
        return page

    def open_as(user, path="/", *, live=False, context=None, **options):
        if context is None:
            browser.give_browser_password(user)
            context = chromium.new_context(base_url=server.url, **options)
            context.set_default_timeout(browser.PAGE_TIMEOUT)
            contexts.append(context)
            page = new_page(user, context)
            browser.log_in(page, user.username, path)
        elif options:
            raise TypeError(f"A tab of a context already open takes no context options: {sorted(options)}")
        else:
            page = new_page(user, context)
            page.goto(path)
        if live:
            expect(page.locator("#live-status")).to_have_text("Live")
            browser.mark_document(page)
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def demo_seed(server, django_db_blocker):
    """`seed_demo_board()` once for the module, committed for the server to read; the data is flushed after.

    Its events are not broadcast: the test process stands for another process, whose changes reach the
    pages through the server's poll of the event log (and Playwright's loop forbids async_to_sync here).
    """
    from django.core.management import call_command
    from django.db import connection, connections
    from django.test import override_settings

    with django_db_blocker.unblock(), override_settings(CHANNEL_LAYERS={}):
        if "test" not in str(connection.settings_dict["NAME"]):
            # pytest-django sets the test database up only for a session that has tests marked django_db.
            raise RuntimeError("No test database: mark the module's tests with pytest.mark.django_db.")
        seed = browser.seed_demo_board()
    yield seed
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)
        # These modules' tests are not transactional, so tests of other modules run after them expecting
        # what the migrations installed, as they would find it after a transactional test's rollback.
        default_workflow()
        # Beside Playwright's event loop Django keeps this connection apart from the one pytest-django
        # closes at the end; left open, PostgreSQL would refuse to drop the test database.
        connections.close_all()


@pytest.fixture(scope="module")
def admin_state(chromium, server, demo_seed):
    """The admin's logged-in browser state (cookies), made once through the login form."""
    context = chromium.new_context(base_url=server.url)
    try:
        browser.log_in(context.new_page(), demo_seed["admin"].username, "/")
        return context.storage_state()
    finally:
        context.close()
