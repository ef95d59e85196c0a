"""The workflow page's phase and column rows: an edit that would break a workflow rule is refused, nothing saved."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from board.models import Board
from board.services import ticket_create
from phases.models import BoardColumn, Phase, Workflow

from .admin_forms import change_data
from .workflow_samples import SMALL, database_state, load, transitions_of

pytestmark = pytest.mark.django_db

PHASES, COLUMNS = 0, 1


@pytest.fixture
def small():
    return load(SMALL).workflow


def url_of(workflow):
    return reverse("admin:phases_workflow_change", args=[workflow.pk])


def row(response, group, key):
    """The index of the inline form showing the phase or column `key`."""
    formset = response.context["inline_admin_formsets"][group].formset
    return next(index for index, form in enumerate(formset.forms) if form.instance.key == key)


def edit(client, workflow, **changes):
    """Post the workflow page back as a browser would, with rows changed as `phases` or `columns` say
    ({key: {field: value}}, None drops a field) and the workflow's own fields as `page` says."""
    response = client.get(url_of(workflow))
    data = change_data(response)
    for (group, prefix), rows in zip(
        ((PHASES, "phases"), (COLUMNS, "columns")), (changes.get("phases"), changes.get("columns")), strict=True
    ):
        for key, fields in (rows or {}).items():
            index = row(response, group, key)
            for field, value in fields.items():
                name = f"{prefix}-{index}-{field}"
                if value is None:
                    data.pop(name, None)
                else:
                    data[name] = value
    data.update(changes.get("page", {}))
    return client.post(url_of(workflow), data)


def form_of(response, group, key):
    """The inline form of the row stored as `key` (its instance holds the posted key by now)."""
    formset = response.context["inline_admin_formsets"][group].formset
    return next(form for form in formset.forms if form.initial.get("key") == key)


def non_form_errors(response, group):
    return list(response.context["inline_admin_formsets"][group].formset.non_form_errors())


def snapshot(workflow):
    workflow.refresh_from_db()
    return database_state(), (workflow.name, workflow.has_result, workflow.result_criteria)


# Refused


def test_making_a_phase_with_transitions_terminal_is_refused_and_nothing_is_saved(alice_client, small):
    before = snapshot(small)

    response = edit(
        alice_client,
        small,
        phases={"PHASE_TODO": {"is_terminal": "on", "name": "Waiting"}},
        page={"name": "Renamed"},
    )

    assert response.status_code == 200
    errors = form_of(response, PHASES, "PHASE_TODO").non_field_errors()
    assert errors[0].startswith("allowed_transitions[0]: terminal phase 'PHASE_TODO' cannot have transitions out")
    assert "Please correct the error" in response.text
    assert snapshot(small) == before


def test_a_column_showing_a_phase_another_column_shows_is_refused(alice_client, small):
    done, todo = (small.phases.get(key=key).pk for key in ("PHASE_DONE", "PHASE_TODO"))
    before = snapshot(small)

    response = edit(alice_client, small, columns={"done": {"phases": [done, todo]}})

    assert response.status_code == 200
    assert form_of(response, COLUMNS, "done").errors["phases"] == [
        "phase 'PHASE_TODO' is already shown in column 'todo'; a phase belongs to one column"
    ]
    assert snapshot(small) == before


def test_a_column_moving_tickets_on_to_itself_is_refused(alice_client, small):
    todo = small.columns.get(key="todo").pk
    before = snapshot(small)

    response = edit(alice_client, small, columns={"todo": {"auto_transition_to": todo}})

    assert form_of(response, COLUMNS, "todo").errors["auto_transition_to"] == [
        "column 'todo' cannot auto-transition to itself"
    ]
    assert snapshot(small) == before


def test_deleting_the_only_column_of_a_phase_is_refused(alice_client, small):
    before = snapshot(small)

    response = edit(alice_client, small, columns={"blocked": {"DELETE": "on"}})

    assert form_of(response, PHASES, "PHASE_BLOCKED").errors["key"] == [
        "phase 'PHASE_BLOCKED' is in no board column, so its tickets would not be shown"
    ]
    assert BoardColumn.objects.filter(workflow=small, key="blocked").exists()
    assert snapshot(small) == before


