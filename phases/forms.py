"""Admin forms for workflows: phase editing checked by the workflow-file rules, column inlines, YAML import."""

import json
import re

import pydantic
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from .models import BoardColumn, Phase, Workflow
from .schema import ExpectedOutput, PhaseConfiguration, PhaseDefinition
from .services import workflow_definition
from .workflow_files import WorkflowFileError, dump_workflow, format_path, parse_workflow

MONOSPACE = "font-family: monospace; width: 100%; box-sizing: border-box;"


class LinesField(forms.CharField):
    """A list of strings edited one per line; lines are stripped and blank ones dropped."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 6, "style": MONOSPACE}))
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
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 10, "style": MONOSPACE}))
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
        queryset=Phase.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )
    done_definitions = LinesField(help_text="One criterion per line; an agent must meet every one.")
    expected_outputs = SchemaJSONField(
        list[ExpectedOutput],
        help_text='JSON list, e.g. [{"type": "document", "pattern": "docs/*.md", "required": true}].',
    )
    next_steps_guide = LinesField(help_text="One step per line.")
    configuration = SchemaJSONField(
        PhaseConfiguration,
        empty=dict,
        help_text='JSON object, e.g. {"timeout_seconds": 1800, "max_retries": 2, "retry_backoff_seconds": 30}.',
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
            "configuration",
        ]
        widgets = {"phase_prompt": forms.Textarea(attrs={"rows": 24, "style": MONOSPACE})}

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
            configuration=PhaseConfiguration.model_validate(data["configuration"]),
        )

        def renamed(keys):
            # Relations are stored by id, so a new key follows the phase wherever it is named.
            return [new if key == old else key for key in keys]

        workflow = Workflow.objects.filter(pk=self.instance.workflow_id)
        if transaction.get_connection().in_atomic_block:
            # The admin saves in the same transaction: two edits of one workflow's
            # phases then check it one after the other, never both the old state.
            workflow = workflow.select_for_update()
        definition = workflow_definition(workflow.get())
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
        widgets = {"phases": forms.CheckboxSelectMultiple}


class BoardColumnFormSet(forms.BaseInlineFormSet):
    """Columns offer only their own workflow's phases and columns."""

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
        widget=forms.Textarea(attrs={"rows": 3, "style": MONOSPACE}),
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
