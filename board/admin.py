"""Admin for the runtime: boards, tickets changed only through the ticket services, and the read-only logs."""

import json

from django.contrib import admin
from django.db import transaction
from django.utils.html import format_html

from .forms import TicketAddForm, TicketChangeForm
from .models import Board, Event, PhaseHistory, Ticket


class ReadOnlyAdminMixin:
    """History and events are append-only: written by services, never by hand."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Board)
class BoardAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "workflow", "created_at")
    list_select_related = ("workflow",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    filter_horizontal = ("members",)

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
class TicketAdmin(admin.ModelAdmin):
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

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if request.method == "POST":
            # A submitted form shown again was not saved: undo whatever a service
            # wrote while validating it (say the inline formsets were invalid).
            transaction.set_rollback(True)
        return super().render_change_form(request, context, add, change, form_url, obj)

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