def test_deleting_a_phase_its_column_still_needs_is_refused(alice_client, small):
    before = snapshot(small)

    response = edit(alice_client, small, phases={"PHASE_BLOCKED": {"DELETE": "on"}})

    [message] = form_of(response, COLUMNS, "blocked").errors["phases"]
    assert "at least 1 item" in message
    assert snapshot(small) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("key", "to do", "should match pattern"),
        ("sequence_order", "1", "1 is also the sequence_order of phases[0] (PHASE_DONE); each needs its own place"),
        ("name", "To\u2028do", "must be one line"),
    ],
)
def test_a_bad_phase_row_is_refused_on_its_field(alice_client, small, field, value, message):
    before = snapshot(small)

    response = edit(alice_client, small, phases={"PHASE_TODO": {field: value}})

    assert response.status_code == 200
    [error] = form_of(response, PHASES, "PHASE_TODO").errors[field]
    assert message in error
    assert snapshot(small) == before


def test_a_key_another_phase_has_is_refused(alice_client, small):
    before = snapshot(small)

    response = edit(alice_client, small, phases={"PHASE_TODO": {"key": "PHASE_DONE"}})

    assert non_form_errors(response, PHASES) == ["Please correct the duplicate data for key."]
    assert snapshot(small) == before


def test_a_bad_column_colour_is_refused_on_its_field(alice_client, small):
    before = snapshot(small)

    response = edit(alice_client, small, columns={"todo": {"color": "plaid"}})

    assert "Unknown colour 'plaid'" in form_of(response, COLUMNS, "todo").errors["color"][0]
    assert snapshot(small) == before


def test_a_phase_delete_that_tickets_prevent_is_refused_by_its_own_rule(alice_client, small, alice):
    board = Board.objects.create(name="Small board", slug="small-board", workflow=small)
    ticket_create(board=board, title="Finished", actor=alice, phase="PHASE_DONE")
    before = snapshot(small)

    response = edit(alice_client, small, phases={"PHASE_DONE": {"DELETE": "on"}}, columns={"done": {"DELETE": "on"}})

    assert response.status_code == 200
    [message] = non_form_errors(response, PHASES)
    assert message.startswith("Deleting phase Done (PHASE_DONE) would require deleting the following protected")
    assert snapshot(small) == before


# Accepted


def test_the_page_posted_back_unchanged_saves(alice_client, small):
    assert edit(alice_client, small).status_code == 302


def test_an_edit_that_keeps_every_rule_is_saved(alice_client, small):
    response = edit(alice_client, small, phases={"PHASE_TODO": {"name": "Waiting"}}, columns={"todo": {"wip_limit": 5}})

    assert response.status_code == 302
    assert small.phases.get(key="PHASE_TODO").name == "Waiting"
    assert small.columns.get(key="todo").wip_limit == 5


def test_a_renamed_phase_is_followed_by_its_transitions_and_column(alice_client, small):
    response = edit(alice_client, small, phases={"PHASE_TODO": {"key": "PHASE_START"}})

    assert response.status_code == 302
    assert transitions_of(small)["PHASE_BLOCKED"] == {"PHASE_START"}
    assert list(small.columns.get(key="todo").phases.values_list("key", flat=True)) == ["PHASE_START"]


def test_a_phase_deleted_with_its_column_is_gone_from_the_others_transitions(alice_client, small):
    response = edit(
        alice_client, small, phases={"PHASE_BLOCKED": {"DELETE": "on"}}, columns={"blocked": {"DELETE": "on"}}
    )

    assert response.status_code == 302
    assert transitions_of(small) == {"PHASE_TODO": {"PHASE_DONE"}, "PHASE_DONE": set()}


def test_a_column_deleted_with_the_auto_transition_to_it_saves(alice_client, small):
    # todo moves tickets on to done; done's phase goes to another column and done is deleted.
    blocked = small.columns.get(key="blocked")
    done_phase, blocked_phase = (small.phases.get(key=key).pk for key in ("PHASE_DONE", "PHASE_BLOCKED"))

    response = edit(
        alice_client,
        small,
        columns={"done": {"DELETE": "on"}, "blocked": {"phases": [done_phase, blocked_phase]}},
    )

    assert response.status_code == 302
    assert small.columns.get(key="todo").auto_transition_to is None
    assert set(blocked.phases.values_list("key", flat=True)) == {"PHASE_DONE", "PHASE_BLOCKED"}


