"""The workflow admin: phase editing under the workflow-file rules, column choices, YAML import and export."""

import textwrap
from html import escape

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from phases.defaults import DEFAULT_WORKFLOW_FILE, DEFAULT_WORKFLOW_SLUG
from phases.markdown import render_markdown
from phases.models import BoardColumn, Phase, Workflow
from phases.services import workflow_load
from phases.workflow_files import WorkflowFileError, parse_workflow, read_workflow_file

from .admin_forms import change_data, errors_of

SMALL = textwrap.dedent(
    """\
    slug: small
    name: Small
    phases:
      - id: PHASE_TODO
        name: To do
        allowed_transitions: [PHASE_DONE]
      - id: PHASE_DONE
        name: Done
        is_terminal: true
    board_columns:
      - id: todo
        name: To do
        phase_mapping: [PHASE_TODO]
      - id: done
        name: Done
        phase_mapping: [PHASE_DONE]
        is_terminal: true
    """
)

# Two problems, each on its own line: an unknown transition (line 6) and an unknown key (line 8).
BROKEN = SMALL.replace("[PHASE_DONE]\n", "[PHASE_NOPE]\n", 1).replace(
    "  - id: PHASE_DONE\n", "  - id: PHASE_DONE\n    colour: red\n", 1
)


@pytest.fixture
def phases_small_workflow(db):
    return workflow_load(definition=parse_workflow(SMALL)).workflow


def phase_url(phase):
    return reverse("admin:phases_phase_change", args=[phase.pk])


def edit_phase(client, phase, **changes):
    return client.post(phase_url(phase), change_data(client.get(phase_url(phase)), **changes))


def test_every_workflow_page_renders(alice_client, workflow):
    phase = workflow.phases.get(key="PHASE_DESIGN")
    urls = [
        reverse("admin:phases_workflow_changelist"),
        reverse("admin:phases_workflow_add"),
        reverse("admin:phases_workflow_change", args=[workflow.pk]),
        reverse("admin:phases_workflow_import"),
        reverse("admin:phases_phase_changelist"),
        reverse("admin:phases_phase_changelist") + f"?workflow__id__exact={workflow.pk}&q=design",
        phase_url(phase),
    ]
    for url in urls:
        assert alice_client.get(url).status_code == 200, url


def test_the_workflow_page_shows_its_phases_and_columns(alice_client, workflow):
    response = alice_client.get(reverse("admin:phases_workflow_change", args=[workflow.pk]))

    phases, columns = (inline.formset for inline in response.context["inline_admin_formsets"])
    assert [form.instance.key for form in phases.forms] == list(
        workflow.phases.in_order().values_list("key", flat=True)
    )
    assert {form.instance.key for form in columns.forms} == set(workflow.columns.values_list("key", flat=True))
    # Each compact phase row links to the phase's full page.
    assert phase_url(workflow.phases.get(key="PHASE_DESIGN")) in response.text
    assert "The workflow follows every rule of a workflow file." in response.text


def test_column_choices_come_from_the_parent_workflow_only(alice_client, workflow, phases_small_workflow):
    response = alice_client.get(reverse("admin:phases_workflow_change", args=[workflow.pk]))

    columns = response.context["inline_admin_formsets"][1].formset
    for form in [*columns.forms, columns.empty_form]:
        assert set(form.fields["phases"].queryset) == set(workflow.phases.all())
        assert set(form.fields["auto_transition_to"].queryset) == set(workflow.columns.all())


def test_a_column_mapped_to_another_workflows_phase_is_refused(alice_client, workflow, phases_small_workflow):
    url = reverse("admin:phases_workflow_change", args=[workflow.pk])
    response = alice_client.get(url)
    stranger = phases_small_workflow.phases.get(key="PHASE_TODO")

    response = alice_client.post(url, change_data(response, **{"columns-0-phases": [stranger.pk]}))

    assert response.status_code == 200
    columns = response.context["inline_admin_formsets"][1].formset
    assert "phases" in columns.forms[0].errors
    assert not stranger.columns.filter(workflow=workflow).exists()


