"""Workflow files hold only what the database and the code reading them accept, and alias bombs are refused unbuilt."""

import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from board.models import Board, Task
from board.services import agent_create, ticket_create
from phases.models import Phase
from phases.workflow_files import WorkflowFileError, parse_workflow

from .admin_forms import change_data
from .agent_api import AgentClient
from .workflow_samples import SMALL, database_state, load

pytestmark = pytest.mark.django_db


def flow(phase=(), column=(), top=()):
    """A one-phase workflow with extra lines in its phase, in its column and at the top; a `name:` line replaces the name."""

    def named(lines, default):
        return [*([] if any(line.startswith("name:") for line in lines) else [f"name: {default}"]), *lines]

    lines = ["slug: limits", *named(top, "Limits"), "phases:", "  - id: PHASE_WORK"]
    lines += [f"    {line}" for line in named(phase, "Work")]
    lines += ["board_columns:", "  - id: work", "    phase_mapping: [PHASE_WORK]"]
    lines += [f"    {line}" for line in named(column, "Work")]
    return "\n".join(lines) + "\n"


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


def problems_of(text):
    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text, source="flow.yaml")
    return info.value.problems


def long(length):
    return "x" * length


# (where the line goes, the line, the path of the problem, part of its message)
REFUSED = [
    (
        "column",
        "wip_limit: 100000000000000000000000000000",
        "board_columns[0].wip_limit",
        "less than or equal to 10000",
    ),
    ("column", "wip_limit: 3000000000", "board_columns[0].wip_limit", "less than or equal to 10000"),
    ("column", "sequence_order: 3000000000", "board_columns[0].sequence_order", "less than or equal to 1000000"),
    ("phase", "sequence_order: 100000000000000000000000000000", "phases[0].sequence_order", "less than or equal"),
    ("phase", "sequence_order: -1", "phases[0].sequence_order", "greater than or equal to 0"),
    (
        "phase",
        "configuration: {retry_backoff_seconds: .inf}",
        "phases[0].configuration.retry_backoff_seconds",
        "finite",
    ),
    (
        "phase",
        "configuration: {retry_backoff_seconds: .nan}",
        "phases[0].configuration.retry_backoff_seconds",
        "finite",
    ),
    (
        "phase",
        "configuration: {retry_backoff_seconds: 86401}",
        "phases[0].configuration.retry_backoff_seconds",
        "86400",
    ),
    ("phase", "configuration: {timeout_seconds: 1000000000000}", "phases[0].configuration.timeout_seconds", "604800"),
    ("phase", "configuration: {timeout_seconds: 0}", "phases[0].configuration.timeout_seconds", "greater than 0"),
    ("phase", "configuration: {max_retries: 101}", "phases[0].configuration.max_retries", "less than or equal to 100"),
    ("phase", "configuration: {max_retries: -1}", "phases[0].configuration.max_retries", "greater than or equal to 0"),
    ("phase", "configuration: {holding: 'yes'}", "phases[0].configuration.holding", "valid boolean"),
    ("phase", "configuration: {limits: {ratio: .nan}}", "phases[0].configuration.limits.ratio", "finite number"),
    ("phase", "configuration: {limits: [1, -.inf]}", "phases[0].configuration.limits[1]", "finite number"),
    ("phase", "configuration: {big: 9007199254740993}", "phases[0].configuration.big", "within ±2**53"),
    ("phase", 'configuration: {note: "a\\0b"}', "phases[0].configuration.note", "NUL character"),
    ("phase", 'configuration: {note: "\\ud800"}', "phases[0].configuration.note", "unpaired surrogate"),
    ("phase", 'configuration: {"a\\0": 1}', "phases[0].configuration.a\\x00", "the key contains a NUL character"),
    ("phase", "configuration: {started: !!timestamp 2024-01-01}", "phases[0].configuration.started", "quote the value"),
    ("phase", "configuration: {blob: !!binary aGVsbG8=}", "phases[0].configuration.blob", "quote the value"),
    ("phase", "configuration: {1: one}", "phases[0].configuration", "the key '1' is read as !!int"),
    ("phase", "configuration: {null: one}", "phases[0].configuration", "the key 'null' is read as !!null"),
    ("phase", "configuration: {deep: " + "[" * 17 + "]" * 17 + "}", "phases[0].configuration.deep" + "[0]" * 16, "16"),
    ("phase", f"configuration: {{text: {long(70_000)}}}", "phases[0].configuration", "at most 65536 are allowed"),
    ("phase", 'description: "a\\0b"', "phases[0].description", "NUL character"),
    ("phase", 'phase_prompt: "\\udfff"', "phases[0].phase_prompt", "unpaired surrogate"),
    ("phase", f"description: {long(10_001)}", "phases[0].description", "at most 10000 characters"),
    ("phase", f"phase_prompt: {long(50_001)}", "phases[0].phase_prompt", "at most 50000 characters"),
    ("phase", f"done_definitions: [{long(1_001)}]", "phases[0].done_definitions[0]", "at most 1000 characters"),
    ("phase", 'done_definitions: ["one\\ntwo"]', "phases[0].done_definitions[0]", "must be one line"),
    ("phase", f"next_steps_guide: [{', '.join(['step'] * 101)}]", "phases[0].next_steps_guide", "at most 100 items"),
    (
        "phase",
        f"expected_outputs: [{{type: doc, pattern: {long(501)}}}]",
        "phases[0].expected_outputs[0].pattern",
        "500",
    ),
    ("phase", 'expected_outputs: [{type: "doc\\0"}]', "phases[0].expected_outputs[0].type", "NUL character"),
    ("phase", f"allowed_transitions: [{long(10_000)}]", "phases[0].allowed_transitions[0]", "at most 64 characters"),
    ("top", f"description: {long(10_001)}", "description", "at most 10000 characters"),
    ("top", 'name: "Limits\\0"', "name", "NUL character"),
    ("top", f"name: {long(201)}", "name", "at most 200 characters"),
    ("column", f"description: {long(10_001)}", "board_columns[0].description", "at most 10000 characters"),
    ("column", 'name: "Work\\nin progress"', "board_columns[0].name", "must be one line"),
    ("column", f"auto_transition_to: {long(65)}", "board_columns[0].auto_transition_to", "at most 64 characters"),
]


