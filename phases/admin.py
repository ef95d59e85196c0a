"""Admin for workflow definitions: workflows with their phases and columns, phase editing, YAML import and export."""

import copy

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.defaultfilters import linebreaksbr
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from .forms import (
    BoardColumnForm,
    BoardColumnFormSet,
    PhaseForm,
    PhaseFormSet,
    WorkflowEdit,
    WorkflowForm,
    WorkflowImportForm,
)
from .markdown import MAX_SOURCE_CHARS, render_markdown
from .models import BoardColumn, Phase, Workflow
from .services import workflow_export, workflow_load
from .workflow_files import WorkflowFileError, parse_workflow


def workflow_problems(workflow):
    """What a stored workflow breaks of the workflow-file rules, checked by exporting and re-reading it."""
    try:
        parse_workflow(workflow_export(workflow=workflow))
    except WorkflowFileError as exc:
        # Paths name the place in the workflow; line numbers of a generated file would mean nothing.
        return [f"{problem.path}: {problem.message}" if problem.path else problem.message for problem in exc.problems]
    return []


def yaml_download(workflow):
    response = HttpResponse(workflow_export(workflow=workflow), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{workflow.slug}.yaml"'
    return response


class PhaseInline(admin.TabularInline):
    model = Phase
    formset = PhaseFormSet
    fields = ("key", "name", "sequence_order", "is_terminal")
    ordering = ("sequence_order", "key")
    show_change_link = True
    extra = 0


class BoardColumnInline(admin.TabularInline):
    model = BoardColumn
    fk_name = "workflow"
    form = BoardColumnForm
    formset = BoardColumnFormSet
    fields = (
        "key",
        "name",
        "sequence_order",
        "phases",
        "wip_limit",
        "wip_policy",
        "is_terminal",
        "category",
        "auto_transition_to",
        "color",
    )
    ordering = ("sequence_order", "key")
    extra = 0

    class Media:
        js = ("js/admin-workflow.js",)


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    form = WorkflowForm
    list_display = ("name", "slug", "version", "has_result", "updated_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("name", "slug", "description", "version", "rule_check")}),
        (
            "Result",
            {
                "fields": ("has_result", "result_criteria", "on_result_found"),
                "description": "Whether a ticket ends with a result an agent submits and staff review.",
            },
        ),
    )
    readonly_fields = ("version", "rule_check")
    inlines = (PhaseInline, BoardColumnInline)
    actions = ("export_yaml",)

    @admin.display(description="Rule check")
    def rule_check(self, obj):
        if not obj.pk:
            return "-"
        problems = workflow_problems(obj)
        if not problems:
            return "The workflow follows every rule of a workflow file."
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((problem,) for problem in problems)))

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if "data" in kwargs:
            # The inlines of one request are checked together, as the workflow they make (forms.WorkflowEdit).
            kwargs["edit"] = request.__dict__.setdefault("_workflow_edit", WorkflowEdit())
        return kwargs

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # Edits breaking a rule were refused before anything was saved. What remains is what this page
        # cannot finish in one go (a phase added here waits for a column) or was broken before.
        for problem in workflow_problems(form.instance):
            self.message_user(request, f"Workflow rule broken: {problem}", messages.WARNING)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("import/", self.admin_site.admin_view(self.import_view), name="{}_{}_import".format(*info)),
            path(
                "<path:object_id>/export/",
                self.admin_site.admin_view(self.export_view),
                name="{}_{}_export".format(*info),
            ),
            *super().get_urls(),
        ]

    def export_view(self, request, object_id):
        workflow = self.get_object(request, unquote(object_id))
        if workflow is None:
            raise Http404
        if not self.has_view_or_change_permission(request, workflow):
            raise PermissionDenied
        return yaml_download(workflow)

    @admin.action(description="Export selected workflow as YAML", permissions=["view"])
    def export_yaml(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one workflow to export.", messages.ERROR)
            return None
        return yaml_download(queryset.get())

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = WorkflowImportForm(request.POST or None, request.FILES or None)
        problems, summary = [], None
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            if data["overwrite"] and not self.has_change_permission(request):
                raise PermissionDenied
            upload = data["file"]
            try:
                definition = parse_workflow(upload.read(), source=upload.name)
                result = workflow_load(
                    definition=definition,
                    slug=data["slug"] or None,
                    overwrite=data["overwrite"],
                    remap=data["remap"],
                    dry_run=data["dry_run"],
                )
            except WorkflowFileError as exc:
                problems = [problem.format(exc.source) for problem in exc.problems]
            else:
                if result.dry_run:
                    summary = result.summary()
                else:
                    self.message_user(request, linebreaksbr(result.summary()), messages.SUCCESS)
                    return redirect("admin:phases_workflow_change", result.workflow.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Import a workflow from YAML",
            "form": form,
            "problems": problems,
            "summary": summary,
            "max_bytes": settings.OMOI_MAX_WORKFLOW_BYTES,
        }
        return TemplateResponse(request, "admin/phases/workflow/import.html", context)


# The phase form's fields that the agent's instructions are made of (Phase.agent_instructions).
INSTRUCTION_FIELDS = (
    "key",
    "name",
    "description",
    "phase_prompt",
    "done_definitions",
    "expected_outputs",
    "next_steps_guide",
    "validation_criteria",
    "allowed_transitions",
)
# The renderer reads at most this much; a longer draft is refused rather than previewed in part.
PREVIEW_MAX_CHARS = MAX_SOURCE_CHARS


def instructions_draft(phase, data):
    """The phase as the posted form would make it, unsaved, and the labels of the fields that cannot be read yet.

    Each field is read by the phase form's own field, so the preview shows what
    saving would store; a field that does not read (JSON being typed, an
    unknown transition) keeps its stored value and is named. Nothing is
    written: the draft is a copy, and its transitions are the chosen ones held
    in the place a prefetch would put them, so Phase.agent_instructions, the
    one writer of the text, reads them without asking the database.
    """
    form = PhaseForm(instance=phase)
    draft = copy.copy(phase)
    transitions = phase.allowed_transitions.all()
    unreadable = []
    for name in INSTRUCTION_FIELDS:
        field = form.fields[name]
        try:
            value = field.clean(field.widget.value_from_datadict(data, {}, form.add_prefix(name)))
        except ValidationError:
            unreadable.append(field.label or name.replace("_", " ").capitalize())
            continue
        if name == "allowed_transitions":
            transitions = value
        else:
            # Browsers send a textarea's lines ending in CRLF, as the form's clean methods know.
            setattr(draft, name, value.replace("\r\n", "\n") if isinstance(value, str) else value)
    draft._prefetched_objects_cache = {"allowed_transitions": transitions}
    return draft, unreadable


def instructions_preview(phase, unreadable=()):
    """What the preview template shows: the instructions in Markdown and rendered by the site's one renderer."""
    source = phase.agent_instructions()
    return {"source": source, "html": render_markdown(source), "unreadable": unreadable}


@admin.register(Phase)
class PhaseAdmin(admin.ModelAdmin):
    form = PhaseForm
    list_display = ("key", "name", "workflow", "sequence_order", "is_terminal")
    list_filter = ("workflow",)
    list_select_related = ("workflow",)
    search_fields = ("key", "name")
    readonly_fields = ("workflow",)
    fieldsets = (
        (None, {"fields": ("workflow", "key", "name", "description", "sequence_order", "is_terminal")}),
        ("Transitions", {"fields": ("allowed_transitions",)}),
        (
            "What the agent gets",
            {
                "fields": (
                    "phase_prompt",
                    "done_definitions",
                    "expected_outputs",
                    "next_steps_guide",
                    "validation_criteria",
                    "configuration",
                )
            },
        ),
    )

    class Media:
        js = ("js/admin-phase-preview.js",)

    def has_add_permission(self, request):
        # A new phase belongs in a workflow and one of its columns: add it on the workflow's page.
        return False

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/preview/",
                self.admin_site.admin_view(self.preview_view),
                name="{}_{}_preview".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        # The page beside the form (templates/admin/phases/phase/change_form.html): the instructions as
        # stored, or as the refused form left them, and where the page's script asks for them as edited.
        if obj is not None:
            draft, unreadable = instructions_draft(obj, request.POST) if request.method == "POST" else (obj, [])
            context["preview"] = instructions_preview(draft, unreadable)
            if self.has_change_permission(request, obj):
                context["preview_url"] = reverse("admin:phases_phase_preview", args=[obj.pk])
        return super().render_change_form(request, context, add=add, change=change, form_url=form_url, obj=obj)

    def preview_view(self, request, object_id):
        """The agent instructions as the posted phase form would make them, rendered; nothing is saved."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        phase = self.get_object(request, unquote(object_id))
        if phase is None:
            raise Http404
        if not self.has_change_permission(request, phase):
            raise PermissionDenied
        size = sum(len(value) for _, values in request.POST.lists() for value in values)
        if size > PREVIEW_MAX_CHARS:
            return HttpResponse(
                f"The preview takes at most {PREVIEW_MAX_CHARS:,} characters of text; this form has {size:,}.",
                status=413,
                content_type="text/plain; charset=utf-8",
            )
        draft, unreadable = instructions_draft(phase, request.POST)
        return TemplateResponse(request, "admin/phases/phase/preview.html", instructions_preview(draft, unreadable))
