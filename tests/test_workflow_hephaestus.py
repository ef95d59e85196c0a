"""Loading a Hephaestus workflow folder: one NN_name.yaml per phase and an optional phases_config.yaml."""

import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from board.errors import TransitionRefused
from board.models import Board
from board.services import ticket_create, ticket_transition
from phases.hephaestus import read_hephaestus_folder
from phases.models import Workflow
from phases.services import workflow_export, workflow_load
from phases.workflow_files import WorkflowFileError, parse_workflow

from .workflow_samples import database_state, transitions_of

pytestmark = pytest.mark.django_db

SAMPLE = Path(settings.BASE_DIR) / "examples" / "hephaestus" / "prd_to_software"
FOLDER_PHASES = ["PHASE_REQUIREMENTS", "PHASE_SYSTEM_DESIGN", "PHASE_IMPLEMENTATION", "PHASE_REVIEW"]


def run(*args):
    out = StringIO()
    call_command("load_workflow", *[str(arg) for arg in args], stdout=out, stderr=StringIO())
    return out.getvalue()


def load_folder(folder, **options):
    return workflow_load(definition=read_hephaestus_folder(folder).definition, **options).workflow


@pytest.fixture
def folder(tmp_path):
    """A copy of the sample folder, to break in one place."""
    return Path(shutil.copytree(SAMPLE, tmp_path / "flow"))


def problems_of(folder):
    with pytest.raises(WorkflowFileError) as caught:
        read_hephaestus_folder(folder)
    return [problem.format(caught.value.source) for problem in caught.value.problems]


# A good folder


def test_the_phases_come_from_the_file_names_in_the_order_of_their_numbers():
    workflow = load_folder(SAMPLE)
    phases = list(workflow.phases.in_order().values_list("key", "name", "sequence_order", "is_terminal"))
    assert phases == [
        ("PHASE_REQUIREMENTS", "Requirements", 0, False),
        ("PHASE_SYSTEM_DESIGN", "System Design", 1, False),
        ("PHASE_IMPLEMENTATION", "Implementation", 2, False),
        ("PHASE_REVIEW", "Review", 3, False),
        ("PHASE_DONE", "Done", 4, True),
        ("PHASE_BLOCKED", "Blocked", 5, True),
    ]


def test_the_workflow_is_named_after_the_folder_and_takes_its_settings():
    workflow = load_folder(SAMPLE)
    assert (workflow.slug, workflow.name) == ("prd_to_software", "Prd To Software")
    assert workflow.has_result is True
    assert workflow.result_criteria == ["The application starts", "All tests pass"]
    assert workflow.on_result_found == "stop_all"


def test_a_snake_case_phase_file_maps_every_key():
    requirements = load_folder(SAMPLE).phases.get(key="PHASE_REQUIREMENTS")
    assert requirements.description == (
        "Read the product requirements document and turn it into numbered requirements.\n"
    )
    assert requirements.phase_prompt == (
        "You are a requirements analyst. Read PRD.md first.\nAsk for nothing: write open questions down.\n"
    )
    assert requirements.done_definitions == [
        "Requirements written to docs/requirements.md",
        "Each requirement has an acceptance test",
    ]
    # A text of next steps is one step a line, its bullets dropped.
    assert requirements.next_steps_guide == ["Design starts from the requirements", "Open questions become tickets"]
    assert requirements.expected_outputs == [
        {
            "type": "output",
            "pattern": "",
            "required": False,
            "validation_rule": "docs/requirements.md: the numbered requirements",
        },
        # The file_exists check, which the gate holds the phase to.
        {
            "type": "file",
            "pattern": "docs/requirements.md",
            "required": True,
            "validation_rule": "The requirements document exists",
        },
    ]
    assert requirements.validation_criteria == [
        {
            "description": "The requirements document exists",
            "check_type": "file_exists",
            "target": "docs/requirements.md",
        },
        {
            "description": "Every requirement is numbered",
            "check_type": "file_contains",
            "target": "docs/requirements.md",
            "pattern": r"REQ-\d+",
        },
    ]
    assert requirements.configuration == {"working_directory": "/workspace/project"}


