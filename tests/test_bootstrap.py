"""`make run`'s set-up steps: migrate and bootstrap on an empty database, twice."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from board.models import Board, Event, Ticket
from phases.defaults import DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_setup_steps_on_an_empty_database_then_again(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "SQLITE_PATH": str(tmp_path / "fresh.sqlite3"),
        "OMOI_ADMIN_PASSWORD": "",
    }
    migrate = run_manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    first = run_manage("bootstrap", env=env)
    assert first.returncode == 0, first.stderr
    assert "Created admin account 'admin' with password: " in first.stdout
    assert "Created demo board 'demo' with 10 tickets." in first.stdout

    again = run_manage("bootstrap", env=env)
    assert again.returncode == 0, again.stderr
    assert "password:" not in again.stdout
    assert "Admin account 'admin' exists; its password is unchanged." in again.stdout
    assert "Demo board 'demo' exists." in again.stdout

    counts = run_manage(
        "shell",
        "--verbosity=0",
        "-c",
        "from board.models import Board, Ticket; from phases.models import Workflow;"
        "print(Workflow.objects.count(), Board.objects.count(), Ticket.objects.count(),"
        " Ticket.objects.values('phase').distinct().count())",
        env=env,
    )
    assert counts.stdout.split() == ["1", "1", "10", "8"]


@pytest.mark.django_db
def test_bootstrap_restores_a_missing_workflow_and_takes_the_password_from_the_environment(monkeypatch):
    Workflow.objects.all().delete()
    monkeypatch.setenv("OMOI_ADMIN_PASSWORD", "correct horse battery staple")
    call_command("bootstrap", stdout=io.StringIO())
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("correct horse battery staple")
    board = Board.objects.get(slug="demo")
    assert board.workflow.slug == DEFAULT_WORKFLOW_SLUG
    assert list(board.members.all()) == [admin]
    phases = set(Ticket.objects.values_list("phase__key", flat=True))
    assert {"PHASE_BACKLOG", "PHASE_IMPLEMENTATION", "PHASE_DONE", "PHASE_BLOCKED"} <= phases
    # The demo tickets reached their phases through the transition service.
    assert Event.objects.filter(type="ticket.transitioned").count() == sum(
        ticket.history.count() - 1 for ticket in Ticket.objects.all()
    )


@pytest.mark.django_db
def test_bootstrap_can_skip_the_demo_board():
    call_command("bootstrap", "--no-demo", stdout=io.StringIO())
    assert not Board.objects.exists()
    assert get_user_model().objects.filter(username="admin").exists()


@pytest.mark.django_db
def test_demo_tickets_reach_their_phases_without_a_detour_through_blocked():
    call_command("bootstrap", stdout=io.StringIO())
    for ticket in Ticket.objects.filter(board__slug="demo").select_related("phase"):
        passed = [row.to_phase for row in ticket.history.select_related("to_phase").order_by("pk")][:-1]
        assert not [phase.key for phase in passed if phase.is_holding], ticket.title
