"""A workflow's result settings (OmoiOS's has_result, result_criteria, on_result_found): files, database, export, admin."""

import textwrap
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from phases.models import Workflow
from phases.services import workflow_export, workflow_load
from phases.workflow_files import WorkflowFileError, parse_workflow

from .admin_forms import change_data, errors_of
from .workflow_samples import SMALL, load

pytestmark = pytest.mark.django_db

# A workflow file as OmoiOS writes them: the result settings at the top level, next to the phases.
SECURITY_AUDIT = textwrap.dedent(
    """\
    name: Security Audit
    slug: security-audit
    description: Find one exploitable vulnerability in the target service and prove it.
    has_result: true
    result_criteria:
      - "A working exploit or proof of concept against the staging deployment"
      - "Exact reproduction steps that another engineer can follow"
      - "The affected endpoint, parameter and commit"
    on_result_found: stop_all
    phases:
      - id: PHASE_RECON
        name: Reconnaissance
        description: Map the attack surface.
        sequence_order: 1
        allowed_transitions: [PHASE_EXPLOIT]
        is_terminal: false
        done_definitions:
          - "Every public endpoint is listed in docs/audit/surface.md"
        expected_outputs:
          - type: document
            pattern: "docs/audit/surface.md"
            required: true
        phase_prompt: |
          STEP 1: List the endpoints.
          STEP 2: Note the ones that take user input.
        next_steps_guide:
          - "Promising endpoints go to exploitation."
        configuration:
          timeout_seconds: 1800
          max_retries: 2
      - id: PHASE_EXPLOIT
        name: Exploitation
        description: Try to break what reconnaissance found.
        sequence_order: 2
        allowed_transitions: [PHASE_REPORTED]
        is_terminal: false
        done_definitions:
          - "A proof of concept runs against staging"
        expected_outputs: []
        phase_prompt: "Attempt each promising endpoint in turn."
        next_steps_guide: []
        configuration: {}
      - id: PHASE_REPORTED
        name: Reported
        sequence_order: 3
        allowed_transitions: []
        is_terminal: true
        done_definitions: []
        expected_outputs: []
        phase_prompt: ""
        next_steps_guide: []
        configuration: {}
    board_columns:
      - id: recon
        name: Recon
        sequence_order: 1
        phase_mapping: [PHASE_RECON]
        wip_limit: 5
        wip_policy: warn
        is_terminal: false
        auto_transition_to: null
        color_theme: blue
      - id: exploit
        name: Exploit
        sequence_order: 2
        phase_mapping: [PHASE_EXPLOIT]
        wip_limit: null
        wip_policy: warn
        is_terminal: false
        auto_transition_to: null
        color_theme: red
      - id: reported
        name: Reported
        sequence_order: 3
        phase_mapping: [PHASE_REPORTED]
        wip_limit: null
        wip_policy: warn
        is_terminal: true
        auto_transition_to: null
        color_theme: green
    """
)

CRITERIA = [
    "A working exploit or proof of concept against the staging deployment",
    "Exact reproduction steps that another engineer can follow",
    "The affected endpoint, parameter and commit",
]


def result_settings(workflow):
    workflow.refresh_from_db()
    return workflow.has_result, workflow.result_criteria, workflow.on_result_found


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


# Loading


def test_an_omoios_file_with_result_settings_loads_unchanged():
    workflow = load(SECURITY_AUDIT).workflow

    assert result_settings(workflow) == (True, CRITERIA, "stop_all")
    assert list(workflow.phases.in_order().values_list("key", flat=True)) == [
        "PHASE_RECON",
        "PHASE_EXPLOIT",
        "PHASE_REPORTED",
    ]


def test_a_file_without_them_has_no_result():
    assert result_settings(load(SMALL).workflow) == (False, [], "do_nothing")


WRITTEN_CRITERIA = "result_criteria:\n" + "".join(f'  - "{criterion}"\n' for criterion in CRITERIA)


@pytest.mark.parametrize(
    ("written", "criteria"),
    [
        ('result_criteria: "A working exploit"\n', ["A working exploit"]),
        ("result_criteria: >-\n  A working exploit\n  with its steps\n", ["A working exploit with its steps"]),
        (
            "result_criteria: |\n  A working exploit\n\n    Exact reproduction steps  \n",
            ["A working exploit", "Exact reproduction steps"],
        ),
        ('result_criteria: ""\n', []),
    ],
)
def test_criteria_may_be_one_text_each_line_a_criterion(written, criteria):
    text = SECURITY_AUDIT.replace(WRITTEN_CRITERIA, written)
    assert text != SECURITY_AUDIT

    workflow = load(text).workflow

    assert result_settings(workflow) == (True, criteria, "stop_all")


def test_reloading_a_file_without_them_clears_them():
    workflow = load(SECURITY_AUDIT).workflow
    without = SECURITY_AUDIT.replace("has_result: true\n", "").replace("on_result_found: stop_all\n", "")
    without = without.replace(WRITTEN_CRITERIA, "")

    load(without, overwrite=True)

    assert result_settings(workflow) == (False, [], "do_nothing")


