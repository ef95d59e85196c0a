"""The admin's two editors in a real browser: the phase page's preview follows the prompt as it is typed, and the
workflow page fits a laptop's screen with its columns' phases folded under one line each.

Chromium talks to a Daphne process serving the demo board (tests/browser.py `seed_demo_board`), logged in as
its admin. Only the last test writes: it saves a column mapping.
"""

from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from playwright.sync_api import expect

from phases.admin import PREVIEW_MAX_CHARS
from phases.models import BoardColumn, Phase

from .browser import settle

# The seed is committed once for the module and read through the server; the mark makes pytest-django
# create the test database.
pytestmark = [pytest.mark.browser, pytest.mark.django_db]

SCREENSHOTS = Path(settings.BASE_DIR) / "artifacts" / "screenshots"
LAPTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
# The preview waits for a pause in typing (300 ms), then asks the server.
PREVIEW_TIMEOUT = 5_000


@pytest.fixture
def open_page(chromium, server, admin_state, server_log):
    """Open an admin page as the demo's admin at a viewport; every page must get through without a script error."""
    contexts, errors = [], []

    def open_at(path, viewport=LAPTOP):
        context = chromium.new_context(base_url=server.url, viewport=viewport, storage_state=admin_state)
        context.set_default_timeout(PREVIEW_TIMEOUT)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        response = page.goto(path)
        assert response.status == 200, path
        settle(page)
        return page

    yield open_at
    for context in contexts:
        context.close()
    assert not errors, errors


def phase_path(phase):
    return reverse("admin:phases_phase_change", args=[phase.pk])


def workflow_path(workflow):
    return reverse("admin:phases_workflow_change", args=[workflow.pk])


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / name, full_page=True)


# The phase page


def test_typing_in_the_prompt_updates_the_rendered_preview(open_page, demo_seed):
    phase = demo_seed["phase"]
    stored = Phase.objects.values().get(pk=phase.pk)
    page = open_page(phase_path(phase))
    preview = page.locator("#phase-preview-body .omoi-prose")
    expect(preview.get_by_role("heading", level=1)).to_have_text(f"Phase: {phase.name} ({phase.key})")

    prompt = page.locator("#id_phase_prompt")
    prompt.fill("## Checklist\n\n- Read the ticket")
    prompt.press("Control+End")
    prompt.press_sequentially("\n- Write it **down**", delay=20)

    expect(preview.get_by_role("heading", name="Checklist")).to_be_visible(timeout=PREVIEW_TIMEOUT)
    expect(preview.locator("li", has_text="Write it down").locator("strong")).to_have_text("down")
    # The Markdown the agent receives follows too, as text.
    expect(page.locator(".phase-preview-source pre")).to_contain_text("- Write it **down**")
    expect(page.locator("#phase-preview-status")).to_have_text("Updates as you edit")

    page.locator("#id_name").fill("Careful design")
    expect(preview.get_by_role("heading", level=1)).to_have_text(f"Phase: Careful design ({phase.key})")
    screenshot(page, "admin-phase-preview-1400-light.png")
    # Nothing is saved until the form is.
    assert Phase.objects.values().get(pk=phase.pk) == stored


def test_the_preview_shows_markup_as_sanitised_html(open_page, demo_seed):
    page = open_page(phase_path(demo_seed["phase"]))
    preview = page.locator("#phase-preview-body .omoi-prose")

    page.locator("#id_phase_prompt").fill(
        'Safe **text**\n\n<img src=x onerror="window.attacked = true">\n\n[link](javascript:window.attacked=true)'
    )

    expect(preview.locator("strong", has_text="text")).to_be_visible(timeout=PREVIEW_TIMEOUT)
    assert preview.locator("img, script, [onerror]").count() == 0
    assert preview.locator('a[href^="javascript"]').count() == 0
    assert page.evaluate("window.attacked") is None


def test_unchecking_a_transition_takes_it_out_of_the_preview(open_page, demo_seed):
    phase = demo_seed["phase"]
    target = phase.allowed_transitions.first()
    page = open_page(phase_path(phase))
    preview = page.locator("#phase-preview-body .omoi-prose")
    expect(preview).to_contain_text(target.key)

    page.get_by_role("checkbox", name=str(target)).uncheck()

    expect(preview).not_to_contain_text(f"may move to: {target.key}", timeout=PREVIEW_TIMEOUT)