def test_a_title_case_phase_file_maps_every_key():
    design = load_folder(SAMPLE).phases.get(key="PHASE_SYSTEM_DESIGN")
    assert design.description == "Design the system the requirements describe."
    assert design.phase_prompt == "Keep the design as small as the requirements allow."
    assert design.done_definitions == ["Design document written"]
    assert design.next_steps_guide == ["Implementation follows the design"]
    assert [output["validation_rule"] for output in design.expected_outputs] == [
        "docs/design.md",
        "a component diagram",
    ]
    assert all(output["required"] is False for output in design.expected_outputs)
    assert design.validation_criteria == []
    assert design.configuration == {"cli_tool": "claude", "cli_model": "opus"}


def test_a_criterion_keeps_the_keys_its_check_adds_and_a_disabled_validation_loads_none():
    workflow = load_folder(SAMPLE)
    implementation = workflow.phases.get(key="PHASE_IMPLEMENTATION")
    assert implementation.validation_criteria == [
        {"description": "The tests pass", "check_type": "command_success", "command": "pytest -q", "timeout": 300}
    ]
    # Only file checks become expected outputs.
    assert implementation.expected_outputs == []
    review = workflow.phases.get(key="PHASE_REVIEW")
    assert (review.validation_criteria, review.expected_outputs, review.done_definitions) == ([], [], [])


def test_every_phase_may_move_to_every_other_and_blocked_leads_back_to_any():
    workflow = load_folder(SAMPLE)
    transitions = transitions_of(workflow)
    for key in FOLDER_PHASES:
        assert transitions[key] == {*FOLDER_PHASES, "PHASE_DONE", "PHASE_BLOCKED"} - {key}
    assert transitions["PHASE_DONE"] == set()
    assert transitions["PHASE_BLOCKED"] == set(FOLDER_PHASES)
    assert workflow.phases.get(key="PHASE_BLOCKED").is_holding


def test_each_phase_has_a_column_of_its_own():
    workflow = load_folder(SAMPLE)
    columns = [
        (column.key, column.name, [phase.key for phase in column.phases.all()], column.is_terminal, column.category)
        for column in workflow.columns.order_by("sequence_order")
    ]
    assert columns == [
        ("requirements", "Requirements", ["PHASE_REQUIREMENTS"], False, "working"),
        ("system-design", "System Design", ["PHASE_SYSTEM_DESIGN"], False, "working"),
        ("implementation", "Implementation", ["PHASE_IMPLEMENTATION"], False, "working"),
        ("review", "Review", ["PHASE_REVIEW"], False, "working"),
        ("done", "Done", ["PHASE_DONE"], True, "done"),
        ("blocked", "Blocked", ["PHASE_BLOCKED"], False, "waiting"),
    ]
    assert list(workflow.columns.filter(color__gt="").values_list("key", "color")) == [
        ("done", "green"),
        ("blocked", "red"),
    ]


def test_a_ticket_moves_freely_between_the_phases_and_back_from_blocked(alice):
    board = Board.objects.create(name="Hephaestus board", slug="heph", workflow=load_folder(SAMPLE))
    board.members.add(alice)
    ticket = ticket_create(board=board, title="Build the app", actor=alice)
    assert ticket.phase.key == "PHASE_REQUIREMENTS"

    for key in ("PHASE_REVIEW", "PHASE_SYSTEM_DESIGN", "PHASE_BLOCKED", "PHASE_IMPLEMENTATION", "PHASE_DONE"):
        ticket = ticket_transition(ticket=ticket, to_phase=key, actor=alice)
        assert ticket.phase.key == key

    with pytest.raises(TransitionRefused):
        ticket_transition(ticket=ticket, to_phase="PHASE_REVIEW", actor=alice)


def test_agents_read_the_criteria_and_the_working_directory_in_their_instructions():
    requirements = load_folder(SAMPLE).phases.get(key="PHASE_REQUIREMENTS")
    instructions = requirements.agent_instructions()
    assert "Working directory: `/workspace/project`" in instructions
    assert "- Every requirement is numbered (file_contains, `docs/requirements.md`, `REQ-\\d+`)" in instructions
    assert "- file: `docs/requirements.md` (required) — The requirements document exists" in instructions