@pytest.mark.parametrize(("where", "line", "path", "message"), REFUSED, ids=[case[1][:40] for case in REFUSED])
def test_it_refuses_a_value_the_database_or_the_code_cannot_use_at_its_line(where, line, path, message):
    text = flow(**{where: [line]})

    problems = problems_of(text)

    assert [(problem.path, problem.line) for problem in problems] == [(path, line_of(text, line[:20]))]
    assert message in problems[0].message


def test_a_long_id_is_refused_without_being_repeated_in_the_message():
    text = flow().replace("id: PHASE_WORK", f"id: PHASE_{long(10_000)}", 1)
    messages = [problem.format() for problem in problems_of(text)]
    assert any("phases[0].id: string should have at most 64 characters" in message for message in messages)
    assert all(len(message) < 500 for message in messages)


# The largest value of each kind loads, on every database, and reads back as written.
EDGES = [
    ("column", "wip_limit: 10000"),
    ("column", "sequence_order: 1000000"),
    ("phase", "sequence_order: 1000000"),
    ("phase", "configuration: {timeout_seconds: 604800, max_retries: 100, retry_backoff_seconds: 86400}"),
    ("phase", "configuration: {big: 9007199254740992, small: -9007199254740992, ratio: 1.5e300}"),
    ("phase", "configuration: {deep: " + "[" * 16 + "]" * 16 + "}"),
    ("phase", f"configuration: {{text: {long(65_000)}}}"),
    ("phase", "configuration: {when: 2024-01-01, pi: 3.14, 'yes': true, emoji: 🚀}"),
    ("phase", f"description: {long(10_000)}"),
    ("phase", f"phase_prompt: {long(50_000)}"),
    ("phase", f"done_definitions: [{long(1_000)}]"),
    ("phase", f"name: {long(200)}"),
    ("top", f"name: {long(200)}"),
    ("column", f"name: {long(200)}"),
]