@pytest.mark.parametrize(
    ("old", "new", "path", "message"),
    [
        ("has_result: true", 'has_result: "yes"', "has_result", "input should be a valid boolean"),
        ("on_result_found: stop_all", "on_result_found: stop", "on_result_found", "'stop_all' or 'do_nothing'"),
        ("on_result_found: stop_all", "on_result_found: null", "on_result_found", "'stop_all' or 'do_nothing'"),
        (
            '  - "The affected endpoint, parameter and commit"',
            "  - 42",
            "result_criteria[2]",
            "input should be a valid string",
        ),
        (
            '  - "The affected endpoint, parameter and commit"',
            '  - "The endpoint\\tand the commit"',
            "result_criteria[2]",
            "must be one line",
        ),
        (
            '  - "The affected endpoint, parameter and commit"',
            '  - "' + "x" * 1001 + '"',
            "result_criteria[2]",
            "at most 1000 characters",
        ),
        ("has_result: true", "has_result: true\nhas_results: true", "has_results", "unknown key 'has_results'"),
    ],
)
def test_a_bad_result_setting_is_refused_with_its_location(old, new, path, message):
    text = SECURITY_AUDIT.replace(old, new, 1)
    assert text != SECURITY_AUDIT

    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text, source="audit.yaml")

    [problem] = info.value.problems
    assert problem.path == path
    assert message in problem.message
    assert problem.line == line_of(text, new.splitlines()[-1].strip())
    assert not Workflow.objects.filter(slug="security-audit").exists()


def test_too_many_criteria_are_refused():
    many = "result_criteria:\n" + "".join(f"  - Criterion {number}\n" for number in range(101))
    text = SECURITY_AUDIT.replace(WRITTEN_CRITERIA, many)

    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text)

    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("result_criteria", line_of(text, "result_criteria:"))
    assert "at most 100 items" in problem.message


# Export


def test_export_writes_them_and_reads_back_the_same():
    workflow = load(SECURITY_AUDIT).workflow

    text = workflow_export(workflow=workflow)

    assert "has_result: true\n" in text
    assert "on_result_found: stop_all\n" in text
    assert parse_workflow(text) == parse_workflow(SECURITY_AUDIT)


def test_export_then_load_elsewhere_keeps_them():
    workflow = load(SECURITY_AUDIT).workflow

    copy = workflow_load(definition=parse_workflow(workflow_export(workflow=workflow)), slug="copy").workflow

    assert result_settings(copy) == (True, CRITERIA, "stop_all")


def test_the_export_command_writes_them(tmp_path):
    load(SECURITY_AUDIT)
    path = tmp_path / "audit.yaml"

    call_command("export_workflow", "security-audit", "-o", str(path), stderr=StringIO())

    definition = parse_workflow(path.read_text(encoding="utf-8"))
    assert (definition.has_result, definition.result_criteria, definition.on_result_found) == (
        True,
        CRITERIA,
        "stop_all",
    )


# The admin


@pytest.fixture
def audit(db):
    return load(SECURITY_AUDIT).workflow


def workflow_url(workflow):
    return reverse("admin:phases_workflow_change", args=[workflow.pk])


def test_the_workflow_page_shows_them(alice_client, audit):
    form = alice_client.get(workflow_url(audit)).context["adminform"].form

    assert form["has_result"].value() is True
    assert form["result_criteria"].value() == "\n".join(CRITERIA)
    assert form["on_result_found"].value() == "stop_all"


def test_they_are_edited_on_the_workflow_page(alice_client):
    workflow = load(SMALL).workflow
    response = alice_client.get(workflow_url(workflow))

    response = alice_client.post(
        workflow_url(workflow),
        change_data(
            response,
            has_result="on",
            result_criteria="  The fix is merged  \r\n\r\nThe reporter confirmed it\r\n",
            on_result_found="stop_all",
        ),
    )

    assert response.status_code == 302
    assert result_settings(workflow) == (True, ["The fix is merged", "The reporter confirmed it"], "stop_all")
    exported = parse_workflow(workflow_export(workflow=workflow))
    assert exported.result_criteria == ["The fix is merged", "The reporter confirmed it"]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"result_criteria": "x" * 1001}, "result_criteria", "[0]: String should have at most 1000 characters"),
        ({"result_criteria": "ok\nnot\tok"}, "result_criteria", "[1]: must be one line"),
        ({"result_criteria": "ok\nnot\x00ok"}, "result_criteria", "[1]: contains a NUL character"),
        ({"name": "Audit\u2028two"}, "name", "must be one line"),
        ({"on_result_found": "stop"}, "on_result_found", "Select a valid choice."),
    ],
)
def test_bad_ones_are_refused_on_their_field(alice_client, audit, changes, field, message):
    before = result_settings(audit)
    response = alice_client.get(workflow_url(audit))

    response = alice_client.post(workflow_url(audit), change_data(response, **changes))

    assert response.status_code == 200
    assert [error for error in errors_of(response)[field] if error.startswith(message)], errors_of(response)
    assert result_settings(audit) == before
