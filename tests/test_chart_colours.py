"""The analytics charts draw in the stylesheet's colours, so that they follow the light or dark theme."""

from types import SimpleNamespace

from discoveries.charts import FALLBACK_COLORS, Chart, _rules, column_colors, theme_color
from phases.schema import PALETTE


def test_a_palette_colour_is_drawn_as_its_stylesheet_variable():
    for name, value in PALETTE.items():
        assert theme_color(value) == f"var(--{name})"
        assert theme_color(value.upper()) == f"var(--{name})"


def test_a_colour_of_the_columns_own_is_drawn_as_it_is():
    assert theme_color("#123456") == "#123456"
    assert theme_color("") == ""


def test_columns_without_a_colour_take_the_next_variable_of_the_fallbacks():
    columns = [SimpleNamespace(color=PALETTE["green"]), SimpleNamespace(color=""), SimpleNamespace(color="#abcdef")]
    assert column_colors(columns) == ["var(--green)", FALLBACK_COLORS[0], "#abcdef"]
    assert all(colour.startswith("var(--") for colour in FALLBACK_COLORS)


def test_percentile_names_at_the_top_of_the_plot_stay_inside_it_and_apart():
    chart = Chart(id="x", title="T", desc="D")
    # Three equal percentiles at the top of the scale: their lines are at the plot's top edge.
    _rules(chart, {50: 4, 85: 4, 95: 4}, 4)
    heights = sorted(rule.text_y for rule in chart.rules)
    assert heights[0] >= chart.top + 12  # the highest name's baseline leaves room for its letters
    assert all(b - a >= 16 for a, b in zip(heights, heights[1:], strict=False))
    assert [rule.y for rule in chart.rules] == [chart.top] * 3


def test_percentile_names_low_in_the_plot_sit_just_above_their_lines():
    chart = Chart(id="x", title="T", desc="D")
    _rules(chart, {50: 1, 85: 2, 95: None}, 4)
    assert [(rule.label, rule.text_y) for rule in chart.rules] == [
        ("50th 1 d", rule_y(chart, 1, 4) - 4),
        ("85th 2 d", rule_y(chart, 2, 4) - 4),
    ]


def rule_y(chart, value, maximum):
    return round(chart.bottom - value / maximum * chart.plot_height, 1)
