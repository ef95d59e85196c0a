"""The admin in Omoi's look: its name and header, and its palette mapped onto the admin's own variables."""

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

pytestmark = pytest.mark.django_db

ADMIN_CSS = Path(settings.BASE_DIR) / "static" / "css" / "admin.css"


def head_of(html):
    return html[: html.index("</head>")]


def test_the_admin_is_called_omoi_administration(alice_client):
    response = alice_client.get(reverse("admin:index"))

    assert "<title>Site administration | Omoi administration</title>" in response.text
    assert "Django administration" not in response.text
    assert "Django site admin" not in response.text


def test_the_header_has_the_wordmark_to_the_boards_and_a_way_back_to_the_admin(alice_client):
    response = alice_client.get(reverse("admin:index"))

    boards = reverse("board:list")
    assert f'<a class="omoi-wordmark" href="{boards}">Omoi</a>' in response.text
    assert f'<a class="omoi-admin-home" href="{reverse("admin:index")}">Administration</a>' in response.text
    assert f'<a href="{boards}">View site</a>' in response.text


def test_the_login_page_is_branded_too(client):
    response = client.get(reverse("admin:login"))

    assert response.status_code == 200
    assert "Omoi administration" in response.text
    assert 'class="omoi-wordmark"' in response.text
    assert "css/admin.css" in response.text


@pytest.mark.parametrize("page", ["index", "workflow", "phase"])
def test_every_admin_page_takes_the_palette_last_and_not_the_sites_stylesheet(alice_client, workflow, page):
    url = {
        "index": reverse("admin:index"),
        "workflow": reverse("admin:phases_workflow_change", args=[workflow.pk]),
        "phase": reverse("admin:phases_phase_change", args=[workflow.phases.first().pk]),
    }[page]

    stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', head_of(alice_client.get(url).text))

    # Last: after the stylesheets each page adds (forms.css on change forms, responsive.css), so its rules hold.
    assert stylesheets[-1].endswith("/css/admin.css")
    assert any(sheet.endswith("admin/css/dark_mode.css") for sheet in stylesheets)
    assert not any(sheet.endswith("/css/omoi.css") for sheet in stylesheets)


def test_the_theme_toggle_is_still_there(alice_client):
    response = alice_client.get(reverse("admin:index"))

    assert 'class="theme-toggle"' in response.text
    assert "admin/js/theme.js" in response.text


# The stylesheet


def blocks(css):
    """(selector, body) of each rule, media queries' rules included, comments removed."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    return [(selector.strip(), body) for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css)]


def definitions(body):
    return dict(re.findall(r"(--omoi-[\w-]+)\s*:\s*([^;]+);", body))


def test_the_palette_has_a_dark_value_for_every_light_one_in_both_dark_places():
    css = ADMIN_CSS.read_text()
    palettes = [definitions(body) for _, body in blocks(css) if definitions(body)]

    # Light (:root and the toggle's light), dark by the system's setting, dark by the toggle.
    assert len(palettes) == 3
    light, system_dark, chosen_dark = palettes
    assert set(light) == set(system_dark) == set(chosen_dark)
    assert system_dark == chosen_dark
    assert "@media (prefers-color-scheme: dark)" in css
    assert 'html[data-theme="dark"]' in css


def test_colours_are_written_only_in_the_palette():
    css = re.sub(r"/\*.*?\*/", "", ADMIN_CSS.read_text(), flags=re.S)

    for selector, body in blocks(css):
        for declaration in body.split(";"):
            if re.search(r"#[0-9a-fA-F]{3,8}\b|rgb\(", declaration):
                assert declaration.strip().startswith("--omoi-"), f"{selector}: {declaration.strip()}"


def test_the_admins_variables_are_mapped_onto_the_palette():
    css = ADMIN_CSS.read_text()
    mapping = next(body for selector, body in blocks(css) if "html[data-theme]" in selector and "--primary" in body)

    for variable in ("--primary", "--secondary", "--header-bg", "--link-fg", "--button-bg", "--body-bg", "--body-fg"):
        assert re.search(rf"{variable}\s*:\s*var\(--omoi-[\w-]+\)", mapping), variable
