"""The load_workflow and export_workflow commands, and hot reload of a folder of workflow files."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from phases.defaults import DEFAULT_WORKFLOW_SLUG
from phases.models import Workflow
from phases.watch import WorkflowWatcher
from phases.workflow_files import parse_workflow

from .workflow_samples import SMALL, WITH_REVIEW, database_state, transitions_of

pytestmark = pytest.mark.django_db

# Two problems, on known lines: a transition to a phase that does not exist and a negative WIP limit.
INVALID = SMALL.replace("[PHASE_DONE, PHASE_BLOCKED]", "[PHASE_DONE, PHASE_NOPE, PHASE_BLOCKED]").replace(
    "wip_limit: 3", "wip_limit: -3"
)


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


def run(command, *args):
    out, err = StringIO(), StringIO()
    call_command(command, *[str(arg) for arg in args], stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(path, text):
    """Write the file and move its modification time on, so a poll sees the change without waiting."""
    previous = path.stat().st_mtime_ns if path.exists() else 1_700_000_000 * 10**9
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(previous + 10**9, previous + 10**9))
    return path


@pytest.fixture
def small_file(tmp_path):
    return write(tmp_path / "small.yaml", SMALL)


# load_workflow


def test_it_loads_a_valid_file(small_file):
    out, _ = run("load_workflow", small_file)
    assert out.splitlines() == [
        "Workflow 'small' was created (version 1).",
        "  phases added: PHASE_TODO, PHASE_DONE, PHASE_BLOCKED",
    ]
    workflow = Workflow.objects.get(slug="small")
    assert list(workflow.phases.values_list("key", flat=True)) == ["PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED"]
    assert list(workflow.columns.values_list("key", flat=True)) == ["todo", "done", "blocked"]


def test_the_slug_option_wins_over_the_files_slug(small_file):
    out, _ = run("load_workflow", small_file, "--slug", "team-flow")
    assert "Workflow 'team-flow' was created" in out
    assert Workflow.objects.filter(slug="team-flow").exists()
    assert not Workflow.objects.filter(slug="small").exists()


def test_the_files_slug_wins_over_its_name(tmp_path):
    path = write(tmp_path / "named-otherwise.yaml", SMALL)
    run("load_workflow", path)
    assert Workflow.objects.filter(slug="small").exists()
    assert not Workflow.objects.filter(slug="named-otherwise").exists()


def test_without_a_slug_it_is_named_after_the_file(tmp_path):
    path = write(tmp_path / "team-flow.yml", SMALL.replace("slug: small\n", ""))
    out, _ = run("load_workflow", path)
    assert "Workflow 'team-flow' was created" in out
    assert Workflow.objects.get(slug="team-flow").name == "Small"


def test_it_refuses_a_file_name_that_is_not_a_slug(tmp_path):
    path = write(tmp_path / "my flow.yaml", SMALL.replace("slug: small\n", ""))
    with pytest.raises(CommandError, match="'my flow' is not a valid slug"):
        run("load_workflow", path)
    assert not Workflow.objects.filter(slug="my flow").exists()


def test_it_reports_every_problem_of_an_invalid_file_with_its_path_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", INVALID)
    before = database_state()

    with pytest.raises(CommandError) as info:
        run("load_workflow", path)

    message = str(info.value)
    assert message.splitlines()[0] == f"{path}: 2 problems found"
    transition_line = line_of(INVALID, "PHASE_NOPE")
    wip_line = line_of(INVALID, "wip_limit: -3")
    assert f"{path}:{transition_line}: phases[0].allowed_transitions[1]: unknown phase 'PHASE_NOPE'" in message
    assert f"{path}:{wip_line}: board_columns[0].wip_limit: input should be greater than 0" in message
    assert database_state() == before


def test_it_refuses_a_missing_file(tmp_path):
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(CommandError) as info:
        run("load_workflow", path)
    assert f"{path}: cannot read the file: No such file or directory" in str(info.value)


def test_it_needs_a_file_or_a_folder_to_watch():
    with pytest.raises(CommandError, match=r"Give a workflow file to load, or --watch DIR\."):
        run("load_workflow")


def test_dry_run_changes_nothing(small_file):
    before = database_state()
    out, _ = run("load_workflow", small_file, "--dry-run")
    assert out.splitlines()[0] == "Workflow 'small' would be created (version 1)."
    assert database_state() == before


def test_it_refuses_an_existing_workflow_without_overwrite(small_file):
    run("load_workflow", small_file)
    before = database_state()
    with pytest.raises(CommandError) as info:
        run("load_workflow", small_file)
    assert str(small_file) in str(info.value)
    assert "workflow 'small' already exists; load it with overwrite to replace it" in str(info.value)
    assert database_state() == before


def test_overwrite_replaces_the_workflow(small_file):
    run("load_workflow", small_file)
    write(small_file, SMALL.replace("name: Small", "name: Smaller"))

    out, _ = run("load_workflow", small_file, "--overwrite")

    assert out.splitlines()[0] == "Workflow 'small' was updated (version 2)."
    workflow = Workflow.objects.get(slug="small")
    assert (workflow.name, workflow.version) == ("Smaller", 2)


def test_it_refuses_to_remove_a_phase_tickets_use(review_board, small_file):
    before = database_state()
    with pytest.raises(CommandError) as info:
        run("load_workflow", small_file, "--overwrite")
    assert "phase 'PHASE_REVIEW' would be removed but is still used by 2 tickets" in str(info.value)
    assert database_state() == before


def test_remap_moves_tickets_to_another_phase(review_board, small_file):
    out, _ = run("load_workflow", small_file, "--overwrite", "--remap", "PHASE_REVIEW=PHASE_TODO")
    assert "  PHASE_REVIEW -> PHASE_TODO: 2 tickets" in out.splitlines()
    assert set(review_board.tickets.values_list("phase__key", flat=True)) == {"PHASE_TODO"}
    assert not review_board.workflow.phases.filter(key="PHASE_REVIEW").exists()


def test_remap_can_be_repeated(review_board, tmp_path):
    # Review becomes QA, and Todo is split out of the file into a new Backlog.
    text = WITH_REVIEW.replace("PHASE_REVIEW", "PHASE_QA").replace("PHASE_TODO", "PHASE_BACKLOG")
    path = write(tmp_path / "small.yaml", text)

    run(
        "load_workflow",
        path,
        "--overwrite",
        "--remap",
        "PHASE_REVIEW=PHASE_QA",
        "--remap",
        "PHASE_TODO=PHASE_BACKLOG",
    )

    assert set(review_board.workflow.phases.values_list("key", flat=True)) == {
        "PHASE_BACKLOG",
        "PHASE_QA",
        "PHASE_DONE",
        "PHASE_BLOCKED",
    }
    assert set(review_board.tickets.values_list("phase__key", flat=True)) == {"PHASE_QA"}


def test_it_reports_a_remap_of_an_unknown_phase(review_board, small_file):
    before = database_state()
    with pytest.raises(CommandError) as info:
        run("load_workflow", small_file, "--overwrite", "--remap", "PHASE_NOPE=PHASE_TODO")
    assert "--remap: 'PHASE_NOPE' is not a phase of workflow 'small'" in str(info.value)
    assert database_state() == before


@pytest.mark.parametrize("value", ["PHASE_REVIEW", "=PHASE_TODO", "PHASE_REVIEW=", " = "])
def test_it_refuses_a_malformed_remap(review_board, small_file, value):
    before = database_state()
    with pytest.raises(CommandError) as info:
        run("load_workflow", small_file, "--overwrite", "--remap", value)
    assert str(info.value) == f"--remap {value!r}: write it as OLD_PHASE=NEW_PHASE"
    assert database_state() == before


def test_an_invalid_file_exits_non_zero_from_the_shell(tmp_path):
    path = write(tmp_path / "bad.yaml", INVALID)
    database = tmp_path / "never-opened.sqlite3"
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env.update(DJANGO_SETTINGS_MODULE="omoi_site.settings", SQLITE_PATH=str(database))

    completed = subprocess.run(
        [sys.executable, "manage.py", "load_workflow", str(path), "--dry-run"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode != 0
    assert f"{path}:{line_of(INVALID, 'PHASE_NOPE')}: phases[0].allowed_transitions[1]" in completed.stderr
    assert completed.stdout == ""
    # Validation comes before any database access: the database was never opened.
    assert not database.exists()


# export_workflow


def test_it_exports_to_standard_output(workflow):
    out, err = run("export_workflow", DEFAULT_WORKFLOW_SLUG)
    assert out.startswith(f"# Workflow 'software_development', version {workflow.version}, exported from Omoi.\n")
    definition = parse_workflow(out)
    assert definition.slug == DEFAULT_WORKFLOW_SLUG
    assert [phase.id for phase in definition.phases][:2] == ["PHASE_BACKLOG", "PHASE_REQUIREMENTS"]
    assert err == ""


def test_it_exports_to_a_file(workflow, tmp_path):
    path = tmp_path / "exported.yaml"
    out, err = run("export_workflow", DEFAULT_WORKFLOW_SLUG, "-o", path)
    assert out == ""
    assert err.strip() == f"Wrote workflow 'software_development' to {path}."
    assert parse_workflow(path.read_text(encoding="utf-8")).name == "Software Development"


def test_it_refuses_an_unknown_slug_naming_the_known_ones(workflow, small_file):
    run("load_workflow", small_file)
    with pytest.raises(CommandError) as info:
        run("export_workflow", "nope")
    assert str(info.value) == "No workflow 'nope'; known workflows: small, software_development"


def test_it_reports_a_file_it_cannot_write(workflow, tmp_path):
    path = tmp_path / "missing-folder" / "exported.yaml"
    with pytest.raises(CommandError, match=r"Cannot write .*exported\.yaml: No such file or directory"):
        run("export_workflow", DEFAULT_WORKFLOW_SLUG, "--output", path)


def test_export_then_load_gives_the_same_workflow(workflow, tmp_path):
    path = tmp_path / "exported.yaml"
    run("export_workflow", DEFAULT_WORKFLOW_SLUG, "-o", path)

    out, _ = run("load_workflow", path, "--slug", "copy")

    assert "Workflow 'copy' was created (version 1)." in out
    copy = Workflow.objects.get(slug="copy")
    exported, _ = run("export_workflow", "copy")
    original = path.read_text(encoding="utf-8")
    assert (
        exported.replace("'copy', version 1", f"'software_development', version {workflow.version}").replace(
            "slug: copy\n", "slug: software_development\n"
        )
        == original
    )
    assert transitions_of(copy) == transitions_of(workflow)


# Hot reload


def test_the_watcher_does_not_reload_files_present_at_start(small_file):
    watcher = WorkflowWatcher(small_file.parent)
    assert watcher.poll() == []
    assert not Workflow.objects.filter(slug="small").exists()


def test_the_watcher_reloads_a_changed_file(small_file):
    run("load_workflow", small_file)
    watcher = WorkflowWatcher(small_file.parent)

    write(small_file, SMALL.replace("name: Small", "name: Smaller"))
    [report] = watcher.poll()

    assert report.ok is True
    assert report.path == small_file
    assert report.message.splitlines()[0] == "Workflow 'small' was updated (version 2)."
    workflow = Workflow.objects.get(slug="small")
    assert (workflow.name, workflow.version) == ("Smaller", 2)

    # Nothing changed since: nothing is reloaded.
    assert watcher.poll() == []
    assert Workflow.objects.get(slug="small").version == 2


def test_the_watcher_keeps_the_running_workflow_when_an_edit_is_invalid(small_file):
    run("load_workflow", small_file)
    watcher = WorkflowWatcher(small_file.parent)
    before = database_state()

    write(small_file, INVALID)
    [report] = watcher.poll()

    assert report.ok is False
    lines = report.message.splitlines()
    assert lines[0] == "Not reloaded; the running workflow is unchanged."
    assert lines[1] == f"{small_file}: 2 problems found"
    assert f"{small_file}:{line_of(INVALID, 'PHASE_NOPE')}: phases[0].allowed_transitions[1]" in report.message
    assert f"{small_file}:{line_of(INVALID, 'wip_limit')}: board_columns[0].wip_limit" in report.message
    assert database_state() == before
    # The broken file is not retried until it changes again; the fix is then loaded.
    assert watcher.poll() == []
    write(small_file, SMALL.replace("name: Small", "name: Fixed"))
    [report] = watcher.poll()
    assert report.ok is True
    assert Workflow.objects.get(slug="small").name == "Fixed"


def test_the_watcher_refuses_an_edit_that_would_strand_tickets(review_board, tmp_path):
    path = write(tmp_path / "small.yaml", WITH_REVIEW)
    watcher = WorkflowWatcher(tmp_path)
    before = database_state()

    write(path, SMALL)
    [report] = watcher.poll()

    assert report.ok is False
    assert "still used by 2 tickets" in report.message
    assert str(path) in report.message
    assert database_state() == before


def test_the_watcher_loads_a_new_file_named_after_it(tmp_path):
    watcher = WorkflowWatcher(tmp_path)
    write(tmp_path / "team-flow.yml", SMALL.replace("slug: small\n", ""))
    write(tmp_path / "notes.txt", "not a workflow")

    [report] = watcher.poll()

    assert report.ok is True
    assert report.path == tmp_path / "team-flow.yml"
    assert "Workflow 'team-flow' was created (version 1)." in report.message
    assert Workflow.objects.get(slug="team-flow").phases.count() == 3


def test_the_watcher_reloads_only_the_files_that_changed(tmp_path):
    first = write(tmp_path / "first.yaml", SMALL.replace("slug: small", "slug: first"))
    second = write(tmp_path / "second.yaml", SMALL.replace("slug: small", "slug: second"))
    run("load_workflow", first)
    run("load_workflow", second)
    watcher = WorkflowWatcher(tmp_path)

    write(second, SMALL.replace("slug: small", "slug: second").replace("name: Small", "name: Second"))

    assert [report.path for report in watcher.poll()] == [second]
    assert dict(Workflow.objects.filter(slug__in=["first", "second"]).values_list("slug", "version")) == {
        "first": 1,
        "second": 2,
    }


def test_the_watcher_reports_a_file_name_that_is_not_a_slug(tmp_path):
    watcher = WorkflowWatcher(tmp_path)
    write(tmp_path / "my flow.yaml", SMALL.replace("slug: small\n", ""))

    [report] = watcher.poll()

    assert report.ok is False
    assert "'my flow' is not a valid slug" in report.message
    assert not Workflow.objects.filter(slug="my flow").exists()


def test_watch_files_are_found_by_their_extension(tmp_path):
    watcher = WorkflowWatcher(tmp_path)
    for name in ("a.yaml", "b.yml", "c.json", "d.yaml.bak"):
        write(tmp_path / name, SMALL.replace("slug: small\n", ""))
    assert sorted(Path(report.path).name for report in watcher.poll()) == ["a.yaml", "b.yml"]
