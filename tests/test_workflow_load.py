"""Loading workflow definitions into the database (all or nothing) and exporting them back."""

import pytest

from board.models import Event, PhaseHistory
from board.services import ticket_create, ticket_transition
from phases.defaults import DEFAULT_WORKFLOW_FILE, DEFAULT_WORKFLOW_SLUG
from phases.models import Phase, Workflow
from phases.services import workflow_export, workflow_load
from phases.workflow_files import WorkflowFileError, parse_workflow, read_workflow_file

from .workflow_samples import SMALL, WITH_REVIEW, database_state, load, transitions_of

pytestmark = pytest.mark.django_db


def phase_ids(workflow):
    return dict(workflow.phases.values_list("key", "pk"))


def comparable(definition):
    """A definition as data; transitions are a set in the database, so their order is not compared."""
    data = definition.model_dump()
    for phase in data["phases"]:
        phase["allowed_transitions"] = sorted(phase["allowed_transitions"])
    return data


# Creating


def test_it_creates_a_workflow_with_its_phases():
    result = load(SMALL)
    workflow = Workflow.objects.get(slug="small")
    assert result.workflow == workflow
    assert result.created is True
    assert result.phases_added == ["PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED"]
    assert (workflow.name, workflow.description, workflow.version) == ("Small", "Two steps and a parking place.", 1)
    assert list(workflow.phases.in_order().values_list("key", "sequence_order", "is_terminal")) == [
        ("PHASE_TODO", 0, False),
        ("PHASE_DONE", 1, True),
        ("PHASE_BLOCKED", 2, True),
    ]


def test_it_stores_every_field_of_a_phase():
    workflow = load(SMALL).workflow
    todo = workflow.phases.get(key="PHASE_TODO")
    assert todo.name == "To do"
    assert todo.description == "Work waiting to start."
    assert todo.done_definitions == ["Scope agreed", "Owner named"]
    assert todo.expected_outputs == [
        {
            "type": "document",
            "pattern": "scope.md",
            "required": True,
            "validation_rule": "Lists what is in and out of scope.",
        },
        {"type": "note", "pattern": "notes.md", "required": False},
    ]
    assert todo.phase_prompt == "STEP 1: Agree the scope.\nSTEP 2: Write it down.\n"
    assert todo.next_steps_guide == ["Work starts", "Someone reviews"]
    # Settings of the workflow's own are kept next to the ones the orchestrator reads.
    assert todo.configuration == {
        "timeout_seconds": 60,
        "max_retries": 2,
        "retry_backoff_seconds": 1.5,
        "team": "triage",
    }
    blocked = workflow.phases.get(key="PHASE_BLOCKED")
    assert blocked.configuration == {"holding": True}
    done = workflow.phases.get(key="PHASE_DONE")
    assert (done.description, done.done_definitions, done.expected_outputs) == ("", [], [])
    assert (done.phase_prompt, done.next_steps_guide, done.configuration) == ("", [], {})


def test_it_stores_transitions_as_relations_between_phases():
    workflow = load(SMALL).workflow
    assert transitions_of(workflow) == {
        "PHASE_TODO": {"PHASE_DONE", "PHASE_BLOCKED"},
        "PHASE_DONE": set(),
        "PHASE_BLOCKED": {"PHASE_TODO"},
    }
    todo = workflow.phases.get(key="PHASE_TODO")
    assert set(todo.entered_from.values_list("key", flat=True)) == {"PHASE_BLOCKED"}
    assert todo.allowed_transitions.filter(workflow=workflow).count() == 2


def test_it_creates_the_board_columns():
    workflow = load(SMALL).workflow
    columns = {
        column.key: column
        for column in workflow.columns.select_related("auto_transition_to").prefetch_related("phases")
    }
    assert list(workflow.columns.values_list("key", flat=True)) == ["todo", "done", "blocked"]
    todo, done, blocked = columns["todo"], columns["done"], columns["blocked"]
    assert (todo.name, todo.description, todo.sequence_order) == ("To do", "Not started yet.", 0)
    assert [phase.key for phase in todo.phases.all()] == ["PHASE_TODO"]
    assert (todo.wip_limit, todo.wip_policy, todo.is_terminal) == (3, "block", False)
    assert todo.auto_transition_to == done
    assert todo.color == "blue"
    assert [phase.key for phase in done.phases.all()] == ["PHASE_DONE"]
    assert (done.wip_limit, done.wip_policy, done.is_terminal, done.auto_transition_to) == (None, "warn", True, None)
    assert done.color == "green"
    assert (blocked.color, blocked.is_terminal) == ("red", False)
    assert all(phase.workflow_id == workflow.pk for column in columns.values() for phase in column.phases.all())


