"""Admin forms for workflows: the workflow, its phases and columns checked by the workflow-file rules; YAML import."""

import json
import re

import pydantic
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.html import format_html, format_html_join

from .models import BoardColumn, Phase, Workflow
from .schema import (
    ColumnDefinition,
    ExpectedOutput,
    PhaseConfiguration,
    PhaseDefinition,
    ValidationCriterion,
    WorkflowDefinition,
)
from .services import workflow_definition
from .workflow_files import UNMAPPED_PHASE, WorkflowFileError, dump_workflow, format_path, parse_workflow

# Text an agent or a file reads (prompts, JSON, one item per line): monospace, the field's full width
# (static/css/admin.css).
CODE = "omoi-code"


class LinesField(forms.CharField):
    """A list of strings edited one per line; lines are stripped and blank ones dropped."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 6, "class": CODE}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list | tuple) else value

    def to_python(self, value):
        lines = value if isinstance(value, list | tuple) else str(value or "").splitlines()
        return [text for text in (str(line).strip() for line in lines) if text]


class SchemaJSONField(forms.JSONField):
    """JSON text checked against a pydantic type; keeps what the type dumps, as loading a workflow file does."""

    def __init__(self, schema, *, empty=list, **kwargs):
        self.adapter = pydantic.TypeAdapter(schema)
        self.empty = empty
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 10, "class": CODE}))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        text = json.dumps(value, indent=2, ensure_ascii=False)
        try:
            text.encode()
        except UnicodeEncodeError:
            # A lone surrogate (refused, shown again to be fixed) cannot be sent as UTF-8; its \\u escape can.
            return json.dumps(value, indent=2)
        return text

    # json.loads raises RecursionError, not a decoding error, for text nested thousands of levels deep.
    def to_python(self, value):
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError("The JSON is nested too deeply.", code="invalid") from None

    def bound_data(self, data, initial):
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return forms.fields.InvalidJSONInput(data)

    def clean(self, value):
        value = super().clean(value)
        if value is None:
            return self.empty()
        try:
            parsed = self.adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            raise ValidationError(
                [
                    f"{format_path(error['loc'])}: {error['msg']}" if error["loc"] else error["msg"]
                    for error in exc.errors(include_url=False)
                ]
            ) from None
        return self.adapter.dump_python(parsed, mode="json", exclude_none=True)


# Fields of a phase entry in a workflow file, by form field.
_FILE_KEYS = {"id": "key"}
_PROBLEM_PATH = re.compile(r"^phases\[(\d+)\](?:\.(\w+))?")


class PhaseForm(forms.ModelForm):
    allowed_transitions = forms.ModelMultipleChoiceField(
        queryset=Phase.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple(attrs={"class": "omoi-chip-choices"}),
    )
    done_definitions = LinesField(help_text="One criterion per line; an agent must meet every one.")
    expected_outputs = SchemaJSONField(
        list[ExpectedOutput],
        help_text='JSON list, e.g. [{"type": "document", "pattern": "docs/*.md", "required": true}].',
    )
    next_steps_guide = LinesField(help_text="One step per line.")
    validation_criteria = SchemaJSONField(
        list[ValidationCriterion],
        help_text=(
            'JSON list of checks shown to agents, e.g. [{"description": "The PRD exists", '
            '"check_type": "file_exists", "target": "docs/PRD.md"}].'
        ),
    )
    configuration = SchemaJSONField(
        PhaseConfiguration,
        empty=dict,
        help_text=(
            'JSON object, e.g. {"timeout_seconds": 1800, "max_retries": 2, "retry_backoff_seconds": 30, '
            '"retry_backoff_max_seconds": 600, "default_tasks": [{"title": "Write the design"}]}.'
        ),
    )

    class Meta:
        model = Phase
        fields = [
            "key",
            "name",
            "description",
            "sequence_order",
            "is_terminal",
            "allowed_transitions",
            "done_definitions",
            "expected_outputs",
            "phase_prompt",
            "next_steps_guide",
            "validation_criteria",
            "configuration",
        ]
        widgets = {"phase_prompt": forms.Textarea(attrs={"rows": 24, "class": CODE})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The key in the database until the form is saved, to find this phase in the workflow's definition.
        self.stored_key = self.instance.key
        self.fields["allowed_transitions"].queryset = (
            Phase.objects.filter(workflow_id=self.instance.workflow_id).exclude(pk=self.instance.pk).in_order()
        )

    def clean_phase_prompt(self):
        # Browsers send a textarea's lines ending in CRLF; files and agents use LF.
        return self.cleaned_data["phase_prompt"].replace("\r\n", "\n")

    def clean_description(self):
        return self.cleaned_data["description"].replace("\r\n", "\n")

    def clean(self):
        cleaned = super().clean()
        # Only a stored phase has a workflow to check, and only complete data can be checked.
        if self.instance.pk and not self.errors:
            self._check_workflow_rules(cleaned)
        return cleaned

    def _check_workflow_rules(self, data):
        """Validate the whole workflow with this phase edited, as its file would be: one copy of the rules."""
        old, new = self.stored_key, data["key"]
        edited = PhaseDefinition.model_construct(
            id=new,
            name=data["name"],
            description=data["description"],
            sequence_order=data["sequence_order"],
            allowed_transitions=[phase.key for phase in data["allowed_transitions"]],
            is_terminal=data["is_terminal"],
            done_definitions=data["done_definitions"],
            expected_outputs=[ExpectedOutput.model_validate(output) for output in data["expected_outputs"]],
            phase_prompt=data["phase_prompt"],
            next_steps_guide=data["next_steps_guide"],
            validation_criteria=[ValidationCriterion.model_validate(item) for item in data["validation_criteria"]],
            configuration=PhaseConfiguration.model_validate(data["configuration"]),
        )

        def renamed(keys):
            # Relations are stored by id, so a new key follows the phase wherever it is named.
            return [new if key == old else key for key in keys]

        definition = workflow_definition(_locked(self.instance.workflow_id))
        # Last, so that a clash with another phase (a key or a place in the order) is reported on this one.
        phases = [
            phase.model_copy(update={"allowed_transitions": renamed(phase.allowed_transitions)})
            for phase in definition.phases
            if phase.id != old
        ]
        phases.append(edited)
        position = len(phases) - 1
        columns = [
            column.model_copy(update={"phase_mapping": renamed(column.phase_mapping)})
            for column in definition.board_columns
        ]
        candidate = definition.model_copy(update={"phases": phases, "board_columns": columns})
        try:
            parse_workflow(dump_workflow(candidate))
        except WorkflowFileError as exc:
            for problem in exc.problems:
                match = _PROBLEM_PATH.match(problem.path)
                field = match and int(match[1]) == position and _FILE_KEYS.get(match[2], match[2])
                if field in self.fields:
                    self.add_error(field, problem.message)
                else:
                    self.add_error(None, f"{problem.path}: {problem.message}" if problem.path else problem.message)


def _locked(workflow_id):
    """The stored workflow, its row locked when the caller saves in the same transaction.

    The admin does: two edits of one workflow then check it one after the
    other, never both against the state before either.
    """
    workflow = Workflow.objects.filter(pk=workflow_id)
    if transaction.get_connection().in_atomic_block:
        workflow = workflow.select_for_update()
    return workflow.get()


def _schema_errors(exc):
    """(field, message) for each error of a pydantic validation, the field being the first part of its path."""
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        rest = format_path(loc[1:])
        yield (loc[0] if loc else None), f"{rest}: {error['msg']}" if rest else error["msg"]


class WorkflowForm(forms.ModelForm):
    """A workflow's own settings, held to the rules of a workflow file's top level."""

    result_criteria = LinesField(
        help_text="One criterion per line: what a ticket's result must show before staff accept it."
    )

    class Meta:
        model = Workflow
        fields = ["name", "slug", "description", "has_result", "result_criteria", "on_result_found"]

    def clean_description(self):
        return self.cleaned_data["description"].replace("\r\n", "\n")

    def clean(self):
        cleaned = super().clean()
        fields = ("name", "description", "has_result", "result_criteria", "on_result_found")
        if any(name in self.errors for name in fields):
            return cleaned
        # One stand-in phase: the phases are checked with the inlines, against the whole workflow.
        top = {name: cleaned[name] for name in fields} | {"phases": [{"id": "P", "name": "P"}]}
        try:
            WorkflowDefinition.model_validate(top)
        except pydantic.ValidationError as exc:
            for field, message in _schema_errors(exc):
                self.add_error(field if field in self.fields else None, message)
        return cleaned


class CompactMultiSelect(forms.CheckboxSelectMultiple):
    """Checkboxes folded under a line naming what is checked: one line in a table row until opened.

    The line is a <summary>: a keyboard opens it like a button, and a screen
    reader hears the field's label and the checked choices. Opened, the choices
    show as chips (static/css/admin.css); static/js/admin-workflow.js
    keeps the line in step with the boxes.
    """

    def __init__(self, attrs=None, choices=(), *, label="", empty="None"):
        super().__init__({"class": "omoi-chip-choices", **(attrs or {})}, choices)
        self.label = label
        self.empty = empty

    def render(self, name, value, attrs=None, renderer=None):
        context = self.get_context(name, value, attrs)
        chosen = [
            option["label"]
            for _, options, _ in context["widget"]["optgroups"]
            for option in options
            if option["selected"]
        ]
        if chosen:
            names = format_html_join("", '<span class="omoi-chip">{}</span>', ((label,) for label in chosen))
        else:
            names = format_html('<span class="omoi-multi-empty">{}</span>', self.empty)
        return format_html(
            '<details class="omoi-multi" data-empty="{}"><summary><span class="visually-hidden">{}: </span>'
            '<span class="omoi-multi-chosen">{}</span></summary>{}</details>',
            self.empty,
            self.label,
            names,
            self._render(self.template_name, context, renderer),
        )


class BoardColumnForm(forms.ModelForm):
    class Meta:
        model = BoardColumn
        fields = [
            "key",
            "name",
            "sequence_order",
            "phases",
            "wip_limit",
            "wip_policy",
            "is_terminal",
            "auto_transition_to",
            "color",
        ]
        widgets = {"phases": CompactMultiSelect(label="Phase mapping", empty="No phase")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # One row of the columns table: phases as chips named as on the board, selects one word wide,
        # headings short enough that the row fits a laptop's screen beside the admin's sidebar.
        self.fields["phases"].label_from_instance = lambda phase: phase.name
        for name, label in _COLUMN_LABELS.items():
            if name in self.fields:
                self.fields[name].label = label
        for name in ("wip_policy", "category"):
            if name in self.fields:
                _shorten_choices(self.fields[name])


_COLUMN_LABELS = {
    "sequence_order": "Order",
    "wip_limit": "WIP limit",
    "wip_policy": "WIP policy",
    "is_terminal": "Terminal",
    "auto_transition_to": "Moves on to",
    "color": "Colour",
}


def _shorten_choices(field):
    """Name each choice by the words before its parenthesis, and move what the parenthesis says to the help text."""
    short, notes = [], []
    for value, label in field.choices:
        name, _, note = str(label).partition(" (")
        short.append((value, name))
        if note:
            notes.append(f"{name}: {note.removesuffix(')')}")
    field.choices = short
    if notes:
        field.help_text = " ".join(filter(None, [str(field.help_text), "; ".join(notes) + "."]))


# Fields of a file's phase or column, by the inline form's field that edits them.
_INLINE_FIELDS = {
    "phases": {"id": "key"},
    "board_columns": {"id": "key", "phase_mapping": "phases", "color_theme": "color"},
}
_ITEM_PATH = re.compile(r"^(phases|board_columns)\[(\d+)\](?:\.(\w+))?(.*)$")


class WorkflowEdit:
    """The phase and column inlines of one workflow page, checked together as the workflow they would save.

    Each inline sees only its own rows, yet the rules span both (a column
    mapping a phase twice, a terminal phase with transitions, auto-transition
    targets, ...). Both formsets of a request share one WorkflowEdit; whichever
    is cleaned first builds the workflow as it would be after the save, from
    the stored rows and every form's data, and validates it as the YAML loader
    does. Each problem goes to the form of the row it is about, so nothing is
    saved while one remains.

    One rule waits: a phase added on this page cannot be mapped to a column
    yet (a column offers only stored phases), so "in no board column" is not
    held against a new phase; the page warns about it after the save.
    """

    def __init__(self):
        self.formsets = {}
        self.checked = False

    def join(self, name, formset):
        self.formsets[name] = formset

    def check(self):
        if self.checked or set(self.formsets) != {"phases", "board_columns"}:
            return
        self.checked = True
        phases, columns = self.formsets["phases"], self.formsets["board_columns"]
        # Rows with problems of their own (a bad number, a protected delete) are reported first, alone.
        if not (phases.is_valid() and columns.is_valid()):
            return
        candidate, rows = self._candidate(phases.instance, phases, columns)
        try:
            parse_workflow(dump_workflow(candidate))
        except WorkflowFileError as exc:
            for problem in exc.problems:
                self._report(problem, rows, phases)

    @staticmethod
    def _rows(formset):
        """The forms that will be saved: stored rows not deleted, and new rows with something filled in."""
        for form in formset.forms:
            if formset._should_delete_form(form):
                continue
            if form.instance.pk is None and not form.has_changed():
                continue
            yield form

    def _candidate(self, workflow, phases, columns):
        if workflow.pk:
            stored = workflow_definition(_locked(workflow.pk))
            phase_keys = dict(Phase.objects.filter(workflow_id=workflow.pk).values_list("pk", "key"))
            column_keys = dict(BoardColumn.objects.filter(workflow_id=workflow.pk).values_list("pk", "key"))
        else:
            stored = WorkflowDefinition.model_construct(phases=[], board_columns=[])
            phase_keys, column_keys = {}, {}
        stored_phases = {phase.id: phase for phase in stored.phases}
        stored_columns = {column.id: column for column in stored.board_columns or []}

        # The rows edited go last, so that a clash (a key, a place in the order) is reported on them.
        phase_forms = sorted(self._rows(phases), key=lambda form: form.has_changed())
        column_forms = sorted(self._rows(columns), key=lambda form: form.has_changed())
        # Relations are stored by id: a renamed row is found under its new key, a deleted one is gone.
        new_phase_key = {phase_keys[f.instance.pk]: f.cleaned_data["key"] for f in phase_forms if f.instance.pk}
        new_column_key = {column_keys[f.instance.pk]: f.cleaned_data["key"] for f in column_forms if f.instance.pk}

        phase_items = []
        for form in phase_forms:
            data = form.cleaned_data
            edited = {
                "id": data["key"],
                "name": data["name"],
                "sequence_order": data["sequence_order"],
                "is_terminal": data["is_terminal"],
            }
            if form.instance.pk:
                base = stored_phases[phase_keys[form.instance.pk]]
                targets = [new_phase_key[key] for key in base.allowed_transitions if key in new_phase_key]
                phase_items.append(base.model_copy(update={**edited, "allowed_transitions": targets}))
            else:
                phase_items.append(PhaseDefinition.model_construct(**edited))

        column_items = []
        for form in column_forms:
            data = form.cleaned_data
            # A view-only row's data is its initial values: ids, not rows.
            target = getattr(data["auto_transition_to"], "pk", data["auto_transition_to"])
            edited = {
                "id": data["key"],
                "name": data["name"],
                "sequence_order": data["sequence_order"],
                # A phase or column deleted on this page leaves the mapping (cascade) and the target (set null).
                "phase_mapping": [
                    new_phase_key[phase_keys[pk]]
                    for pk in (getattr(phase, "pk", phase) for phase in data["phases"])
                    if phase_keys.get(pk) in new_phase_key
                ],
                "wip_limit": data["wip_limit"],
                "wip_policy": data["wip_policy"],
                "is_terminal": data["is_terminal"],
                "auto_transition_to": new_column_key.get(column_keys.get(target)) if target else None,
                "color_theme": data["color"],
            }
            if form.instance.pk:
                column_items.append(stored_columns[column_keys[form.instance.pk]].model_copy(update=edited))
            else:
                column_items.append(ColumnDefinition.model_construct(**edited))

        candidate = stored.model_copy(
            update={
                "name": workflow.name,
                "description": workflow.description,
                "has_result": workflow.has_result,
                "result_criteria": list(workflow.result_criteria or []),
                "on_result_found": workflow.on_result_found,
                "phases": phase_items,
                "board_columns": column_items,
            }
        )
        return candidate, {"phases": phase_forms, "board_columns": column_forms}

    @staticmethod
    def _report(problem, rows, phases):
        match = _ITEM_PATH.match(problem.path)
        if not match:
            phases._non_form_errors.append(f"{problem.path}: {problem.message}" if problem.path else problem.message)
            return
        group, position, key, rest = match[1], int(match[2]), match[3], match[4]
        form = rows[group][position]
        if problem.code == UNMAPPED_PHASE and form.instance.pk is None:
            return
        field = _INLINE_FIELDS[group].get(key, key)
        if field in form.fields:
            form.add_error(field, problem.message)
        else:
            # A part of the row this page does not edit (its transitions, its prompt): named in the message.
            form.add_error(None, f"{key}{rest}: {problem.message}" if key else problem.message)


class WorkflowInlineFormSet(forms.BaseInlineFormSet):
    """An inline of the workflow page; with `edit`, it is checked with the others as one workflow."""

    group = None

    def __init__(self, *args, edit=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.edit = edit
        if edit is not None:
            edit.join(self.group, self)

    def clean(self):
        super().clean()
        if self.edit is not None:
            self.edit.check()

    def add_fields(self, form, index):
        super().add_fields(form, index)
        # A table row's controls are labelled only by the column headings, which assistive technology does
        # not read as labels: each control is named after its heading. Boxes with labels of their own are not.
        for field in form.fields.values():
            # The admin wraps a relation's select (RelatedFieldWidgetWrapper), whose own attrs are not the copy's.
            widget = getattr(field.widget, "widget", field.widget)
            if field.label and not (widget.is_hidden or isinstance(widget, forms.CheckboxSelectMultiple)):
                widget.attrs.setdefault("aria-label", str(field.label))


class PhaseFormSet(WorkflowInlineFormSet):
    group = "phases"


class BoardColumnFormSet(WorkflowInlineFormSet):
    """Columns offer only their own workflow's phases and columns."""

    group = "board_columns"

    def add_fields(self, form, index):
        super().add_fields(form, index)
        workflow = self.instance
        form.fields["phases"].queryset = Phase.objects.filter(workflow_id=workflow.pk).in_order()
        form.fields["auto_transition_to"].queryset = BoardColumn.objects.filter(workflow_id=workflow.pk)


class WorkflowImportForm(forms.Form):
    file = forms.FileField(label="Workflow file (YAML)")
    slug = forms.SlugField(max_length=100, required=False, help_text="Empty: the slug written in the file.")
    overwrite = forms.BooleanField(required=False, help_text="Replace the workflow with this slug if it exists.")
    remap = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": CODE}),
        help_text="Where the tickets of removed phases go: one OLD_PHASE=NEW_PHASE per line.",
    )
    dry_run = forms.BooleanField(required=False, help_text="Check everything, report what would change, save nothing.")

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.OMOI_MAX_WORKFLOW_BYTES
        if upload.size > limit:
            raise ValidationError(f"The file has {upload.size} bytes; at most {limit} are allowed.")
        return upload

    def clean_remap(self):
        remap, errors = {}, []
        for number, line in enumerate(self.cleaned_data["remap"].splitlines(), start=1):
            if not line.strip():
                continue
            old, sep, new = (part.strip() for part in line.partition("="))
            if not (sep and old and new):
                errors.append(f"Line {number}: write OLD_PHASE=NEW_PHASE, not {line.strip()!r}.")
            else:
                remap[old] = new
        if errors:
            raise ValidationError(errors)
        return remap
