"""Admin for the runtime: boards, tickets changed only through the ticket services, and the read-only logs."""

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import csrf_protect_m
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.utils.html import format_html

from .errors import Refused
from .forms import TicketAddForm, TicketChangeForm, add_refusal
from .models import Agent, Board, Event, PhaseHistory, Task, Ticket, TicketComment
from .services import agent_create, agent_revoke, agent_update
from .services.tasks import task_score_now


class ReadOnlyAdminMixin:
    """History and events are append-only: written by services, never by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ServiceFormAdminMixin:
    """For admins whose forms write through services as they validate: a submitted form shown again (it was
    not saved) undoes whatever the services wrote, say when an inline formset was invalid."""

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        response = super().render_change_form(request, context, add, change, form_url, obj)
        if request.method == "POST":
            # Marked once the form is prepared, which may still read (the content types, in a new process).
            transaction.set_rollback(True)
        return response


@admin.register(Board)
class BoardAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "workflow", "created_at")
    list_select_related = ("workflow",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("members", "owners")

    def get_readonly_fields(self, request, obj=None):
        # Tickets sit in phases of the board's workflow; another workflow would strand them.
        return ("workflow",) if obj else ()


class PhaseHistoryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PhaseHistory
    fields = ("created_at", "from_key", "to_key", "kind", "reason", "actor")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    extra = 0


@admin.register(Ticket)
class TicketAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    list_display = ("id", "title", "board", "phase", "priority", "is_blocked", "version", "updated_at")
    list_display_links = ("id", "title")
    list_filter = ("board", "priority", "is_blocked", "phase")
    list_select_related = ("board", "phase")
    search_fields = ("title", "description")

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = TicketChangeForm if obj else TicketAddForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.actor = request.user  # a class made for this request by modelform_factory
        return form

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ("board", "title", "description", "priority", "phase")})]
        return [
            (None, {"fields": ("board", "phase", "title", "description", "priority", "is_blocked", "blocked_reason")}),
            ("Move", {"fields": ("move_to_phase", "transition_reason", "force")}),
            ("Record", {"fields": ("version", "created_by", "created_at", "updated_at")}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return ("board", "phase", "version", "created_by", "created_at", "updated_at") if obj else ()

    def get_inlines(self, request, obj):
        return [PhaseHistoryInline] if obj else []

    def save_model(self, request, obj, form, change):
        """Nothing to do: the form's service call already wrote the ticket, its history and its events."""

    def has_delete_permission(self, request, obj=None):
        # No service deletes a ticket, and nothing may change without its event.
        return False


@admin.register(PhaseHistory)
class PhaseHistoryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "ticket", "from_key", "to_key", "kind", "actor")
    list_filter = ("kind",)
    list_select_related = ("ticket",)
    search_fields = ("ticket__title", "from_key", "to_key", "actor", "reason")
    date_hierarchy = "created_at"


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "type", "board", "entity_type", "entity_id", "actor")
    list_filter = ("type", "board")
    list_select_related = ("board",)
    search_fields = ("type", "entity_id", "actor")
    date_hierarchy = "created_at"
    fields = ("type", "board", "entity_type", "entity_id", "actor", "created_at", "payload_pretty")
    readonly_fields = fields

    @admin.display(description="Payload")
    def payload_pretty(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.payload, indent=2, ensure_ascii=False, sort_keys=True))


class AgentAddForm(forms.ModelForm):
    """Registers the agent through agent_create, which returns the token; the form keeps it for one message."""

    capabilities = forms.CharField(
        required=False, max_length=4000, help_text="Comma-separated, e.g. <code>python, django</code>."
    )

    class Meta:
        model = Agent
        fields = ("name", "agent_type", "boards", "phase", "capabilities")

    actor = None
    token = None

    def _post_clean(self):
        # The service checks and writes (the model's own checks would duplicate its rules); it runs last.
        if self.errors:
            return
        data = self.cleaned_data
        try:
            self.instance, self.token = agent_create(
                name=data["name"],
                boards=data["boards"],
                phase=data["phase"],
                capabilities=data["capabilities"] or None,
                agent_type=data["agent_type"],
                actor=self.actor,
            )
        except (Refused, ValidationError) as exc:
            add_refusal(self, exc)


class AgentChangeForm(forms.ModelForm):
    """What staff trust an agent with (capabilities, type, phase), changed through agent_update."""

    capabilities = forms.CharField(
        required=False,
        max_length=4000,
        help_text="Comma-separated. The agent claims only tasks whose required capabilities it has.",
    )

    class Meta:
        model = Agent
        fields = ("agent_type", "phase", "capabilities")

    actor = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["capabilities"] = ", ".join(self.instance.capabilities or [])
        if not self.instance.is_revoked:  # a revoked agent's page shows every field read-only
            workflows = self.instance.boards.values("workflow")
            self.fields["phase"].queryset = self.fields["phase"].queryset.filter(workflow__in=workflows)
            self.fields["phase"].help_text = "Empty: the agent takes tasks of any phase."

    def _post_clean(self):
        if self.errors or self.instance.is_revoked:
            return
        data = self.cleaned_data
        try:
            self.instance = agent_update(
                agent=self.instance,
                actor=self.actor,
                capabilities=data["capabilities"] or [],
                agent_type=data["agent_type"],
                phase=data["phase"],
            )
        except (Refused, ValidationError) as exc:
            add_refusal(self, exc)