def test_it_makes_one_column_per_phase_when_the_file_has_none():
    workflow = load(SMALL.split("board_columns:")[0]).workflow
    mapping = {column.key: [phase.key for phase in column.phases.all()] for column in workflow.columns.all()}
    assert mapping == {"todo": ["PHASE_TODO"], "done": ["PHASE_DONE"], "blocked": ["PHASE_BLOCKED"]}
    assert workflow.columns.get(key="done").is_terminal is True


def test_a_given_slug_wins_over_the_files():
    result = load(SMALL, slug="other")
    assert result.workflow.slug == "other"
    assert not Workflow.objects.filter(slug="small").exists()


def test_it_needs_a_slug():
    before = database_state()
    with pytest.raises(WorkflowFileError) as info:
        load(SMALL.replace("slug: small\n", ""))
    assert info.value.problems[0].path == "slug"
    assert "needs a slug" in info.value.problems[0].message
    assert database_state() == before


def test_it_refuses_a_slug_that_is_not_a_slug():
    before = database_state()
    with pytest.raises(WorkflowFileError, match="'Not a slug!' is not a valid slug"):
        load(SMALL, slug="Not a slug!")
    assert database_state() == before


def test_generated_columns_get_distinct_ids():
    text = "slug: clash\nname: Clash\nphases:\n  - id: PHASE_TODO\n    name: A\n  - id: TODO\n    name: B\n"
    workflow = load(text).workflow
    assert list(workflow.columns.order_by("key").values_list("key", "phases__key")) == [
        ("todo", "PHASE_TODO"),
        ("todo-2", "TODO"),
    ]


# Replacing


def test_it_refuses_an_existing_slug_without_overwrite():
    load(SMALL)
    before = database_state()
    with pytest.raises(WorkflowFileError) as info:
        load(WITH_REVIEW)
    assert "workflow 'small' already exists; load it with overwrite to replace it" in str(info.value)
    assert database_state() == before


def test_overwrite_updates_phases_in_place_so_tickets_keep_their_phase(workflow, board, alice):
    ticket = ticket_create(board=board, title="Design the search", actor=alice, phase="PHASE_DESIGN")
    ids = phase_ids(workflow)
    text = DEFAULT_WORKFLOW_FILE.read_text().replace("    name: Design\n", "    name: Technical design\n")

    version = workflow.version

    result = load(text, overwrite=True)

    workflow.refresh_from_db()
    assert result.created is False
    assert workflow.version == version + 1
    assert phase_ids(workflow) == ids
    assert result.phases_updated == list(ids)
    assert (result.phases_added, result.phases_removed) == ([], [])
    ticket.refresh_from_db()
    assert ticket.phase_id == ids["PHASE_DESIGN"]
    assert ticket.phase.name == "Technical design"


def test_overwrite_bumps_the_version_every_time():
    load(SMALL)
    load(SMALL, overwrite=True)
    result = load(SMALL, overwrite=True)
    assert result.workflow.version == 3
    assert Workflow.objects.get(slug="small").version == 3


def test_overwrite_removes_phases_and_columns_no_longer_in_the_file():
    workflow = load(WITH_REVIEW).workflow
    ids = phase_ids(workflow)
    column_ids = dict(workflow.columns.values_list("key", "pk"))

    result = load(SMALL, overwrite=True)

    workflow.refresh_from_db()
    assert (workflow.name, workflow.version) == ("Small", 2)
    assert result.phases_removed == ["PHASE_REVIEW"]
    assert result.phases_updated == ["PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED"]
    assert phase_ids(workflow) == {key: ids[key] for key in ("PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED")}
    assert not Phase.objects.filter(pk=ids["PHASE_REVIEW"]).exists()
    assert transitions_of(workflow) == {
        "PHASE_TODO": {"PHASE_DONE", "PHASE_BLOCKED"},
        "PHASE_DONE": set(),
        "PHASE_BLOCKED": {"PHASE_TODO"},
    }
    assert dict(workflow.columns.values_list("key", "pk")) == {
        key: column_ids[key] for key in ("todo", "done", "blocked")
    }
    todo = workflow.columns.get(key="todo")
    assert (todo.wip_limit, todo.wip_policy, todo.auto_transition_to.key, todo.color) == (3, "block", "done", "blue")