@pytest.mark.parametrize(("where", "line"), EDGES, ids=[case[1][:40] for case in EDGES])
def test_the_largest_values_allowed_load_and_read_back(where, line):
    text = flow(**{where: [line]})
    definition = parse_workflow(text)

    workflow = load(text).workflow

    phase, column = workflow.phases.get(), workflow.columns.get()
    stored = definition.phases[0]
    assert (phase.name, phase.description, phase.phase_prompt) == (stored.name, stored.description, stored.phase_prompt)
    assert phase.configuration == stored.configuration.model_dump(exclude_none=True)
    assert phase.done_definitions == stored.done_definitions
    assert (column.name, column.wip_limit) == (definition.board_columns[0].name, definition.board_columns[0].wip_limit)
    assert workflow.name == definition.name


def test_a_date_in_the_configuration_is_kept_as_text():
    workflow = load(flow(phase=["configuration: {since: 2024-01-01}"])).workflow
    assert workflow.phases.get().configuration == {"since": "2024-01-01"}


def test_tasks_can_be_created_in_a_phase_with_the_largest_settings(client, alice):
    text = flow(phase=["configuration: {timeout_seconds: 604800, max_retries: 100, retry_backoff_seconds: 86400}"])
    board = Board.objects.create(name="Limits", slug="limits", workflow=load(text).workflow)
    ticket = ticket_create(board=board, title="Long work", actor=alice)
    agent, token = agent_create(name="worker", boards=[board], actor=alice)

    response = AgentClient(client, token).post("/tasks", {"ticket_id": ticket.pk, "title": "Work slowly"})

    assert response.status_code == 201, response.content
    task = Task.objects.get(pk=response.json()["id"])
    assert (task.timeout_seconds, task.max_retries) == (604800, 100)


# Refused alike by every way in.


def test_the_command_reports_a_value_the_database_cannot_hold(tmp_path):
    path = tmp_path / "limits.yaml"
    text = flow(column=["wip_limit: 3000000000"], phase=['configuration: {note: "a\\0b"}'])
    path.write_text(text, encoding="utf-8")
    before = database_state()

    with pytest.raises(CommandError) as info:
        call_command("load_workflow", str(path))

    message = str(info.value)
    assert f"{path}:{line_of(text, 'note')}: phases[0].configuration.note: contains a NUL character" in message
    assert f"{path}:{line_of(text, 'wip_limit')}: board_columns[0].wip_limit: input should be less than" in message
    assert database_state() == before


@pytest.mark.parametrize(
    "line",
    [
        "configuration: {timeout_seconds: 3000000000}",
        "configuration: {ratio: .nan}",
        'configuration: {note: "\\ud800"}',
        "configuration: {1: one}",
        "configuration: {blob: !!binary aGVsbG8=}",
        f"description: {long(10_001)}",
        "sequence_order: 3000000000",
    ],
)
def test_the_admin_import_lists_the_problem_and_saves_nothing(alice_client, line):
    text = flow(phase=[line])
    before = database_state()

    response = alice_client.post(
        reverse("admin:phases_workflow_import"),
        {"file": SimpleUploadedFile("limits.yaml", text.encode(), content_type="application/yaml")},
    )

    assert response.status_code == 200
    [problem] = response.context["problems"]
    assert problem.startswith(f"limits.yaml:{line_of(text, line[:20])}: phases[0].")
    assert database_state() == before


# Alias bombs


def bomb(levels=9, width=9):
    """A small file whose phase configuration repeats an alias `width` times on each of `levels` levels."""
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]" for level in range(1, levels)]
    return flow(phase=["configuration:", *(f"  {line}" for line in lines)])


def test_the_bomb_is_small():
    assert len(bomb().encode()) < 1200


def test_an_alias_bomb_is_refused_unbuilt_at_the_smallest_part_too_large(settings):
    settings.OMOI_MAX_WORKFLOW_BYTES = 1024 * 1024
    text = bomb()
    started = time.monotonic()

    [problem] = problems_of(text)

    assert time.monotonic() - started < 0.5
    # a6 holds 9**7 texts: the first part past twice the largest file allowed.
    assert (problem.path, problem.line) == ("phases[0].configuration.a6", line_of(text, "a6:"))
    assert "expands through its aliases to" in problem.message
    assert "more than the 2097152 allowed" in problem.message


