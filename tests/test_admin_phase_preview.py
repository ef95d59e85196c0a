"""The phase page's agent instructions preview: rendered by the site's Markdown renderer, and again, unsaved,
for the form as it is being edited (PhaseAdmin.preview_view)."""

import re
from html import escape

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from phases.admin import PREVIEW_MAX_CHARS
from phases.markdown import render_markdown

from .admin_forms import change_data
from .workflow_samples import SMALL, database_state, load

pytestmark = pytest.mark.django_db


@pytest.fixture
def todo():
    return load(SMALL).workflow.phases.get(key="PHASE_TODO")


def page_url(phase):
    return reverse("admin:phases_phase_change", args=[phase.pk])


def preview_url(phase):
    return reverse("admin:phases_phase_preview", args=[phase.pk])


def form_of(client, phase, **changes):
    """What the page's script posts: the whole phase form as the browser holds it, with `changes`."""
    return change_data(client.get(page_url(phase)), **changes)


def preview(client, phase, **changes):
    return client.post(preview_url(phase), form_of(client, phase, **changes))


def staff(username, *permissions):
    user = get_user_model().objects.create_user(username, f"{username}@example.org", "password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    return user


# The page


def test_the_page_shows_the_instructions_rendered_and_their_markdown(alice_client, todo):
    response = alice_client.get(page_url(todo))

    text = todo.agent_instructions()
    assert str(render_markdown(text)) in response.text
    assert "<h1>Phase: To do (PHASE_TODO)</h1>" in response.text
    assert f"<pre>{escape(text, quote=True)}</pre>" in response.text
    assert f'data-preview-url="{preview_url(todo)}"' in response.text
    assert "js/admin-phase-preview.js" in response.text


def test_the_page_preview_is_sanitised(alice_client, todo):
    prompt = '<script>alert(1)</script> & <img src=x onerror="alert(2)"> [link](javascript:alert(3))'
    assert alice_client.post(page_url(todo), form_of(alice_client, todo, phase_prompt=prompt)).status_code == 302

    response = alice_client.get(page_url(todo))

    preview_html = response.text.split('id="phase-preview-body"', 1)[1]
    assert "<script>alert(1)" not in preview_html
    assert "onerror" not in "".join(re.findall(r"<[^>]*>", preview_html))  # only as escaped text
    assert 'href="javascript:' not in preview_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in preview_html


def test_a_refused_edit_shows_the_instructions_as_edited(alice_client, todo):
    data = form_of(alice_client, todo, phase_prompt="Edited **prompt**", expected_outputs="[{")

    response = alice_client.post(page_url(todo), data)

    assert response.status_code == 200
    assert "expected_outputs" in response.context["adminform"].form.errors
    assert "Edited <strong>prompt</strong>" in response.text
    assert "Expected outputs: not readable yet" in response.text


def test_a_viewer_sees_the_saved_preview_and_no_live_one(client, todo):
    client.force_login(staff("viewer", "view_phase"))

    response = client.get(page_url(todo))

    assert response.status_code == 200
    assert "<h1>Phase: To do (PHASE_TODO)</h1>" in response.text
    assert "data-preview-url" not in response.text


# The preview endpoint


def test_the_preview_renders_the_edited_form_and_saves_nothing(alice_client, todo):
    done = todo.workflow.phases.get(key="PHASE_DONE")
    before = database_state()

    response = preview(
        alice_client,
        todo,
        name="Triage",
        phase_prompt="## Checklist\r\n\r\n- **Read** the ticket",
        done_definitions="Scope agreed\r\nRisks listed",
        allowed_transitions=[done.pk],
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert "<h1>Phase: Triage (PHASE_TODO)</h1>" in response.text
    assert "<h2>Checklist</h2>" in response.text
    assert "<li><strong>Read</strong> the ticket</li>" in response.text
    assert "[ ] Risks listed" in response.text
    assert "may move to: PHASE_DONE." in response.text
    assert "PHASE_BLOCKED" not in response.text
    assert database_state() == before


def test_the_preview_of_the_unchanged_form_is_the_saved_instructions_rendered(alice_client, todo):
    response = preview(alice_client, todo)

    text = todo.agent_instructions()
    assert str(render_markdown(text)) in response.text
    assert f"<pre>{escape(text, quote=True)}</pre>" in response.text


def test_the_preview_is_what_saving_the_same_form_shows(alice_client, todo):
    changes = {"phase_prompt": "Say *why*.", "next_steps_guide": "Review\nShip"}
    live = preview(alice_client, todo, **changes).text

    assert alice_client.post(page_url(todo), form_of(alice_client, todo, **changes)).status_code == 302
    todo.refresh_from_db()

    assert str(render_markdown(todo.agent_instructions())) in live


def test_the_preview_is_sanitised(alice_client, todo):
    prompt = (
        "<script>alert(1)</script>\n\n<img src=x onerror=alert(2)>\n\n[click](javascript:alert(3))\n\n"
        '<a href="https://example.org" onclick="alert(4)">raw</a> [ok](https://example.org)'
    )

    response = preview(alice_client, todo, phase_prompt=prompt, name="<b onmouseover=alert(5)>Todo</b>")

    rendered = response.text.split('class="phase-preview-source"', 1)[0]
    assert response.status_code == 200
    markup = "".join(re.findall(r"<[^>]*>", rendered))  # escaped text holds no "<"
    for unsafe in ("<script", "<img", "onerror", "onclick", "onmouseover", "javascript:"):
        assert unsafe not in markup, unsafe
    assert 'href="https://example.org"' in rendered
    # The Markdown source is shown as text, escaped.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


@pytest.mark.parametrize(
    ("changes", "label"),
    [
        ({"expected_outputs": "[{"}, "Expected outputs"),
        ({"expected_outputs": '{"not": "a list"}'}, "Expected outputs"),
        ({"allowed_transitions": ["999999"]}, "Allowed transitions"),
        ({"allowed_transitions": ["not a number"]}, "Allowed transitions"),
        ({"key": "K" * 65}, "Key"),
        ({"name": ""}, "Name"),
    ],
)
def test_a_field_that_does_not_read_keeps_its_saved_value_and_is_named(alice_client, todo, changes, label):
    response = preview(alice_client, todo, phase_prompt="Still *previewed*", **changes)

    assert response.status_code == 200
    assert f"{label}: not readable yet, so the preview shows the saved value." in response.text
    assert "Still <em>previewed</em>" in response.text
    assert "<h1>Phase: To do (PHASE_TODO)</h1>" in response.text


def test_an_empty_post_previews_with_the_saved_key_and_name(alice_client, todo):
    response = alice_client.post(preview_url(todo), {})

    assert response.status_code == 200
    assert "<h1>Phase: To do (PHASE_TODO)</h1>" in response.text
    assert "Instructions" not in response.text.split('class="phase-preview-source"', 1)[0]


def test_an_oversized_form_is_refused_with_413_and_a_sentence(alice_client, todo):
    before = database_state()

    response = preview(alice_client, todo, phase_prompt="x" * (PREVIEW_MAX_CHARS + 1))

    assert response.status_code == 413
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text.startswith(f"The preview takes at most {PREVIEW_MAX_CHARS:,} characters of text;")
    assert database_state() == before


def test_a_body_past_the_upload_limit_is_a_400_not_a_500(alice_client, todo, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000

    response = preview(alice_client, todo, phase_prompt="y" * 20_000)

    assert response.status_code == 400


def test_only_post_is_allowed(alice_client, todo):
    response = alice_client.get(preview_url(todo))

    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_an_unknown_phase_is_404(alice_client, todo):
    assert alice_client.post(reverse("admin:phases_phase_preview", args=[999999]), {}).status_code == 404
    assert alice_client.post(reverse("admin:phases_phase_preview", args=["nope"]), {}).status_code == 404


def test_people_outside_the_admin_are_sent_to_its_login(client, bob, todo):
    assert client.post(preview_url(todo), {}).status_code == 302
    client.force_login(bob)

    response = client.post(preview_url(todo), {"phase_prompt": "hello"})

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_who_may_only_view_phases_are_refused(client, todo):
    client.force_login(staff("viewer", "view_phase"))

    assert client.post(preview_url(todo), {"phase_prompt": "hello"}).status_code == 403


def test_staff_who_may_change_phases_get_the_preview(client, todo):
    client.force_login(staff("editor", "view_phase", "change_phase"))

    assert client.post(preview_url(todo), {"phase_prompt": "hello"}).status_code == 200


def test_the_preview_needs_the_csrf_token(alice, todo):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    data = form_of(client, todo)
    token = client.cookies["csrftoken"].value

    assert client.post(preview_url(todo), data).status_code == 403
    assert client.post(preview_url(todo), {**data, "csrfmiddlewaretoken": token}).status_code == 200


def test_the_completion_criteria_render_as_a_list(alice_client, todo):
    response = preview(alice_client, todo)

    assert "<li>[ ] Scope agreed</li>" in response.text
    assert "<li>[ ] Owner named</li>" in response.text