def test_a_phase_edit_is_saved(alice_client, workflow):
    design = workflow.phases.get(key="PHASE_DESIGN")

    response = edit_phase(
        alice_client,
        design,
        phase_prompt="Draw the design.\r\n\r\nThen write it down.",
        description="What to decide.\r\nAnd why.",
        done_definitions="  Design written  \n\n\n   Reviewed by a peer\n",
        next_steps_guide="Implementation starts",
        expected_outputs='[{"type": "document", "pattern": "docs/design/*.md"}]',
        configuration='{"timeout_seconds": 60, "team": "core"}',
    )

    assert response.status_code == 302
    design.refresh_from_db()
    assert design.phase_prompt == "Draw the design.\n\nThen write it down."
    assert design.description == "What to decide.\nAnd why."
    assert design.done_definitions == ["Design written", "Reviewed by a peer"]
    assert design.next_steps_guide == ["Implementation starts"]
    assert design.expected_outputs == [{"type": "document", "pattern": "docs/design/*.md", "required": True}]
    assert design.configuration == {"timeout_seconds": 60, "team": "core"}


def test_the_form_shows_lists_one_per_line_and_json_pretty(alice_client, workflow):
    design = workflow.phases.get(key="PHASE_DESIGN")

    form = alice_client.get(phase_url(design)).context["adminform"].form

    assert form["done_definitions"].value() == "\n".join(design.done_definitions)
    assert form["configuration"].value().startswith("{\n  ")


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("expected_outputs", '[{"kind": "document"}]', "[0].type: Field required"),
        ("expected_outputs", '{"type": "document"}', "Input should be a valid list"),
        ("configuration", '{"timeout_seconds": "60"}', "timeout_seconds: Input should be a valid integer"),
        ("configuration", '{"max_retries": -1}', "max_retries: Input should be greater than or equal to 0"),
        ("configuration", "{not json", "Enter a valid JSON."),
    ],
)
def test_bad_json_is_refused_on_its_field(alice_client, workflow, field, text, message):
    design = workflow.phases.get(key="PHASE_DESIGN")
    before = (design.expected_outputs, design.configuration)

    response = edit_phase(alice_client, design, **{field: text})

    assert response.status_code == 200
    assert message in errors_of(response)[field]
    design.refresh_from_db()
    assert (design.expected_outputs, design.configuration) == before


def test_transitions_are_chosen_from_the_same_workflow(alice_client, workflow, phases_small_workflow):
    design = workflow.phases.get(key="PHASE_DESIGN")
    form = alice_client.get(phase_url(design)).context["adminform"].form
    assert set(form.fields["allowed_transitions"].queryset) == set(workflow.phases.exclude(pk=design.pk))

    stranger = phases_small_workflow.phases.get(key="PHASE_TODO")
    own = design.allowed_transitions.get(key="PHASE_IMPLEMENTATION")
    response = edit_phase(alice_client, design, allowed_transitions=[own.pk, stranger.pk])

    assert response.status_code == 200
    assert "allowed_transitions" in errors_of(response)
    assert not design.allowed_transitions.filter(pk=stranger.pk).exists()


def test_a_phase_edit_breaking_a_workflow_rule_is_refused(alice_client, workflow):
    done = workflow.phases.get(key="PHASE_DONE")
    backlog = workflow.phases.get(key="PHASE_BACKLOG")

    response = edit_phase(alice_client, done, allowed_transitions=[backlog.pk], name="Finished")

    assert response.status_code == 200
    [message] = errors_of(response)["allowed_transitions"]
    assert message.startswith("terminal phase 'PHASE_DONE' cannot have transitions out")
    done.refresh_from_db()
    assert done.name == "Done"
    assert not done.allowed_transitions.exists()


def test_a_rule_broken_elsewhere_in_the_workflow_is_a_form_error(alice_client, workflow):
    design = workflow.phases.get(key="PHASE_DESIGN")
    implementation = design.allowed_transitions.get(key="PHASE_IMPLEMENTATION")

    # Blocked sends work back to Design, so Design must keep its way into Blocked.
    response = edit_phase(alice_client, design, allowed_transitions=[implementation.pk])

    assert response.status_code == 200
    [message] = errors_of(response)["__all__"]
    assert "holding phase 'PHASE_BLOCKED' may only lead back to phases that can move into it" in message
    assert "'PHASE_DESIGN' cannot" in message
    assert design.allowed_transitions.filter(key="PHASE_BLOCKED").exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [("phase design", "should match pattern"), ("PHASE_BACKLOG", "duplicate id 'PHASE_BACKLOG'")],
)
def test_a_bad_phase_key_is_refused_on_the_key_field(alice_client, workflow, key, message):
    design = workflow.phases.get(key="PHASE_DESIGN")

    response = edit_phase(alice_client, design, key=key)

    assert message in errors_of(response)["key"][0]
    assert Phase.objects.filter(pk=design.pk, key="PHASE_DESIGN").exists()


