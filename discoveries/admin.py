"""Admin for discoveries and ticket rescues: a read-only record; agents and the services write them, with events."""

import json
from datetime import UTC, datetime

from django.conf import settings
from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from board.admin import ReadOnlyAdminMixin

from .models import Discovery, TicketRescue


@admin.register(Discovery)
class DiscoveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "discovered_at",
        "discovery_type",
        "short_description",
        "resolution_status",
        "priority_boost",
        "source_task",
        "board",
        "spawned",
        "discovered_by",
    )
    list_display_links = ("id", "short_description")
    list_filter = ("discovery_type", "resolution_status", "priority_boost")
    list_select_related = ("source_task__ticket__board",)
    search_fields = ("description",)
    date_hierarchy = "discovered_at"
    fields = (
        "discovery_type",
        "description",
        "source_task_link",
        "spawned_tasks_list",
        "priority_boost",
        "discovered_by",
        "discovered_at",
        "resolution_status",
        "resolved_by",
        "resolved_at",
        "resolution_note",
        "metadata_pretty",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(spawned_count=Count("spawned_tasks"))

    @admin.display(description="Description")
    def short_description(self, obj):
        return obj.description if len(obj.description) <= 80 else obj.description[:79] + "…"

    @admin.display(description="Board", ordering="source_task__ticket__board__name")
    def board(self, obj):
        return obj.source_task.ticket.board

    @admin.display(description="Spawned tasks", ordering="spawned_count")
    def spawned(self, obj):
        return obj.spawned_count

    @admin.display(description="Source task")
    def source_task_link(self, obj):
        task = obj.source_task
        return format_html(
            '{} on <a href="{}">{}</a>', task, reverse("admin:board_ticket_change", args=[task.ticket_id]), task.ticket
        )

    @admin.display(description="Spawned tasks")
    def spawned_tasks_list(self, obj):
        tasks = obj.spawned_tasks.select_related("phase").order_by("pk")
        return format_html_join(", ", "{} ({}, {})", ((task, task.phase.key, task.status) for task in tasks)) or "—"

    @admin.display(description="Metadata")
    def metadata_pretty(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.metadata, indent=2, ensure_ascii=False))


def _admin_link(obj, name):
    if obj is None:
        return "—"
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{name}_change", args=[obj.pk]), obj)


@admin.register(TicketRescue)
class TicketRescueAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Written by the rescue step only: one row per ticket and window is the rule, so no row is made by hand."""

    list_display = ("id", "created_at", "ticket", "board", "window_start", "task_status", "discovery")
    list_display_links = ("id", "created_at")
    list_filter = ("task__status",)
    list_select_related = ("ticket__board", "task", "discovery")
    search_fields = ("ticket__title",)
    date_hierarchy = "created_at"
    fields = ("ticket_link", "window", "window_start", "created_at", "discovery_link", "task_link", "task_status")
    readonly_fields = fields

    @admin.display(description="Board", ordering="ticket__board__name")
    def board(self, obj):
        return obj.ticket.board

    @admin.display(description="Window starts")
    def window_start(self, obj):
        # The window's number counts OMOI_RESCUE_WINDOW lengths since the epoch.
        seconds = int(settings.OMOI_RESCUE_WINDOW.total_seconds())
        return datetime.fromtimestamp(obj.window * seconds, tz=UTC)

    @admin.display(description="Recovery task status", ordering="task__status")
    def task_status(self, obj):
        return obj.task.get_status_display() if obj.task_id else "—"

    @admin.display(description="Ticket")
    def ticket_link(self, obj):
        return _admin_link(obj.ticket, "board_ticket")

    @admin.display(description="Discovery")
    def discovery_link(self, obj):
        return _admin_link(obj.discovery, "discoveries_discovery")

    @admin.display(description="Recovery task")
    def task_link(self, obj):
        return _admin_link(obj.task, "board_task")