def test_what_has_no_counterpart_is_named_in_notes():
    assert read_hephaestus_folder(SAMPLE).notes == [
        "10_review.yaml: validation is disabled (enabled: false), so its 1 criterion is not loaded",
        "phases_config.yaml: board_config is not loaded; the board has one column per phase, "
        "and tickets move through the phases",
    ]


def test_a_folder_with_phases_named_done_and_blocked_gets_no_others(folder):
    (folder / "20_done.yaml").write_text("description: Shipped.\n", encoding="utf-8")
    workflow = load_folder(folder)
    done = workflow.phases.get(key="PHASE_DONE")
    assert (done.name, done.description, done.is_terminal, done.sequence_order) == ("Done", "Shipped.", False, 4)
    assert workflow.phases.filter(name="Done").count() == 1
    assert transitions_of(workflow)["PHASE_DONE"] == {*FOLDER_PHASES, "PHASE_BLOCKED"}
    assert workflow.phases.in_order().last().key == "PHASE_BLOCKED"


def test_a_folder_without_settings_loads_the_default_ones(folder):
    (folder / "phases_config.yaml").unlink()
    workflow = load_folder(folder)
    assert (workflow.has_result, workflow.result_criteria, workflow.on_result_found) == (False, [], "do_nothing")


def test_enable_tickets_false_is_named_in_a_note(folder):
    (folder / "phases_config.yaml").write_text("enable_tickets: false\n", encoding="utf-8")
    assert read_hephaestus_folder(folder).notes[-1] == (
        "phases_config.yaml: enable_tickets: false has no counterpart; every Omoi workflow moves tickets on a board"
    )


# The command and the round trip


def test_the_command_loads_a_folder_and_says_what_it_left_out():
    out = run(SAMPLE)
    assert out.splitlines() == [
        "Workflow 'prd_to_software' was created (version 1).",
        "  phases added: PHASE_REQUIREMENTS, PHASE_SYSTEM_DESIGN, PHASE_IMPLEMENTATION, PHASE_REVIEW, "
        "PHASE_DONE, PHASE_BLOCKED",
        "  note: 10_review.yaml: validation is disabled (enabled: false), so its 1 criterion is not loaded",
        "  note: phases_config.yaml: board_config is not loaded; the board has one column per phase, "
        "and tickets move through the phases",
    ]


def test_the_commands_options_work_with_a_folder():
    before = database_state()
    assert "would be created" in run(SAMPLE, "--slug", "prd", "--dry-run")
    assert database_state() == before

    run(SAMPLE, "--slug", "prd")
    with pytest.raises(CommandError, match="already exists"):
        run(SAMPLE, "--slug", "prd")
    assert "Workflow 'prd' was updated (version 2)." in run(SAMPLE, "--slug", "prd", "--overwrite")
    assert not Workflow.objects.filter(slug="prd_to_software").exists()


def test_a_folder_whose_name_is_no_slug_needs_one(tmp_path):
    folder = Path(shutil.copytree(SAMPLE, tmp_path / "my flow"))
    with pytest.raises(CommandError, match="is not a valid slug"):
        run(folder)
    assert "Workflow 'my-flow' was created" in run(folder, "--slug", "my-flow")
    assert Workflow.objects.get(slug="my-flow").name == "My Flow"


def test_export_writes_omois_format_which_loads_back_to_the_same_workflow(tmp_path):
    workflow = load_folder(SAMPLE)
    path = tmp_path / "exported.yaml"
    call_command("export_workflow", "prd_to_software", "-o", str(path), stderr=StringIO())
    exported = parse_workflow(path.read_text(encoding="utf-8"))
    assert exported == read_hephaestus_folder(SAMPLE).definition

    run(path, "--slug", "copy")

    copy = Workflow.objects.get(slug="copy")
    again = parse_workflow(workflow_export(workflow=copy))
    assert again.model_copy(update={"slug": "prd_to_software"}) == exported
    assert transitions_of(copy) == transitions_of(workflow)
    fields = ("key", "name", "description", "phase_prompt", "done_definitions", "expected_outputs")
    fields += ("next_steps_guide", "validation_criteria", "configuration", "is_terminal", "sequence_order")
    assert list(copy.phases.in_order().values(*fields)) == list(workflow.phases.in_order().values(*fields))


# Broken folders: refused whole, every problem located, nothing written


def write(folder, name, text):
    (folder / name).write_text(text, encoding="utf-8")