def test_a_renamed_phase_keeps_its_transitions_and_column(alice_client, workflow):
    design = workflow.phases.get(key="PHASE_DESIGN")

    response = edit_phase(alice_client, design, key="PHASE_ARCHITECTURE")

    assert response.status_code == 302
    design.refresh_from_db()
    assert design.key == "PHASE_ARCHITECTURE"
    assert workflow.phases.get(key="PHASE_REQUIREMENTS").allowed_transitions.filter(pk=design.pk).exists()
    assert design.columns.exists()


def test_the_preview_is_what_the_agent_gets_rendered_and_sanitised(alice_client, workflow):
    # More in test_admin_phase_preview.py, with the preview that follows the form as it is edited.
    design = workflow.phases.get(key="PHASE_DESIGN")
    assert edit_phase(alice_client, design, phase_prompt="<script>alert(1)</script> & **more**").status_code == 302

    response = alice_client.get(phase_url(design))

    design.refresh_from_db()
    assert str(render_markdown(design.agent_instructions())) in response.text
    assert f"<pre>{escape(design.agent_instructions(), quote=True)}</pre>" in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; **more**" in response.text
    assert "<strong>more</strong>" in response.text
    assert "<script>alert(1)" not in response.text


def test_phases_are_added_on_their_workflows_page(alice_client, workflow):
    assert alice_client.get(reverse("admin:phases_phase_add")).status_code == 403


def upload(text, name="small.yaml"):
    return SimpleUploadedFile(name, text.encode(), content_type="application/yaml")


def test_import_creates_the_workflow(alice_client):
    response = alice_client.post(reverse("admin:phases_workflow_import"), {"file": upload(SMALL)}, follow=True)

    workflow = Workflow.objects.get(slug="small")
    assert response.redirect_chain == [(reverse("admin:phases_workflow_change", args=[workflow.pk]), 302)]
    assert "Workflow &#x27;small&#x27; was created (version 1).<br>  phases added: PHASE_TODO, PHASE_DONE" in (
        response.text
    )
    assert list(workflow.phases.in_order().values_list("key", flat=True)) == ["PHASE_TODO", "PHASE_DONE"]
    assert workflow.columns.count() == 2


def test_import_with_a_slug_remap_and_overwrite(alice_client, phases_small_workflow):
    text = SMALL.replace("PHASE_TODO", "PHASE_START")

    response = alice_client.post(
        reverse("admin:phases_workflow_import"),
        {"file": upload(text), "overwrite": "on", "slug": "small", "remap": "PHASE_TODO = PHASE_START\n\n"},
    )

    assert response.status_code == 302
    phases_small_workflow.refresh_from_db()
    assert phases_small_workflow.version == 2
    assert set(phases_small_workflow.phases.values_list("key", flat=True)) == {"PHASE_START", "PHASE_DONE"}


def test_import_shows_every_problem_and_changes_nothing(alice_client, workflow):
    before = Workflow.objects.count(), Phase.objects.count(), BoardColumn.objects.count()

    response = alice_client.post(reverse("admin:phases_workflow_import"), {"file": upload(BROKEN, "broken.yaml")})

    assert response.status_code == 200
    with pytest.raises(WorkflowFileError) as problems:
        parse_workflow(BROKEN, source="broken.yaml")
    assert len(problems.value.problems) == 2
    assert response.context["problems"] == [problem.format("broken.yaml") for problem in problems.value.problems]
    assert escape("broken.yaml:6: phases[0].allowed_transitions[0]: unknown phase 'PHASE_NOPE'") in response.text
    assert escape("broken.yaml:8: phases[1].colour: unknown key 'colour'") in response.text
    assert (Workflow.objects.count(), Phase.objects.count(), BoardColumn.objects.count()) == before


def test_import_does_not_overwrite_unless_asked(alice_client, phases_small_workflow):
    response = alice_client.post(
        reverse("admin:phases_workflow_import"), {"file": upload(SMALL.replace("name: Small", "name: Changed"))}
    )

    assert "workflow &#x27;small&#x27; already exists" in response.text
    phases_small_workflow.refresh_from_db()
    assert (phases_small_workflow.name, phases_small_workflow.version) == ("Small", 1)


