"""Column colours: a palette name or #rrggbb, checked in files and in the admin; the board draws a palette name
with the stylesheet's variable of that name, which has a light and a dark value."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from board.models import Board
from phases.models import BoardColumn
from phases.schema import PALETTE, color_css
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


def test_the_board_draws_a_palette_colour_with_its_theme_variable(alice_client, alice):
    board = Board.objects.create(name="Small", slug="small", workflow=load(SMALL).workflow)
    board.members.add(alice)

    response = alice_client.get(reverse("board:detail", args=[board.slug]))

    assert "--col-color: var(--blue)" in response.text
    assert "--col-color: var(--green)" in response.text


def test_the_board_draws_a_hex_colour_from_a_file_as_it_is(alice_client, alice):
    board = Board.objects.create(name="Small", slug="small", workflow=load(with_color("#1A2b3C")).workflow)
    board.members.add(alice)

    response = alice_client.get(reverse("board:detail", args=[board.slug]))

    assert 'id="column-todo"' in response.text
    assert "--col-color: #1a2b3c" in response.text


def test_color_css_is_a_variable_a_hex_or_nothing():
    assert [color_css(value) for value in ("slate", "#ABCDEF", "", "Blue", "red; inset: 0", None, ["red"])] == [
        "var(--slate)",
        "#abcdef",
        "",
        "",
        "",
        "",
        "",
    ]


def stylesheet_variables(path):
    """The custom properties a stylesheet defines, once for the light theme and once inside its dark media query."""
    text = Path(path).read_text()
    dark_start = text.index("@media (prefers-color-scheme: dark)")
    light, dark = text[:dark_start], text[dark_start:]
    pattern = re.compile(r"--([a-z0-9-]+):\s*(#[0-9a-fA-F]{6})")
    return dict(pattern.findall(light)), dict(pattern.findall(dark))


def test_every_palette_colour_has_a_light_and_a_dark_value_in_the_stylesheet():
    light, dark = stylesheet_variables(Path(settings.BASE_DIR) / "static" / "css" / "omoi.css")
    for name in PALETTE:
        assert name in light and name in dark, name
        assert f"{name}-soft" in light and f"{name}-soft" in dark, name
        assert light[name] != dark[name], name
    # The hex of each name is its light value, for the places that need a plain colour.
    assert {name: light[name] for name in PALETTE} == PALETTE


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


def contrast(first, second):
    def luminance(color):
        channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_palette_colour_stands_out_on_a_column_header_in_both_themes():
    # The colour is the header's top line (non-text: 3:1) and chip text on its soft ground (4.5:1).
    for theme in stylesheet_variables(Path(settings.BASE_DIR) / "static" / "css" / "omoi.css"):
        for name in PALETTE:
            assert contrast(theme[name], theme["surface-2"]) >= 3, name
            assert contrast(theme[name], theme[f"{name}-soft"]) >= 4.5, name