@admin.register(Agent)
class AgentAdmin(ServiceFormAdminMixin, admin.ModelAdmin):
    """Agents are added through agent_create (the token is shown once), changed by staff through agent_update
    (capabilities, type, phase: an agent cannot change them itself) and retired by revoking."""

    list_display = ("name", "agent_type", "status", "phase", "board_list", "last_heartbeat", "revoked")
    list_filter = ("status", ("revoked_at", admin.EmptyFieldListFilter), "boards")
    search_fields = ("name",)
    actions = ("revoke_agents",)
    add_fields = ("name", "agent_type", "boards", "phase", "capabilities")
    change_fields = (
        "name",
        "agent_type",
        "status",
        "phase",
        "board_list",
        "capabilities",
        "last_heartbeat",
        "token",
        "revoked_at",
        "created_at",
    )
    editable_fields = ("agent_type", "phase", "capabilities")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("phase").prefetch_related("boards")

    def get_fields(self, request, obj=None):
        return self.change_fields if obj else self.add_fields

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        if obj.is_revoked:
            return self.change_fields
        return tuple(name for name in self.change_fields if name not in self.editable_fields)

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = AgentAddForm if obj is None else AgentChangeForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.actor = request.user  # a class made for this request by modelform_factory
        return form

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "boards":
            kwargs["widget"] = forms.CheckboxSelectMultiple
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        """The form's service call already wrote the agent; this only hands a new agent's token over, once."""
        if not change:
            messages.warning(
                request,
                format_html(
                    "The token of agent {} is <code>{}</code>. Copy it now: this is the only time it is shown, "
                    "and only its hash is stored.",
                    obj.name,
                    form.token,
                ),
            )

    def save_related(self, request, form, formsets, change):
        """Nothing to do: agent_create set the boards, and nothing else of an agent is edited here."""

    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and object_id and "_revoke" in request.POST:
            # The Revoke button sits in the change form: revoke, and leave whatever else was typed unsaved.
            agent = self.get_object(request, unquote(object_id))
            if agent is None:
                raise Http404
            if not self.has_change_permission(request, agent):
                raise PermissionDenied
            if agent.revoked_at is None:
                agent_revoke(agent=agent, actor=request.user)
                self.message_user(request, f"Revoked {agent.name}: its token no longer works.", messages.SUCCESS)
            return HttpResponseRedirect(request.path)
        return super().changeform_view(request, object_id, form_url, extra_context)

    def has_delete_permission(self, request, obj=None):
        # Deleting would strand the agent's tasks in hand and its history; revoke it instead.
        return False

    @admin.display(description="Boards")
    def board_list(self, obj):
        return ", ".join(board.slug for board in obj.boards.all())

    @admin.display(description="Revoked", boolean=True, ordering="revoked_at")
    def revoked(self, obj):
        return obj.is_revoked

    @admin.display(description="Token")
    def token(self, obj):
        if obj.is_revoked:
            return format_html("<code>{}…</code> (revoked)", obj.token_prefix)
        return format_html(
            '<code>{}…</code> <input type="submit" name="_revoke" value="Revoke" class="button" '
            "onclick=\"return confirm('Revoke this agent? Its token stops working at once.')\">",
            obj.token_prefix,
        )

    @admin.action(description="Revoke the selected agents' tokens", permissions=["change"])
    def revoke_agents(self, request, queryset):
        agents = list(queryset.filter(revoked_at__isnull=True))
        for agent in agents:
            agent_revoke(agent=agent, actor=request.user)
        self.message_user(
            request,
            f"Revoked {len(agents)} agent(s); their tasks in hand went back to the queue.",
            messages.SUCCESS,
        )


@admin.register(Task)
class TaskAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Tasks change through the task services and the agent API only; here they are looked at."""

    list_display = (
        "id",
        "title",
        "ticket",
        "phase",
        "status",
        "priority",
        "current_score",
        "assigned_agent",
        "attempt",
        "retry_count",
        "updated_at",
    )
    list_display_links = ("id", "title")
    list_filter = ("status", "phase", "priority", "ticket__board")
    list_select_related = ("ticket", "phase", "assigned_agent")
    search_fields = ("title",)
    date_hierarchy = "created_at"

    @admin.display(description="score", ordering="score")
    def current_score(self, obj):
        # The stored score is stated at a fixed past instant (see task_score); people see today's.
        return f"{task_score_now(obj):.2f}"


@admin.register(TicketComment)
class TicketCommentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created_at", "ticket", "author", "short_body")
    list_select_related = ("ticket",)
    search_fields = ("body", "author", "ticket__title")
    date_hierarchy = "created_at"

    @admin.display(description="Comment")
    def short_body(self, obj):
        return obj.body if len(obj.body) <= 80 else obj.body[:79] + "…"