def test_overwrite_adds_the_phases_the_file_adds():
    workflow = load(SMALL).workflow
    ids = phase_ids(workflow)

    result = load(WITH_REVIEW, overwrite=True)

    assert result.phases_added == ["PHASE_REVIEW"]
    assert result.phases_updated == ["PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED"]
    assert {key: pk for key, pk in phase_ids(workflow).items() if key != "PHASE_REVIEW"} == ids
    assert transitions_of(workflow)["PHASE_BLOCKED"] == {"PHASE_TODO", "PHASE_REVIEW"}
    review = workflow.columns.get(key="review")
    assert [phase.key for phase in review.phases.all()] == ["PHASE_REVIEW"]
    # Fields the new file leaves out go back to their defaults.
    todo = workflow.phases.get(key="PHASE_TODO")
    assert (todo.configuration, todo.expected_outputs, todo.description) == ({}, [], "")
    assert workflow.columns.get(key="todo").auto_transition_to is None


def test_the_summary_says_what_changed():
    load(WITH_REVIEW)
    summary = load(SMALL, overwrite=True).summary()
    assert summary.splitlines() == [
        "Workflow 'small' was updated (version 2).",
        "  phases updated: PHASE_TODO, PHASE_DONE, PHASE_BLOCKED",
        "  phases removed: PHASE_REVIEW",
    ]


def test_it_refuses_to_remove_a_phase_used_by_tickets(review_board):
    workflow = review_board.workflow
    transitions = transitions_of(workflow)
    before = database_state()

    with pytest.raises(WorkflowFileError) as info:
        load(SMALL, overwrite=True)

    [problem] = info.value.problems
    assert problem.path == "phases"
    assert "phase 'PHASE_REVIEW' would be removed but is still used by 2 tickets" in problem.message
    assert "remap it (PHASE_REVIEW=NEW_PHASE)" in problem.message
    assert database_state() == before
    workflow.refresh_from_db()
    assert (workflow.name, workflow.version) == ("Small with review", 1)
    assert set(phase_ids(workflow)) == {"PHASE_TODO", "PHASE_REVIEW", "PHASE_DONE", "PHASE_BLOCKED"}
    assert transitions_of(workflow) == transitions
    assert review_board.tickets.filter(phase__key="PHASE_REVIEW").count() == 2


# Remapping


def test_remap_moves_the_tickets_and_removes_the_phase(review_board):
    workflow = review_board.workflow
    ids = phase_ids(workflow)

    result = load(SMALL, overwrite=True, remap={"PHASE_REVIEW": "PHASE_TODO"})

    assert set(review_board.tickets.values_list("phase_id", flat=True)) == {ids["PHASE_TODO"]}
    assert not Phase.objects.filter(pk=ids["PHASE_REVIEW"]).exists()
    assert result.phases_removed == ["PHASE_REVIEW"]
    assert result.remapped == {"PHASE_REVIEW": ("PHASE_TODO", {"tickets": 2})}
    assert "  PHASE_REVIEW -> PHASE_TODO: 2 tickets" in result.summary().splitlines()


def test_remap_can_move_tickets_to_a_phase_the_file_adds(review_board):
    renamed = WITH_REVIEW.replace("PHASE_REVIEW", "PHASE_QA")

    result = load(renamed, overwrite=True, remap={"PHASE_REVIEW": "PHASE_QA"})

    qa = review_board.workflow.phases.get(key="PHASE_QA")
    assert (result.phases_added, result.phases_removed) == (["PHASE_QA"], ["PHASE_REVIEW"])
    assert list(review_board.tickets.values_list("phase_id", flat=True)) == [qa.pk, qa.pk]
    assert [phase.key for phase in review_board.workflow.columns.get(key="review").phases.all()] == ["PHASE_QA"]