def test_a_dry_run_reports_and_saves_nothing(alice_client):
    response = alice_client.post(reverse("admin:phases_workflow_import"), {"file": upload(SMALL), "dry_run": "on"})

    assert response.status_code == 200
    assert "Workflow &#x27;small&#x27; would be created" in response.text
    assert not Workflow.objects.filter(slug="small").exists()


def test_an_oversize_file_is_refused(alice_client, settings):
    settings.OMOI_MAX_WORKFLOW_BYTES = 100

    response = alice_client.post(reverse("admin:phases_workflow_import"), {"file": upload(SMALL)})

    assert response.status_code == 200
    assert f"The file has {len(SMALL)} bytes; at most 100 are allowed." in response.context["form"].errors["file"]
    assert not Workflow.objects.filter(slug="small").exists()


def test_a_malformed_remap_is_refused(alice_client):
    response = alice_client.post(
        reverse("admin:phases_workflow_import"), {"file": upload(SMALL), "remap": "PHASE_TODO PHASE_DONE"}
    )

    assert response.context["form"].errors["remap"] == [
        "Line 1: write OLD_PHASE=NEW_PHASE, not 'PHASE_TODO PHASE_DONE'."
    ]
    assert not Workflow.objects.filter(slug="small").exists()


def test_import_needs_the_add_permission(client, workflow):
    bob = get_user_model().objects.create_user("bob", "bob@example.org", "password", is_staff=True)
    bob.user_permissions.add(Permission.objects.get(codename="view_workflow"))
    client.force_login(bob)

    assert client.get(reverse("admin:phases_workflow_import")).status_code == 403
    assert client.post(reverse("admin:phases_workflow_import"), {"file": upload(SMALL)}).status_code == 403
    assert "Import from YAML" not in client.get(reverse("admin:phases_workflow_changelist")).text
    assert not Workflow.objects.filter(slug="small").exists()


def test_overwriting_needs_the_change_permission(client, phases_small_workflow):
    bob = get_user_model().objects.create_user("bob", "bob@example.org", "password", is_staff=True)
    bob.user_permissions.add(Permission.objects.get(codename="add_workflow"))
    client.force_login(bob)

    response = client.post(reverse("admin:phases_workflow_import"), {"file": upload(SMALL), "overwrite": "on"})

    assert response.status_code == 403


def test_the_changelist_links_to_import(alice_client, workflow):
    response = alice_client.get(reverse("admin:phases_workflow_changelist"))

    assert reverse("admin:phases_workflow_import") in response.text


def comparable(definition):
    """A definition as data; transitions are a set in the database, so their order carries no meaning."""
    data = definition.model_dump()
    for phase in data["phases"]:
        phase["allowed_transitions"] = sorted(phase["allowed_transitions"])
    return data


def test_export_downloads_yaml_that_loads_back_to_the_same_workflow(alice_client, workflow):
    url = reverse("admin:phases_workflow_export", args=[workflow.pk])
    assert url in alice_client.get(reverse("admin:phases_workflow_change", args=[workflow.pk])).text

    response = alice_client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/yaml; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="{DEFAULT_WORKFLOW_SLUG}.yaml"'
    exported = parse_workflow(response.content, source="export.yaml")
    assert comparable(exported) == comparable(read_workflow_file(DEFAULT_WORKFLOW_FILE))


def test_the_export_action_downloads_one_workflow(alice_client, workflow):
    response = alice_client.post(
        reverse("admin:phases_workflow_changelist"),
        {"action": "export_yaml", "_selected_action": [workflow.pk]},
    )

    assert response["Content-Disposition"] == f'attachment; filename="{DEFAULT_WORKFLOW_SLUG}.yaml"'
    assert parse_workflow(response.content).slug == DEFAULT_WORKFLOW_SLUG


def test_the_export_action_refuses_several_workflows(alice_client, workflow, phases_small_workflow):
    response = alice_client.post(
        reverse("admin:phases_workflow_changelist"),
        {"action": "export_yaml", "_selected_action": [workflow.pk, phases_small_workflow.pk]},
        follow=True,
    )

    assert "Content-Disposition" not in response
    assert "Select exactly one workflow to export." in response.text
