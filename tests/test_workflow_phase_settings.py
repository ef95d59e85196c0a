"""Phase settings the orchestrator reads (default tasks, the back-off cap) and output counts the gate checks."""

import pytest
from django.urls import reverse

from phases.admin import workflow_problems
from phases.models import Phase
from phases.services import workflow_export
from phases.workflow_files import WorkflowFileError, parse_workflow

from .admin_forms import change_data, errors_of
from .workflow_samples import SMALL, load

pytestmark = pytest.mark.django_db

# SMALL's PHASE_TODO configuration ends with this line; settings are added after it.
CONFIGURATION_END = "      team: triage\n"

TASKS = """\
      default_tasks:
        - title: Agree the scope
        - title: Write it down
          task_type: writing
          description: |
            One page, in scope.md.
          required_capabilities: [writing, english]
          priority: HIGH
"""


def with_configuration(lines):
    text = SMALL.replace(CONFIGURATION_END, CONFIGURATION_END + lines, 1)
    assert text != SMALL
    return text


def one_problem(text):
    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text, source="small.yaml")
    [problem] = info.value.problems
    return problem


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


# Default tasks


def test_default_tasks_are_stored_with_their_defaults_filled_in():
    workflow = load(with_configuration(TASKS)).workflow

    configuration = workflow.phases.get(key="PHASE_TODO").configuration
    assert configuration["default_tasks"] == [
        {"title": "Agree the scope", "task_type": "work", "description": "", "required_capabilities": []},
        {
            "title": "Write it down",
            "task_type": "writing",
            "description": "One page, in scope.md.\n",
            "required_capabilities": ["writing", "english"],
            "priority": "HIGH",
        },
    ]
    assert configuration["team"] == "triage"


def test_default_tasks_export_and_read_back_the_same():
    text = with_configuration(TASKS)
    workflow = load(text).workflow

    assert parse_workflow(workflow_export(workflow=workflow)) == parse_workflow(text)


PREFIX = "phases[0].configuration.default_tasks"


@pytest.mark.parametrize(
    ("tasks", "path", "message", "at"),
    [
        ("        - task_type: work\n", f"{PREFIX}[0]", "missing required key 'title'", "task_type: work"),
        ("        - title: ''\n", f"{PREFIX}[0].title", "at least 1 character", "title: ''"),
        ("        - title: '   '\n", f"{PREFIX}[0].title", "at least 1 character", "title: '   '"),
        (f"        - title: {'x' * 201}\n", f"{PREFIX}[0].title", "at most 200 characters", "title: xxx"),
        ('        - title: "Two\\nlines"\n', f"{PREFIX}[0].title", "must be one line", "title: "),
        ("        - title: 42\n", f"{PREFIX}[0].title", "valid string", "title: 42"),
        ("        - {title: Go, owner: bob}\n", f"{PREFIX}[0].owner", "unknown key 'owner'", "owner: bob"),
        ("        - {title: Go, task_type: ''}\n", f"{PREFIX}[0].task_type", "at least 1 character", "title: Go"),
        (
            f"        - {{title: Go, task_type: {'t' * 65}}}\n",
            f"{PREFIX}[0].task_type",
            "at most 64 characters",
            "title: Go",
        ),
        ("        - {title: Go, priority: URGENT}\n", f"{PREFIX}[0].priority", "'LOW', 'MEDIUM'", "URGENT"),
        (
            "        - {title: Go, required_capabilities: python}\n",
            f"{PREFIX}[0].required_capabilities",
            "valid list",
            "python",
        ),
        (
            "        - {title: Go, required_capabilities: [python, '']}\n",
            f"{PREFIX}[0].required_capabilities[1]",
            "at least 1 character",
            "python",
        ),
        ("        - Write the tests\n", f"{PREFIX}[0]", "valid dictionary", "Write the tests"),
    ],
)
def test_a_bad_default_task_is_refused_with_its_location(tasks, path, message, at):
    text = with_configuration("      default_tasks:\n" + tasks)

    problem = one_problem(text)

    assert problem.path == path
    assert message in problem.message
    assert problem.line == line_of(text, at)


def test_default_tasks_must_be_a_list():
    text = with_configuration("      default_tasks: {title: Go}\n")
    problem = one_problem(text)
    assert (problem.path, problem.line) == (PREFIX, line_of(text, "default_tasks"))
    assert "valid list" in problem.message


def test_at_most_twenty_default_tasks():
    twenty = "".join(f"        - title: Task {number}\n" for number in range(20))
    assert load(with_configuration("      default_tasks:\n" + twenty)).workflow

    problem = one_problem(with_configuration("      default_tasks:\n" + twenty + "        - title: One more\n"))
    assert problem.path == PREFIX
    assert "at most 20 items" in problem.message