BROKEN = [
    # (file, its new text, the problems found)
    (
        "03_implementation.yaml",
        "description: Build it.\ndone_definitions: Code merged\n",
        ["03_implementation.yaml:2: done_definitions: expected a list of strings, not text"],
    ),
    (
        "02_system_design.yaml",
        "Description: Design.\nDone_Definitions:\n  - Written\n  - 42\n",
        ["02_system_design.yaml:4: Done_Definitions[1]: expected text, not a number"],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\ndone_definitions:\n  - |\n    Code\n    merged\n",
        [
            "03_implementation.yaml:3: done_definitions[0]: "
            "must be one line, without line breaks, tabs or control characters"
        ],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\ndone_when: [Code merged]\n",
        [
            "03_implementation.yaml:2: done_when: unknown key 'done_when'; a phase file may have: description, "
            "done_definitions, additional_notes, outputs, next_steps, working_directory, validation, cli_tool, "
            "cli_model"
        ],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\ndone_definitions: [A]\nDone_Definitions: [B]\n",
        [
            "03_implementation.yaml:3: Done_Definitions: done_definitions is given twice, "
            "as 'done_definitions' and as 'Done_Definitions'; keep one"
        ],
    ),
    (
        "03_implementation.yaml",
        "done_definitions: [Code merged]\n",
        ["03_implementation.yaml:1: missing required key 'description'"],
    ),
    (
        "03_implementation.yaml",
        "description: [Build it]\n",
        ["03_implementation.yaml:1: description: expected text, not a list"],
    ),
    (
        "03_implementation.yaml",
        "- description: Build it.\n",
        ["03_implementation.yaml:1: the top level must be a mapping of the phase's keys, not a list"],
    ),
    ("03_implementation.yaml", "# nothing yet\n", ["03_implementation.yaml: the file is empty"]),
    (
        "03_implementation.yaml",
        "description: Build it.\noutputs: {report: r.md}\n",
        [
            "03_implementation.yaml:2: outputs: expected a list of strings or a text with one item per line, "
            "not a mapping"
        ],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\nworking_directory: [/a, /b]\n",
        ["03_implementation.yaml:2: working_directory: expected text, not a list"],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\nvalidation: [file_exists]\n",
        ["03_implementation.yaml:2: validation: expected a mapping with enabled and criteria, not a list"],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\nvalidation:\n  enabled: yes please\n  criteria: {a: b}\n",
        [
            "03_implementation.yaml:3: validation.enabled: expected true or false, not text",
            "03_implementation.yaml:4: validation.criteria: expected a list of criteria, not a mapping",
        ],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\nvalidation:\n  criteria:\n    - check_type: command_success\n"
        "    - description: The report exists\n      check_type: file_exists\n",
        [
            "03_implementation.yaml:4: validation.criteria[0]: missing required key 'description'",
            "03_implementation.yaml:5: validation.criteria[1]: a file_exists check needs a target (or a pattern): "
            "the file that must exist",
        ],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\nValidation:\n  Criteria:\n    - Description: Report\n      Check_Type: file_exists\n"
        "      Target: 7\n",
        ["03_implementation.yaml:6: Validation.Criteria[0].Target: input should be a valid string"],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\nnext_steps: [Review, [Ship]]\n",
        ["03_implementation.yaml:2: next_steps[1]: expected text, not a list"],
    ),
    (
        "03_implementation.yaml",
        "description: Build it.\n  broken: indentation\n",
        ["03_implementation.yaml:2: YAML syntax error, column 9: mapping values are not allowed here"],
    ),
    (
        "03_implementation.yaml",
        "description: !!python/object:os.system rm\n",
        [
            "03_implementation.yaml:1: description: unsafe or unknown YAML tag "
            "'tag:yaml.org,2002:python/object:os.system' is not allowed"
        ],
    ),
    (
        "phases_config.yaml",
        "has_result: yes\non_result_found: stop_everything\nresult_criteria: 3\n",
        [
            "phases_config.yaml:2: on_result_found: input should be 'stop_all' or 'do_nothing'",
            "phases_config.yaml:3: result_criteria: input should be a valid list",
        ],
    ),
    (
        "phases_config.yaml",
        "has_result: 'yes'\nenable_tickets: 1\nboard_config: [todo, done]\nboard: {}\n",
        [
            "phases_config.yaml:1: has_result: input should be a valid boolean",
            "phases_config.yaml:2: enable_tickets: expected true or false, not a number",
            "phases_config.yaml:3: board_config: expected a mapping, not a list",
            "phases_config.yaml:4: board: unknown key 'board'; phases_config.yaml may have: has_result, "
            "result_criteria, on_result_found, enable_tickets, board_config",
        ],
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BROKEN, ids=[str(n) for n in range(len(BROKEN))])
def test_a_broken_file_refuses_the_whole_folder_and_says_where(folder, name, text, expected):
    load_folder(SAMPLE, slug="existing")
    write(folder, name, text)
    before = database_state()

    assert problems_of(folder) == expected
    with pytest.raises(CommandError) as caught:
        run(folder, "--slug", "existing", "--overwrite")

    assert str(caught.value).splitlines()[1:] == [f"  {line}" for line in expected]
    assert database_state() == before


def test_every_problem_of_every_file_is_reported_at_once(folder):
    write(folder, "01_requirements.yaml", "description: Read.\ndone_definitions: Everything\n")
    write(folder, "03_implementation.yaml", "description: Build it.\ncli_model: 4\n")
    assert problems_of(folder) == [
        "01_requirements.yaml:2: done_definitions: expected a list of strings, not text",
        "03_implementation.yaml:2: cli_model: expected text, not a number",
    ]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (
            ["planning.yaml"],
            "planning.yaml: not a phase file: name a phase NN_name.yaml (a number, '_', then letters, digits, "
            "'_' or '-'), and the workflow's settings phases_config.yaml",
        ),
        (["1-planning.yaml"], "1-planning.yaml: not a phase file"),
        (["3_build.yml"], "3_build.yml: its number is also that of 03_implementation.yaml; each phase needs its own"),
        (
            ["04_implementation.yaml"],
            "04_implementation.yaml: its name makes the phase PHASE_IMPLEMENTATION, as 03_implementation.yaml does",
        ),
        (["05_" + "x" * 60 + ".yaml"], "longer than 64 characters"),
        (["phases_config.yml"], "phases_config.yml: a second settings file beside phases_config.yaml; keep one"),
    ],
)
def test_a_file_name_that_is_not_a_phase_refuses_the_folder(folder, names, expected):
    for name in names:
        write(folder, name, "description: Something.\n")
    before = database_state()

    problems = problems_of(folder)

    assert len(problems) == 1 and expected in problems[0]
    assert database_state() == before