@pytest.mark.parametrize(
    ("remap", "message"),
    [
        ({"PHASE_NOPE": "PHASE_TODO"}, "'PHASE_NOPE' is not a phase of workflow 'small'"),
        ({"PHASE_TODO": "PHASE_DONE"}, "'PHASE_TODO' stays in the file, so nothing moves out of it"),
        ({"PHASE_REVIEW": "PHASE_QA"}, "'PHASE_QA' is not a phase in the file"),
    ],
)
def test_it_reports_remap_errors(review_board, remap, message):
    before = database_state()
    with pytest.raises(WorkflowFileError) as info:
        load(SMALL, overwrite=True, remap=remap)
    assert ("--remap", message) in [(problem.path, problem.message) for problem in info.value.problems]
    assert database_state() == before


def test_it_reports_every_remap_error_at_once(review_board):
    with pytest.raises(WorkflowFileError) as info:
        load(SMALL, overwrite=True, remap={"PHASE_NOPE": "PHASE_GONE", "PHASE_REVIEW": "PHASE_QA"})
    messages = [problem.message for problem in info.value.problems]
    assert messages == [
        "'PHASE_NOPE' is not a phase of workflow 'small'",
        "'PHASE_GONE' is not a phase in the file",
        "'PHASE_QA' is not a phase in the file",
    ]


def test_remap_on_a_new_workflow_is_an_error():
    with pytest.raises(WorkflowFileError) as info:
        load(SMALL, remap={"PHASE_REVIEW": "PHASE_TODO"})
    assert "'PHASE_REVIEW' is not a phase of workflow 'small'" in str(info.value)
    assert not Workflow.objects.filter(slug="small").exists()


# History


def test_history_survives_a_removed_phase(review_board, alice):
    ticket = review_board.tickets.first()
    ticket_transition(ticket=ticket, to_phase="PHASE_DONE", actor=alice)
    done = review_board.workflow.phases.get(key="PHASE_DONE")

    load(SMALL, overwrite=True, remap={"PHASE_REVIEW": "PHASE_TODO"})

    created, moved = ticket.history.order_by("pk")
    assert (created.from_phase, created.from_key, created.to_phase, created.to_key) == (None, "", None, "PHASE_REVIEW")
    assert (moved.from_phase, moved.from_key, moved.to_phase, moved.to_key) == (
        None,
        "PHASE_REVIEW",
        done,
        "PHASE_DONE",
    )
    # The remapped ticket's history still says where it was, and how it left.
    other = review_board.tickets.exclude(pk=ticket.pk).get()
    todo = review_board.workflow.phases.get(key="PHASE_TODO")
    assert list(other.history.values_list("from_key", "to_phase", "to_key", "kind")) == [
        ("", None, "PHASE_REVIEW", "normal"),
        ("PHASE_REVIEW", todo.pk, "PHASE_TODO", "jump"),
    ]
    assert PhaseHistory.objects.filter(ticket__board=review_board).count() == 4


# All or nothing


