"""Column colours: a palette name or #rrggbb, checked in files and in the admin, rendered as a hex on the board."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from board.models import Board
from phases.models import BoardColumn
from phases.schema import PALETTE
from phases.workflow_files import WorkflowFileError, parse_workflow

from .admin_forms import change_data
from .workflow_samples import SMALL, database_state, load

pytestmark = pytest.mark.django_db

INJECTION = "red; background-image: url(/probe); position: fixed; inset: 0"
# Fits the column's 32 characters, so only the colour rule stands in its way.
SHORT_INJECTION = "red; position: fixed; inset: 0"


def with_color(value):
    return SMALL.replace("color_theme: blue", f"color_theme: {value!r}" if value else "color_theme: ''", 1)


def line_of(text, fragment):
    return next(number for number, line in enumerate(text.splitlines(), start=1) if fragment in line)


@pytest.mark.parametrize("value", [INJECTION, "x" * 100, "Blue", "#abc", "#12345g", "#1234567", "rgb(0, 0, 0)"])
def test_a_file_may_only_name_a_palette_colour_or_a_hex(value):
    text = with_color(value)

    with pytest.raises(WorkflowFileError) as info:
        parse_workflow(text, source="small.yaml")

    [problem] = info.value.problems
    assert (problem.path, problem.line) == ("board_columns[0].color_theme", line_of(text, "color_theme"))
    assert problem.message == (
        "unknown colour; use one of the palette colours (gray, slate, blue, indigo, violet, pink, red, orange, "
        "amber, yellow, green, teal) or a #rrggbb value"
    )


@pytest.mark.parametrize("value", [*PALETTE, "#1a2B3c", ""])
def test_every_palette_name_a_hex_or_nothing_loads(value):
    column = load(with_color(value)).workflow.columns.get(key="todo")
    assert column.color == value
    assert column.color_hex == (PALETTE.get(value) or value.lower())


def test_the_palette_is_of_hex_colours():
    assert all(len(value) == 7 and int(value[1:], 16) >= 0 for value in PALETTE.values())


def test_the_model_refuses_a_colour_any_form_would_save():
    column = load(SMALL).workflow.columns.get(key="todo")
    column.color = SHORT_INJECTION
    with pytest.raises(ValidationError) as info:
        column.full_clean()
    assert info.value.message_dict["color"] == [
        f"Unknown colour {SHORT_INJECTION!r}; use one of the palette colours (gray, slate, blue, indigo, violet, pink, "
        "red, orange, amber, yellow, green, teal) or a #rrggbb value."
    ]


def test_the_admin_column_form_refuses_a_colour_that_is_not_one(alice_client):
    workflow = load(SMALL).workflow
    url = reverse("admin:phases_workflow_change", args=[workflow.pk])
    response = alice_client.get(url)
    columns = response.context["inline_admin_formsets"][1].formset
    todo = next(index for index, form in enumerate(columns.forms) if form.instance.key == "todo")
    before = database_state()

    response = alice_client.post(url, change_data(response, **{f"columns-{todo}-color": SHORT_INJECTION}))

    assert response.status_code == 200
    columns = response.context["inline_admin_formsets"][1].formset
    assert "Unknown colour" in columns.forms[todo].errors["color"][0]
    assert database_state() == before


def test_the_admin_column_form_saves_a_palette_colour(alice_client):
    workflow = load(SMALL).workflow
    url = reverse("admin:phases_workflow_change", args=[workflow.pk])
    response = alice_client.get(url)
    columns = response.context["inline_admin_formsets"][1].formset
    todo = next(index for index, form in enumerate(columns.forms) if form.instance.key == "todo")

    response = alice_client.post(url, change_data(response, **{f"columns-{todo}-color": "teal"}))

    assert response.status_code == 302
    assert workflow.columns.get(key="todo").color == "teal"


def test_the_board_renders_the_hex_of_a_palette_colour(alice_client, alice):
    board = Board.objects.create(name="Small", slug="small", workflow=load(SMALL).workflow)
    board.members.add(alice)

    response = alice_client.get(reverse("board:detail", args=[board.slug]))

    assert f'style="--accent: {PALETTE["blue"]}"' in response.text
    assert f'style="--accent: {PALETTE["green"]}"' in response.text


def test_the_board_renders_no_colour_for_a_stored_value_that_is_not_one(alice_client, alice):
    workflow = load(SMALL).workflow
    # Saved before colours were checked.
    BoardColumn.objects.filter(workflow=workflow, key="todo").update(color=SHORT_INJECTION)
    board = Board.objects.create(name="Small", slug="small", workflow=workflow)
    board.members.add(alice)

    response = alice_client.get(reverse("board:detail", args=[board.slug]))

    assert response.status_code == 200
    assert "position: fixed" not in response.text
    assert workflow.columns.get(key="todo").color_hex == ""


def test_the_default_workflows_colours_are_palette_colours(workflow):
    assert all(column.color_hex for column in workflow.columns.all())
