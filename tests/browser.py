"""Helpers for the browser tests: a Daphne server on the test database, Debian's Chromium, and the gestures.

The server is a separate process, as in production: it reads the database the
test process writes, so browser tests need committed data (transactional
tests) and a database both processes can open (see `django_db_modify_db_settings`
in conftest.py: the SQLite test database is a file, not memory). The fixtures built
on these helpers (`chromium`, `server`, `open_as`, `demo_seed`, ...) are in conftest.py.
"""

import contextlib
import functools
import io
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.db import connection

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "correct horse battery staple"
# How long a gesture waits for the page: a live update comes within a poll of the server's log (one second).
PAGE_TIMEOUT = 5_000
# Daphne imports Django and Channels before it answers; a cold machine needs a few seconds.
SERVER_START_SECONDS = 30
# Files the board page cannot work without; the server must serve them itself.
STATIC_CHECKS = ["/static/js/board.js", "/static/vendor/sortablejs/Sortable.min.js", "/static/vendor/htmx/htmx.min.js"]


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def require_chromium():
    """Skip without Debian's Chromium, except in CI, where a missing browser is a failure, not a pass."""
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    if in_ci():
        pytest.fail(f"{message}; CI must run the browser tests.", pytrace=False)
    pytest.skip(f"{message} to run the browser tests.")


@functools.cache
def password_hash():
    """The server checks passwords with Django's default hasher, not the tests' fast MD5 one.

    Hashed once per session: PBKDF2 is slow on purpose, and every test's users are new.
    """
    return make_password(PASSWORD, hasher=PBKDF2PasswordHasher())


def give_browser_password(user):
    user.password = password_hash()
    user.save(update_fields=["password"])
    return user


def _server_database_env():
    """Point the server at the database this test session created."""
    database = connection.settings_dict
    if connection.vendor == "sqlite":
        name = database["NAME"]
        if connection.is_in_memory_db():
            raise RuntimeError("The SQLite test database is in memory; another process cannot open it.")
        return {"DATABASE_URL": "", "SQLITE_PATH": str(name)}
    # Keep the URL's user, host and options; only the database is the test one (test_<name>).
    url = urlsplit(os.environ["DATABASE_URL"])
    return {"DATABASE_URL": urlunsplit(url._replace(path="/" + database["NAME"]))}


class Server:
    """Daphne serving the project on a port the test process bound, so no other process can take it between."""

    def __init__(self, log_path, *, env=None):
        self.log_path = Path(log_path)
        # Variables of the server's environment on top of the test's, e.g. a shorter live poll.
        self.env = dict(env or {})
        self.process = None
        self.url = None

    def start(self):
        env = {
            **os.environ,
            **_server_database_env(),
            "DJANGO_SETTINGS_MODULE": "omoi_site.settings",
            # DEBUG makes WhiteNoise serve static/ through the finders, as edited, with no collectstatic
            # into the shared tree (whose copy may be stale); it also puts tracebacks in the log.
            "DEBUG": "true",
            "REDIS_URL": os.environ.get("REDIS_URL", ""),
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        # The test process allows sync ORM calls beside Playwright's loop; the server must keep the guard.
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with listener, open(self.log_path, "ab") as log:
            listener.bind(("127.0.0.1", 0))
            listener.listen(128)
            self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "omoi_site.server",
                    "--fd",
                    str(listener.fileno()),
                    "omoi_site.asgi:application",
                ],
                cwd=settings.BASE_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[listener.fileno()],
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self):
        deadline = time.monotonic() + SERVER_START_SECONDS
        pending = list(STATIC_CHECKS)
        while pending:
            if self.process.poll() is not None:
                raise RuntimeError(f"Daphne exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Daphne did not serve {pending[0]} in {SERVER_START_SECONDS} s:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + pending[0], timeout=2) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                raise RuntimeError(f"{pending[0]} answered {exc.code}:\n{self.log_tail()}") from None
            except OSError:
                time.sleep(0.1)  # not accepting yet
                continue
            if status != 200:
                raise RuntimeError(f"{pending[0]} answered {status}:\n{self.log_tail()}")
            pending.pop(0)

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def log_size(self):
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset):
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines=60):
        return "\n".join(self.log_since(0).splitlines()[-lines:])