def test_a_failure_after_phases_were_written_leaves_the_database_as_it_was(review_board, monkeypatch):
    before = database_state()
    events = Event.objects.count()
    seen = []

    def fail(phase, *args, **kwargs):
        # By now phases and columns are written and the tickets moved, with their history and events.
        seen.append(sorted(review_board.tickets.values_list("phase__key", flat=True)))
        raise RuntimeError("disk full")

    monkeypatch.setattr(Phase, "delete", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        load(SMALL.replace("name: Small", "name: Renamed"), overwrite=True, remap={"PHASE_REVIEW": "PHASE_TODO"})

    assert seen == [["PHASE_TODO", "PHASE_TODO"]]
    assert database_state() == before
    assert Event.objects.count() == events
    assert Workflow.objects.get(slug="small").name == "Small with review"


def test_a_failure_midway_through_a_creation_leaves_no_workflow(monkeypatch):
    before = database_state()
    saved = []
    save = Phase.save

    def fail_on_third(phase, *args, **kwargs):
        if len(saved) == 2:
            raise RuntimeError("disk full")
        save(phase, *args, **kwargs)
        saved.append(phase.key)

    monkeypatch.setattr(Phase, "save", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        load(SMALL)

    assert saved == ["PHASE_TODO", "PHASE_DONE"]
    assert database_state() == before
    assert not Workflow.objects.filter(slug="small").exists()


def test_a_failure_while_linking_transitions_leaves_the_database_as_it_was(monkeypatch):
    load(SMALL)
    before = database_state()
    manager_class = type(Phase.objects.first().allowed_transitions)

    def fail(manager, *args, **kwargs):
        raise RuntimeError("lost connection")

    monkeypatch.setattr(manager_class, "set", fail)
    with pytest.raises(RuntimeError, match="lost connection"):
        load(WITH_REVIEW, overwrite=True)

    assert database_state() == before


# Dry run


def test_dry_run_reports_a_creation_and_writes_nothing():
    before = database_state()

    result = load(SMALL, dry_run=True)

    assert (result.dry_run, result.created) == (True, True)
    assert result.phases_added == ["PHASE_TODO", "PHASE_DONE", "PHASE_BLOCKED"]
    assert result.summary().splitlines()[0] == "Workflow 'small' would be created (version 1)."
    assert database_state() == before


def test_dry_run_reports_an_update_and_writes_nothing(review_board):
    before = database_state()

    result = load(SMALL, overwrite=True, remap={"PHASE_REVIEW": "PHASE_TODO"}, dry_run=True)

    assert (result.dry_run, result.created) == (True, False)
    assert result.phases_removed == ["PHASE_REVIEW"]
    assert result.remapped == {"PHASE_REVIEW": ("PHASE_TODO", {"tickets": 2})}
    assert result.summary().splitlines() == [
        "Workflow 'small' would be updated (version 2).",
        "  phases updated: PHASE_TODO, PHASE_DONE, PHASE_BLOCKED",
        "  phases removed: PHASE_REVIEW",
        "  PHASE_REVIEW -> PHASE_TODO: 2 tickets",
    ]
    assert database_state() == before


def test_dry_run_refuses_what_a_load_would_refuse(review_board):
    before = database_state()
    with pytest.raises(WorkflowFileError, match="still used by 2 tickets"):
        load(SMALL, overwrite=True, dry_run=True)
    assert database_state() == before


# Export and round trips


def test_export_keeps_every_field_of_the_file(workflow):
    exported = parse_workflow(workflow_export(workflow=workflow))
    assert comparable(exported) == comparable(read_workflow_file(DEFAULT_WORKFLOW_FILE))


def test_export_of_a_small_workflow_reads_back_as_its_file():
    workflow = load(SMALL).workflow
    assert parse_workflow(workflow_export(workflow=workflow)) == parse_workflow(SMALL)


def test_export_says_which_version_it_came_from():
    workflow = load(SMALL).workflow
    assert workflow_export(workflow=workflow).splitlines()[0] == "# Workflow 'small', version 1, exported from Omoi."
    load(SMALL, overwrite=True)
    workflow.refresh_from_db()
    assert "version 2" in workflow_export(workflow=workflow).splitlines()[0]


def test_export_then_load_under_another_slug_gives_the_same_workflow(workflow):
    exported = parse_workflow(workflow_export(workflow=workflow))

    copy = workflow_load(definition=exported, slug="copy").workflow

    again = parse_workflow(workflow_export(workflow=copy))
    assert again.slug == "copy"
    assert again.model_copy(update={"slug": DEFAULT_WORKFLOW_SLUG}) == exported
    assert transitions_of(copy) == transitions_of(workflow)
    assert copy.phases.count() == workflow.phases.count() == 8
    assert set(copy.phases.values_list("pk", flat=True)).isdisjoint(workflow.phases.values_list("pk", flat=True))


def test_export_then_overwrite_changes_nothing_but_the_version(workflow):
    before = database_state()

    load(workflow_export(workflow=workflow), overwrite=True)

    after = database_state()
    [(pk, slug, name, description, version)] = after.pop("workflows")
    assert (pk, slug, name, description, version) == (*before.pop("workflows")[0][:4], workflow.version + 1)
    assert after == before