def test_the_command_refuses_an_alias_bomb_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(), encoding="utf-8")
    before = database_state()
    started = time.monotonic()

    with pytest.raises(CommandError) as info:
        call_command("load_workflow", str(path))

    assert time.monotonic() - started < 0.5
    assert f"{path}:{line_of(bomb(), 'a6:')}: phases[0].configuration.a6: expands through its aliases" in str(
        info.value
    )
    assert database_state() == before


def test_the_admin_import_refuses_an_alias_bomb_at_once(alice_client):
    before = database_state()
    started = time.monotonic()

    response = alice_client.post(
        reverse("admin:phases_workflow_import"),
        {"file": SimpleUploadedFile("bomb.yaml", bomb().encode(), content_type="application/yaml")},
    )

    assert time.monotonic() - started < 0.5
    assert response.status_code == 200
    [problem] = response.context["problems"]
    assert problem.startswith(f"bomb.yaml:{line_of(bomb(), 'a6:')}: phases[0].configuration.a6: expands through")
    assert database_state() == before


def test_the_expansion_limit_follows_the_largest_file_allowed(settings):
    text = bomb(levels=4)  # a2 expands to 1549 characters, a3 to 13942
    assert parse_workflow(text)

    settings.OMOI_MAX_WORKFLOW_BYTES = 1024

    [problem] = problems_of(text)
    assert problem.path == "phases[0].configuration.a3"
    assert "to 13942 characters, more than the 2048 allowed" in problem.message


def test_a_recursive_alias_is_refused_at_its_line():
    text = flow(phase=["configuration:", "  loop: &loop [1, *loop]"])
    [problem] = problems_of(text)
    assert (problem.path, problem.line) == ("phases[0].configuration.loop[1]", line_of(text, "loop:"))
    assert "refers to a value that contains it" in problem.message


def test_aliases_that_share_settings_between_phases_still_load():
    text = SMALL.replace(
        "configuration:\n      timeout_seconds: 60", "configuration: &shared\n      timeout_seconds: 60"
    )
    text = text.replace("configuration: {holding: true}", "configuration: {<<: *shared, holding: true}")

    workflow = load(text).workflow

    blocked = workflow.phases.get(key="PHASE_BLOCKED")
    assert blocked.configuration == {
        "timeout_seconds": 60,
        "max_retries": 2,
        "retry_backoff_seconds": 1.5,
        "team": "triage",
        "holding": True,
    }


# The admin's phase form checks its JSON by the same rules.


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("configuration", '{"timeout_seconds": 1000000000000}', "timeout_seconds: Input should be less than or equal"),
        ("configuration", '{"retry_backoff_seconds": NaN}', "retry_backoff_seconds: Input should be a finite number"),
        ("configuration", '{"limits": {"ratio": Infinity}}', "limits.ratio: must be a finite number"),
        ("configuration", '{"note": "a\\u0000b"}', "note: contains a NUL character"),
        ("configuration", '{"note": "\\ud800"}', "note: contains an unpaired surrogate"),
        ("configuration", '{"big": 9007199254740993}', "big: integers must be within ±2**53"),
        ("configuration", "[" * 5000 + "]" * 5000, "The JSON is nested too deeply."),
        ("configuration", '{"deep": ' + "[" * 20 + "]" * 20 + "}", "is nested more than 16 levels deep"),
        ("expected_outputs", '[{"type": "doc", "pattern": "a\\u0000"}]', "[0].pattern: contains a NUL character"),
        ("expected_outputs", '[{"type": "doc", "validation_rule": "\\udc00"}]', "unpaired surrogate"),
    ],
)
def test_the_phase_form_refuses_what_a_file_may_not_hold(alice_client, field, text, message):
    phase = load(SMALL).workflow.phases.get(key="PHASE_TODO")
    url = reverse("admin:phases_phase_change", args=[phase.pk])
    before = database_state()

    response = alice_client.post(url, change_data(alice_client.get(url), **{field: text}))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors[field]
    assert any(message in error for error in errors), errors
    assert database_state() == before
    assert Phase.objects.get(pk=phase.pk).configuration["timeout_seconds"] == 60