@contextlib.contextmanager
def running_server(log_path, *, env=None):
    server = Server(log_path, env=env).start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def chromium_browser():
    """Playwright's sync API driving Debian's Chromium; Playwright never downloads a browser here."""
    from playwright.sync_api import sync_playwright

    # The sync API keeps an asyncio loop running in this thread (it switches to it with greenlets), and
    # Django then refuses every ORM call here with SynchronousOnlyOperation, fixtures and flushes included.
    # The calls are not made from a coroutine, only beside one: allow them while the browser runs.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page, username, next_path):
    """Log in through the real form, as a person would, and land on `next_path`."""
    page.goto(f"/accounts/login/?next={next_path}")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{next_path}")


def drag(page, source, target, *, steps=12):
    """Drag `source` onto `target` with the mouse: press, move in steps, release.

    SortableJS only starts a drag after the pointer moved, and places the card
    where the dragover events say; a single jump would skip both.
    """
    start = source.bounding_box()
    end = target.bounding_box()
    x, y = start["x"] + start["width"] / 2, start["y"] + start["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 10, y + 10, steps=3)
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=steps)
    page.mouse.up()


def tab_to(page, element_id, *, limit=100):
    """Press Tab until the element with `element_id` has the focus, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == element_id:
            return
    raise AssertionError(f"#{element_id} never got the focus after {limit} presses of Tab")


def mark_document(page):
    """Tag the loaded document, to tell changes made in place from a page load."""
    page.evaluate("window.sameDocument = true")


def same_document(page):
    return page.evaluate("window.sameDocument === true")


def press_then_again_at_once(page, key, next_key):
    """Press `key` on the focused control, then `next_key` on the first frame its re-rendered copy has the focus.

    A quick keyboard user does not wait for the page to settle after a swap; nor does this.
    """
    element_id = page.evaluate(
        "() => { document.activeElement.dataset.beforeSwap = 'yes'; return document.activeElement.id; }"
    )
    page.keyboard.press(key)
    page.wait_for_function(
        "id => document.activeElement && document.activeElement.id === id && !document.activeElement.dataset.beforeSwap",
        arg=element_id,
        polling="raf",
    )
    page.keyboard.press(next_key)


# Every page, on a demo board with real content: the accessibility check and the screenshots visit them all.

# name: (URL name, which of the seed's objects its arguments come from). Pages whose URL name does not
# exist are skipped, so a page added later only needs its line here.
PAGES = {
    "login": ("login", ()),
    "boards": ("board:list", ()),
    "board-new": ("board:board-create", ()),
    "board": ("board:detail", ("board",)),
    "board-swimlanes": ("board:detail", ("board",)),
    "board-members": ("board:members", ("board",)),
    "ticket": ("board:ticket", ("board", "ticket")),
    "ticket-new": ("board:ticket-create", ("board",)),
    "ticket-edit": ("board:ticket-edit", ("board", "ticket")),
    "graph": ("discoveries:board-graph", ("board",)),
    "ticket-graph": ("discoveries:ticket-graph", ("board", "ticket")),
    "discoveries": ("discoveries:list", ("board",)),
    "agents": ("board:agents", ("board",)),
    "analytics": ("discoveries:analytics", ("board",)),
    "admin": ("admin:index", ()),
    "admin-workflow": ("admin:phases_workflow_change", ("workflow",)),
    "admin-phase": ("admin:phases_phase_change", ("phase",)),
}
QUERIES = {"board-swimlanes": "?lanes=priority"}
ANONYMOUS_PAGES = {"login"}


def page_path(name, seed):
    """The path of page `name` on the seeded board; skips the test when the site has no such page."""
    from django.urls import NoReverseMatch, reverse

    url_name, parts = PAGES[name]
    arguments = [seed[part].slug if part == "board" else seed[part].pk for part in parts]
    try:
        return reverse(url_name, args=arguments) + QUERIES.get(name, "")
    except NoReverseMatch:
        pytest.skip(f"The site has no page {url_name!r}.")


def seed_demo_board():
    """The demo board as `make run` shows it a few minutes in; the objects the pages are about, by name.

    The default workflow, the admin account (with the browser password) and the demo
    board from `manage.py bootstrap`; the phases' default tasks; two demo agents, one
    running a task after completing another with a discovery and a branch, the other
    holding a task after a failure that waits for its retry; a blocked ticket with its
    reason; a ticket with a Markdown description and a comment.
    """
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from board.demo import demo_agent_tokens
    from board.models import Board, Ticket
    from board.orchestration.tickets import enter_phases
    from board.services import (
        agent_authenticate,
        task_claim,
        task_complete,
        task_fail,
        task_start,
        ticket_comment,
        ticket_update,
    )
    from discoveries.services import discovery_branch, discovery_record

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMOI_ADMIN_PASSWORD", PASSWORD)
        call_command("bootstrap", stdout=io.StringIO())
    board = Board.objects.select_related("workflow").get(slug="demo")
    admin = give_browser_password(get_user_model().objects.get(username="admin"))
    spread_history_over_weeks(board)
    while enter_phases():
        pass
    first, second = (agent_authenticate(token) for _, token in demo_agent_tokens(2))

    done = task_claim(agent=first, board=board)
    task_start(task=done, agent=first)
    discovery_record(
        source_task=done,
        discovery_type="optimization",
        description="The nightly job reads every table twice; one pass would do.",
        actor=first,
    )
    discovery_branch(
        source_task=done,
        discovery_type="bug",
        description="Backups older than 30 days are never deleted, so the disk fills up.",
        actor=first,
        phase="PHASE_TESTING",
        priority_boost=True,
        metadata={"file": "ops/backup.py", "line": 88},
    )
    phase = done.phase
    task_complete(
        task=done,
        agent=first,
        result={"summary": "The backup job runs at 02:00 and keeps 30 days."},
        artifacts=[{"type": "source", "path": "src/ops/backup.py"}],
        completed_criteria=list(phase.done_definitions or [])[:2],
    )
    task_start(task=task_claim(agent=first, board=board), agent=first)
    failed = task_claim(agent=second, board=board)
    task_fail(task=failed, agent=second, error="The test database was not reachable.", retryable=True)
    task_claim(agent=second, board=board)

    ticket = done.ticket
    ticket = ticket_update(
        ticket=ticket,
        actor=admin,
        description=(
            "Back up the database **every night** and keep the copies for 30 days.\n\n"
            "- Encrypted at rest\n- Restore tested once a month\n\nSee `ops/backup.py`."
        ),
    )
    ticket_comment(ticket=ticket, body="Restores took *four minutes* in the last drill. Good enough.", actor=admin)
    blocked = Ticket.objects.filter(board=board, phase__key="PHASE_BLOCKED").first()
    if blocked is not None:
        ticket_update(
            ticket=blocked, actor=admin, is_blocked=True, blocked_reason="Waiting for the payment provider's keys."
        )
    return {"board": board, "ticket": ticket, "admin": admin, "workflow": board.workflow, "phase": phase}


def spread_history_over_weeks(board, *, days=28, step_days=2):
    """Date the board's history back, so the analytics have weeks to show instead of one instant.

    The tickets start a day apart, the oldest `days` ago, and each move comes `step_days`
    after the one before, never later than an hour ago; each ticket's events (created,
    transitioned) get the dates of its history rows, so its page tells the same story.
    """
    from datetime import timedelta

    from django.utils import timezone

    from board.models import Event, PhaseHistory, Ticket

    now = timezone.now()
    latest = now - timedelta(hours=1)
    for number, ticket in enumerate(Ticket.objects.filter(board=board).order_by("pk")):
        start = now - timedelta(days=days - number)
        rows = list(PhaseHistory.objects.filter(ticket=ticket).order_by("pk"))
        events = list(Event.objects.filter(entity_type="ticket", entity_id=str(ticket.pk)).order_by("pk"))
        for step, (row, event) in enumerate(itertools.zip_longest(rows, events)):
            when = min(start + timedelta(days=step * step_days), latest)
            if row is not None:
                PhaseHistory.objects.filter(pk=row.pk).update(created_at=when)
            if event is not None:
                Event.objects.filter(pk=event.pk).update(created_at=when)
        Ticket.objects.filter(pk=ticket.pk).update(created_at=start)


@contextlib.contextmanager
def seeded_page(chromium, server, name, path, *, viewport, theme, admin_state):
    """Page `name` of the seeded board open at `path`, as the admin (or anonymous for a sign-in page), settled."""
    context = chromium.new_context(
        base_url=server.url,
        viewport=viewport,
        storage_state=None if name in ANONYMOUS_PAGES else admin_state,
    )
    try:
        page = context.new_page()
        page.emulate_media(color_scheme=theme)
        response = page.goto(path)
        assert response.status == 200, f"{path} answered {response.status}"
        settle(page)
        yield page
    finally:
        context.close()


def settle(page):
    """Wait until the page has drawn what it loads after the document: its requests, fonts and live status."""
    page.wait_for_load_state("networkidle")
    page.evaluate("document.fonts.ready.then(() => true)")
    if page.locator("#live-status").count():
        page.wait_for_function("document.querySelector('#live-status').textContent.trim() === 'Live'")
