"""A phase's validation criteria: in workflow files, in the database, in the admin and in what agents read."""

import textwrap

import pytest
from django.urls import reverse

from phases.models import Phase, Workflow
from phases.services import workflow_export
from phases.workflow_files import WorkflowFileError, parse_workflow

from .admin_forms import change_data, errors_of
from .workflow_samples import database_state, load

pytestmark = pytest.mark.django_db

CHECKED = textwrap.dedent(
    """\
    slug: checked
    name: Checked
    phases:
      - id: PHASE_WRITE
        name: Write
        allowed_transitions: [PHASE_DONE]
        validation_criteria:
          - description: The report exists
            check_type: file_exists
            target: docs/report.md
          - description: The tests pass
            check_type: command_success
            command: pytest -q
            timeout: 300
      - id: PHASE_DONE
        name: Done
        is_terminal: true
    """
)

CRITERIA = [
    {"description": "The report exists", "check_type": "file_exists", "target": "docs/report.md"},
    {"description": "The tests pass", "check_type": "command_success", "command": "pytest -q", "timeout": 300},
]


def phase_with(**fields):
    """A phase of a workflow of its own, with the given fields."""
    workflow = Workflow.objects.create(slug=f"own-{Workflow.objects.count()}", name="Own")
    return Phase.objects.create(workflow=workflow, key="PHASE_X", name="X", **fields)


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


def test_they_are_stored_as_the_file_writes_them_with_the_keys_a_check_adds():
    workflow = load(CHECKED).workflow
    assert workflow.phases.get(key="PHASE_WRITE").validation_criteria == CRITERIA
    assert workflow.phases.get(key="PHASE_DONE").validation_criteria == []


def test_they_survive_an_export_and_a_reload():
    workflow = load(CHECKED).workflow
    exported = workflow_export(workflow=workflow)
    assert parse_workflow(exported).phases == parse_workflow(CHECKED).phases
    assert "    check_type: command_success\n    command: pytest -q\n    timeout: 300\n" in exported


@pytest.mark.parametrize(
    ("old", "new", "fragment", "message"),
    [
        ("- description: The report exists\n", "- check_type_: x\n", "check_type_", "description"),
        ("check_type: file_exists", "check_type: [file_exists]", "check_type: [", "valid string"),
        ("target: docs/report.md", "target: 42", "target: 42", "valid string"),
        ("timeout: 300", "timeout: .nan", "timeout: .nan", "finite number"),
    ],
    ids=["no description", "check type not text", "target not text", "not JSON"],
)
def test_a_bad_criterion_is_refused_at_its_line(old, new, fragment, message):
    text = CHECKED.replace(old, new, 1)
    before = database_state()

    with pytest.raises(WorkflowFileError) as caught:
        load(text)

    assert [problem.line for problem in caught.value.problems] == [line_of(text, fragment)]
    assert message in caught.value.problems[0].message
    assert caught.value.problems[0].path.startswith("phases[0].validation_criteria[")
    assert database_state() == before


def test_agents_read_them_with_the_phase(api, workflow):
    Phase.objects.filter(workflow=workflow, key="PHASE_TESTING").update(validation_criteria=CRITERIA)

    assert api.get("/phases/PHASE_TESTING").json()["validation_criteria"] == CRITERIA
    instructions = api.get("/phases/PHASE_TESTING/instructions").json()["instructions"]
    assert (
        "## Validation\n\nYour work in this phase is checked against these:\n\n"
        "- The report exists (file_exists, `docs/report.md`)\n"
        "- The tests pass (command_success, `pytest -q`)\n"
    ) in instructions


def test_the_instructions_leave_the_section_out_without_criteria():
    assert "## Validation" not in phase_with().agent_instructions()


def test_the_instructions_name_the_working_directory_a_phase_gives():
    phase = phase_with(configuration={"working_directory": "/workspace/app"})
    assert "\nWorking directory: `/workspace/app`\n" in phase.agent_instructions()
    assert "Working directory" not in phase_with(configuration={"cli_tool": "x"}).agent_instructions()


def test_an_output_without_a_pattern_is_listed_without_one():
    phase = phase_with(expected_outputs=[{"type": "output", "required": False}])
    assert "\n- output (optional)\n" in phase.agent_instructions()


# The admin


def phase_url(phase):
    return reverse("admin:phases_phase_change", args=[phase.pk])


def test_the_admin_saves_criteria_written_as_json(alice_client, workflow):
    design = workflow.phases.get(key="PHASE_DESIGN")
    data = change_data(
        alice_client.get(phase_url(design)),
        validation_criteria='[{"description": "Design exists", "check_type": "file_exists", "target": "docs/d.md"}]',
    )

    response = alice_client.post(phase_url(design), data)

    assert response.status_code == 302
    design.refresh_from_db()
    assert design.validation_criteria == [
        {"description": "Design exists", "check_type": "file_exists", "target": "docs/d.md"}
    ]


def test_the_admin_refuses_a_criterion_without_a_description(alice_client, workflow):
    design = workflow.phases.get(key="PHASE_DESIGN")
    data = change_data(alice_client.get(phase_url(design)), validation_criteria='[{"check_type": "file_exists"}]')

    response = alice_client.post(phase_url(design), data)

    assert response.status_code == 200
    assert "[0].description: Field required" in errors_of(response)["validation_criteria"]
    design.refresh_from_db()
    assert design.validation_criteria == []
