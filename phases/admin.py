"""Admin for workflow definitions: workflows with their phases and columns, phase editing, YAML import and export."""

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.defaultfilters import linebreaksbr
from django.template.response import TemplateResponse
from django.urls import path
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


@admin.register(Phase)
class PhaseAdmin(admin.ModelAdmin):
    form = PhaseForm
    list_display = ("key", "name", "workflow", "sequence_order", "is_terminal")
    list_filter = ("workflow",)
    list_select_related = ("workflow",)
    search_fields = ("key", "name")
    readonly_fields = ("workflow", "agent_instructions_preview")
    fieldsets = (
        (None, {"fields": ("workflow", "key", "name", "description", "sequence_order", "is_terminal")}),
        ("Transitions", {"fields": ("allowed_transitions",)}),
        (
            "What the agent gets",
            {"fields": ("phase_prompt", "done_definitions", "expected_outputs", "next_steps_guide", "configuration")},
        ),
        ("Agent instructions preview", {"fields": ("agent_instructions_preview",)}),
    )

    @admin.display(description="Agent instructions preview")
    def agent_instructions_preview(self, obj):
        # format_html escapes: a prompt is text for an agent, never markup for this page.
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.agent_instructions())

    def has_add_permission(self, request):
        # A new phase belongs in a workflow and one of its columns: add it on the workflow's page.
        return False