def test_an_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("Nothing here yet.\n", encoding="utf-8")
    assert problems_of(tmp_path / "empty") == [
        f"{tmp_path / 'empty'}: the folder has no phase files (NN_name.yaml, e.g. 01_planning.yaml)"
    ]


def test_a_folder_of_too_many_phases_is_refused(tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for number in range(1, 100):
        write(folder, f"{number:02}_step_{number}.yaml", "description: A step.\n")
    assert problems_of(folder) == [
        f"{folder}: 99 phase files; a workflow has at most 100 phases, Done and Blocked counted"
    ]


def test_a_missing_folder_is_refused(tmp_path):
    with pytest.raises(CommandError, match="no-such-flow: 1 problem found\n  .*no-such-flow: cannot read the file"):
        run(tmp_path / "no-such-flow")


def test_too_many_outputs_are_refused_at_their_key(folder):
    write(folder, "03_implementation.yaml", "description: Build it.\noutputs:\n" + "  - a file\n" * 51)
    assert problems_of(folder) == [
        "03_implementation.yaml:2: outputs: list should have at most 50 items after validation, not 51"
    ]


def test_a_file_check_by_pattern_expects_files_matching_it(folder):
    write(
        folder,
        "03_implementation.yaml",
        "description: Build it.\nvalidation:\n  criteria:\n"
        "    - {description: Code is written, check_type: file_exists, pattern: 'src/**/*.py'}\n",
    )
    implementation = load_folder(folder).phases.get(key="PHASE_IMPLEMENTATION")
    assert implementation.expected_outputs == [
        {"type": "file", "pattern": "src/**/*.py", "required": True, "validation_rule": "Code is written"}
    ]