# The back-off cap


@pytest.mark.parametrize("value", ["0", "600", "1.5", "86400"])
def test_a_back_off_cap_within_a_day_is_accepted(value):
    # SMALL's first delay is 1.5 s; a cap of 0 would be below it, so that case has no first delay.
    text = with_configuration(f"      retry_backoff_max_seconds: {value}\n")
    if value == "0":
        text = text.replace("      retry_backoff_seconds: 1.5\n", "")
    workflow = load(text).workflow
    assert workflow.phases.get(key="PHASE_TODO").configuration["retry_backoff_max_seconds"] == float(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "greater than or equal to 0"),
        ("86401", "less than or equal to 86400"),
        (".nan", "finite number"),
        (".inf", "finite number"),
        ('"600"', "valid number"),
        ("true", "valid number"),
        ("1", "below retry_backoff_seconds (1.5)"),
    ],
)
def test_a_bad_back_off_cap_is_refused_with_its_location(value, message):
    text = with_configuration(f"      retry_backoff_max_seconds: {value}\n")

    problem = one_problem(text)

    assert problem.path == "phases[0].configuration.retry_backoff_max_seconds"
    assert message in problem.message
    assert problem.line == line_of(text, "retry_backoff_max_seconds")


# Counts on expected outputs


def test_output_counts_are_stored_and_exported():
    text = SMALL.replace("        pattern: scope.md\n", "        pattern: scope.md\n        min_count: 2\n")
    text = text.replace("        pattern: notes.md\n", "        pattern: notes.md\n        min_passing: 1\n")
    workflow = load(text).workflow

    outputs = workflow.phases.get(key="PHASE_TODO").expected_outputs
    assert [(output.get("min_count"), output.get("min_passing")) for output in outputs] == [(2, None), (None, 1)]
    assert parse_workflow(workflow_export(workflow=workflow)) == parse_workflow(text)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("min_count", "0", "greater than or equal to 1"),
        ("min_count", "101", "less than or equal to 100"),
        ("min_count", "1.5", "valid integer"),
        ("min_passing", "0", "greater than or equal to 1"),
        ("min_passing", '"3"', "valid integer"),
    ],
)
def test_a_bad_output_count_is_refused_with_its_location(key, value, message):
    text = SMALL.replace("        pattern: scope.md\n", f"        pattern: scope.md\n        {key}: {value}\n")

    problem = one_problem(text)

    assert problem.path == f"phases[0].expected_outputs[0].{key}"
    assert message in problem.message
    assert problem.line == line_of(text, f"{key}:")


# The phase page checks them too


def test_the_phase_page_refuses_a_bad_default_task(alice_client):
    todo = load(SMALL).workflow.phases.get(key="PHASE_TODO")
    url = reverse("admin:phases_phase_change", args=[todo.pk])
    before = dict(todo.configuration)

    response = alice_client.post(
        url, change_data(alice_client.get(url), configuration='{"default_tasks": [{"title": "Go", "priority": "NOW"}]}')
    )

    assert response.status_code == 200
    [message] = errors_of(response)["configuration"]
    assert message.startswith("default_tasks[0].priority: Input should be 'LOW', 'MEDIUM', 'HIGH' or 'CRITICAL'")
    todo.refresh_from_db()
    assert todo.configuration == before


def test_the_phase_page_saves_good_default_tasks(alice_client):
    todo = load(SMALL).workflow.phases.get(key="PHASE_TODO")
    url = reverse("admin:phases_phase_change", args=[todo.pk])

    response = alice_client.post(
        url, change_data(alice_client.get(url), configuration='{"default_tasks": [{"title": "Go"}]}')
    )

    assert response.status_code == 302
    todo.refresh_from_db()
    assert todo.configuration == {
        "default_tasks": [{"title": "Go", "task_type": "work", "description": "", "required_capabilities": []}]
    }


def test_a_stored_configuration_the_rules_refuse_is_reported_not_a_crash():
    # Rows saved before these rules existed may hold anything; the workflow page still shows them.
    workflow = load(SMALL).workflow
    Phase.objects.filter(workflow=workflow, key="PHASE_TODO").update(
        configuration={"default_tasks": [{"priority": "NOW"}, 7]}
    )

    with pytest.warns(UserWarning, match="serialized value may not be as expected"):
        problems = workflow_problems(workflow)

    assert problems == [
        "phases[0].configuration.default_tasks[0]: missing required key 'title'",
        "phases[0].configuration.default_tasks[0].priority: input should be 'LOW', 'MEDIUM', 'HIGH' or 'CRITICAL'",
        "phases[0].configuration.default_tasks[1]: input should be a valid dictionary or instance of DefaultTask",
    ]