# New rows


def add_phase(client, workflow, **fields):
    response = client.get(url_of(workflow))
    data = change_data(response)
    index = int(data["phases-TOTAL_FORMS"])
    data["phases-TOTAL_FORMS"] = str(index + 1)
    data.update({f"phases-{index}-{name}": value for name, value in fields.items()})
    return client.post(url_of(workflow), data, follow=True)


def test_a_new_phase_may_wait_for_its_column(alice_client, small):
    response = add_phase(alice_client, small, key="PHASE_REVIEW", name="Review", sequence_order="3")

    assert response.redirect_chain[-1][1] == 302
    assert small.phases.filter(key="PHASE_REVIEW").exists()
    # A column offers stored phases only, so the page says what is left to do.
    assert "Workflow rule broken: phases[3].id: phase &#x27;PHASE_REVIEW&#x27; is in no board column" in response.text


def test_a_new_phase_breaking_another_rule_is_refused(alice_client, small):
    before = snapshot(small)

    response = add_phase(alice_client, small, key="PHASE_REVIEW", name="Review", sequence_order="0")

    formset = response.context["inline_admin_formsets"][PHASES].formset
    assert formset.forms[3].errors["sequence_order"] == [
        "0 is also the sequence_order of phases[0] (PHASE_TODO); each needs its own place"
    ]
    assert snapshot(small) == before


def test_a_new_workflow_needs_a_phase(alice_client):
    response = alice_client.get(reverse("admin:phases_workflow_add"))

    response = alice_client.post(
        reverse("admin:phases_workflow_add"), change_data(response, name="Research", slug="research")
    )

    assert response.status_code == 200
    assert non_form_errors(response, PHASES) == ["phases: a workflow needs at least one phase"]
    assert not Workflow.objects.filter(slug="research").exists()


def test_a_new_workflow_with_a_phase_is_created_and_told_what_is_missing(alice_client):
    response = alice_client.get(reverse("admin:phases_workflow_add"))
    data = change_data(response, name="Research", slug="research")
    data.update(
        {
            "phases-TOTAL_FORMS": "1",
            "phases-0-key": "PHASE_READ",
            "phases-0-name": "Read",
            "phases-0-sequence_order": "0",
        }
    )

    response = alice_client.post(reverse("admin:phases_workflow_add"), data, follow=True)

    workflow = Workflow.objects.get(slug="research")
    assert list(workflow.phases.values_list("key", flat=True)) == ["PHASE_READ"]
    assert "Workflow rule broken: phases[0].id: phase &#x27;PHASE_READ&#x27; is in no board column" in response.text


def test_an_existing_phase_is_not_let_off_the_column_rule(alice_client, small):
    # Only a phase added on this page may wait: unmapping a stored one is refused even beside a new one.
    before = snapshot(small)
    response = alice_client.get(url_of(small))
    data = change_data(response)
    data["phases-TOTAL_FORMS"] = "4"
    data.update({"phases-3-key": "PHASE_REVIEW", "phases-3-name": "Review", "phases-3-sequence_order": "3"})
    data[f"columns-{row(response, COLUMNS, 'blocked')}-DELETE"] = "on"

    response = alice_client.post(url_of(small), data)

    assert response.status_code == 200
    assert "is in no board column" in form_of(response, PHASES, "PHASE_BLOCKED").errors["key"][0]
    assert snapshot(small) == before
    assert not Phase.objects.filter(key="PHASE_REVIEW").exists()


def test_rows_shown_read_only_are_checked_as_stored(client, small):
    # Staff who may change the workflow but only view its phases and columns still save its own fields.
    staff = get_user_model().objects.create_user("dora", "dora@example.org", "password", is_staff=True)
    codenames = ["view_workflow", "change_workflow", "view_phase", "view_boardcolumn"]
    staff.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(staff)

    response = client.post(url_of(small), change_data(client.get(url_of(small)), name="Smaller"))

    assert response.status_code == 302
    small.refresh_from_db()
    assert small.name == "Smaller"