def test_an_oversized_prompt_is_refused_and_the_page_says_why(open_page, demo_seed):
    page = open_page(phase_path(demo_seed["phase"]))

    page.locator("#id_phase_prompt").fill("x" * (PREVIEW_MAX_CHARS + 1))

    expect(page.locator("#phase-preview-status")).to_contain_text(
        f"Not updated: The preview takes at most {PREVIEW_MAX_CHARS:,} characters", timeout=PREVIEW_TIMEOUT
    )
    page.locator("#id_phase_prompt").fill("Short again")
    expect(page.locator("#phase-preview-status")).to_have_text("Updates as you edit", timeout=PREVIEW_TIMEOUT)
    expect(page.locator("#phase-preview-body")).to_contain_text("Short again")


# The workflow page


def test_the_workflow_page_fits_a_1400_pixel_screen(open_page, demo_seed):
    page = open_page(workflow_path(demo_seed["workflow"]))

    assert page.evaluate("document.documentElement.scrollWidth") <= LAPTOP["width"]
    # The columns table fits its place too: it does not scroll inside its group either.
    group = page.locator("#columns-group fieldset.module")
    assert group.evaluate("element => element.scrollWidth <= element.clientWidth"), group.evaluate(
        "element => [element.scrollWidth, element.clientWidth]"
    )


def test_the_workflow_page_does_not_scroll_sideways_on_a_phone(open_page, demo_seed):
    page = open_page(workflow_path(demo_seed["workflow"]), viewport=PHONE)

    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_columns_phases_open_from_their_line_and_the_line_follows_the_boxes(open_page, demo_seed):
    workflow = demo_seed["workflow"]
    column = workflow.columns.filter(phases__isnull=False).order_by("sequence_order").first()
    phase = column.phases.get()  # a column showing one phase
    page = open_page(workflow_path(workflow))
    cell = page.locator("tr.form-row.has_original").filter(has=page.locator(f'input[value="{column.key}"]'))
    line = cell.locator("details.omoi-multi > summary")
    expect(line).to_have_text(f"Phase mapping: {phase.name}")
    box = cell.get_by_role("checkbox", name=phase.name, exact=True)
    expect(box).to_be_hidden()

    # The keyboard opens it like a button.
    line.focus()
    page.keyboard.press("Enter")
    expect(box).to_be_visible()
    expect(box).to_be_checked()

    box.uncheck()
    expect(line).to_have_text("Phase mapping: No phase")
    box.check()
    expect(line).to_have_text(f"Phase mapping: {phase.name}")


# Transactional, so that the server may write while the test reads (a test transaction holds SQLite's write
# lock); pytest-django runs such tests last, which suits one that changes the seed's workflow.
@pytest.mark.django_db(transaction=True)
def test_boxes_checked_under_a_column_are_saved_as_its_mapping(open_page, demo_seed):
    workflow = demo_seed["workflow"]
    columns = list(workflow.columns.filter(phases__isnull=False).distinct().order_by("sequence_order"))
    source = next(column for column in columns if column.phases.count() > 1)
    moved = source.phases.order_by("sequence_order").last()
    target = next(column for column in columns if column != source and not column.is_terminal)
    page = open_page(workflow_path(workflow))

    def row(column):
        return page.locator("tr.form-row.has_original").filter(has=page.locator(f'input[value="{column.key}"]'))

    row(source).locator("summary").click()
    row(source).get_by_role("checkbox", name=moved.name, exact=True).uncheck()
    row(target).locator("summary").click()
    row(target).get_by_role("checkbox", name=moved.name, exact=True).check()
    expect(row(target).locator("summary")).to_contain_text(moved.name)
    screenshot(page, "admin-workflow-mapping-1400-light.png")
    page.get_by_role("button", name="Save and continue editing").click()

    expect(page.locator(".messagelist .success")).to_be_visible()
    expect(row(target).locator("summary")).to_contain_text(moved.name)
    expect(row(source).locator("summary")).not_to_contain_text(moved.name)
    assert BoardColumn.objects.get(pk=target.pk).phases.filter(pk=moved.pk).exists()
    assert not BoardColumn.objects.get(pk=source.pk).phases.filter(pk=moved.pk).exists()


# The theme


@pytest.mark.parametrize(("system", "chosen", "dark"), [("light", "dark", True), ("dark", "light", False)])
def test_the_admins_theme_toggle_switches_omois_palette_either_way(chromium, server, system, chosen, dark):
    context = chromium.new_context(base_url=server.url, viewport=LAPTOP, color_scheme=system)
    try:
        page = context.new_page()
        page.goto(reverse("admin:login"))
        page.evaluate("theme => localStorage.setItem('theme', theme)", chosen)
        page.reload()

        colours = page.evaluate(
            """() => [document.body, document.querySelector('#header')].map(
                (element) => getComputedStyle(element).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number))"""
        )
    finally:
        context.close()

    body, header = (sum(channels) / 3 for channels in colours)
    assert header < 40  # the ink header in both themes
    assert (body < 60) if dark else (body > 200), colours