# The columns' phase mapping: checkboxes folded under a line naming the checked phases


def mapping_cell(html, column_index):
    """The phase mapping control of column row `column_index`, as the page renders it."""
    start = html.index(f'<div id="id_columns-{column_index}-phases"')
    return html[html.rindex('<details class="omoi-multi"', 0, start) : html.index("</details>", start)]


def test_a_columns_phases_fold_under_a_line_naming_the_checked_ones(alice_client, small):
    response = alice_client.get(url_of(small))
    todo = row(response, COLUMNS, "todo")

    cell = mapping_cell(response.text, todo)

    summary = cell[cell.index("<summary>") : cell.index("</summary>")]
    assert '<span class="visually-hidden">Phase mapping: </span>' in summary
    assert '<span class="omoi-chip">To do</span>' in summary
    assert "Done" not in summary
    # Every phase of the workflow is a box under it, named as on the board, the column's own checked.
    todo_phase = small.phases.get(key="PHASE_TODO")
    assert cell.count('type="checkbox"') == small.phases.count()
    assert f'name="columns-{todo}-phases" value="{todo_phase.pk}"' in cell
    assert cell.count(" checked") == 1
    assert "Blocked</label>" in cell


def test_a_column_without_phases_says_so_on_its_line(alice_client, small):
    response = alice_client.get(url_of(small))
    data = change_data(response)
    blocked = row(response, COLUMNS, "blocked")
    data.pop(f"columns-{blocked}-phases")

    refused = alice_client.post(url_of(small), data)

    assert refused.status_code == 200
    cell = mapping_cell(refused.text, blocked)
    assert '<span class="omoi-multi-empty">No phase</span>' in cell
    assert 'data-empty="No phase"' in cell


def test_the_boxes_checked_under_a_column_are_saved_as_its_mapping(alice_client, small):
    response = alice_client.get(url_of(small))
    data = change_data(response)
    done, blocked = row(response, COLUMNS, "done"), row(response, COLUMNS, "blocked")
    # Tick Done beside Blocked in the blocked column, with the values its boxes carry; delete the done column.
    cell = mapping_cell(response.text, blocked)
    values = {
        label: cell.split(f"{label}</label>")[0].rsplit('value="', 1)[1].split('"')[0] for label in ("Done", "Blocked")
    }
    data[f"columns-{blocked}-phases"] = [values["Done"], values["Blocked"]]
    data[f"columns-{done}-DELETE"] = "on"

    assert alice_client.post(url_of(small), data).status_code == 302
    assert set(small.columns.get(key="blocked").phases.values_list("key", flat=True)) == {"PHASE_DONE", "PHASE_BLOCKED"}


def test_the_columns_selects_are_one_word_wide_and_explained_in_their_help(alice_client, small):
    response = alice_client.get(url_of(small))
    form = response.context["inline_admin_formsets"][COLUMNS].formset.forms[0]

    assert list(form.fields["wip_policy"].choices) == [("warn", "Warn"), ("block", "Block")]
    assert "Warn: allow, mark the column; Block: refuse the move." in form.fields["wip_policy"].help_text
    assert [label for _, label in form.fields["category"].choices] == ["Waiting", "Working", "Done"]
    assert form.fields["category"].help_text.startswith("How flow analytics count the column")


def test_every_control_of_a_row_is_named_after_its_heading(alice_client, small):
    response = alice_client.get(url_of(small))

    for name, label in [
        ("phases-0-key", "Key"),
        ("phases-0-is_terminal", "Is terminal"),
        ("phases-0-DELETE", "Delete"),
        ("columns-0-sequence_order", "Order"),
        ("columns-0-wip_policy", "WIP policy"),
        ("columns-0-auto_transition_to", "Moves on to"),
        ("columns-1-auto_transition_to", "Moves on to"),
        ("columns-0-color", "Colour"),
    ]:
        tag = response.text[response.text.rindex("<", 0, response.text.index(f'name="{name}"')) :].split(">", 1)[0]
        assert f'aria-label="{label}"' in tag, tag
    # The phase boxes keep their own labels: the phase names.
    assert 'name="columns-0-phases" value' in response.text
    assert 'aria-label="Phase mapping"' not in response.text
