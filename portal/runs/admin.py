"""Django admin for runs: read-only. Runs change only through the engine and its services."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from portal.admin import ReadOnlyAdmin
from portal.runs.models import Confirmation, Run, Step


class StepInline(admin.TabularInline):
    model = Step
    fields = [
        "position",
        "key",
        "title",
        "status",
        "attempts",
        "started_at",
        "finished_at",
        "wait_reason",
        "skip_reason",
        "error",
    ]
    readonly_fields = fields
    ordering = ["position"]
    extra = 0
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "title", "kind", "status", "created_by", "created_at", "finished_at"]
    list_display_links = ["id", "title"]
    list_filter = ["status", "kind", "cancel_requested", "created_at"]
    list_select_related = ["created_by"]
    search_fields = ["=id", "title", "kind", "subject_id", "created_by__username"]
    date_hierarchy = "created_at"
    inlines = [StepInline]


@admin.register(Step)
class StepAdmin(ReadOnlyAdmin):
    list_display = ["run", "position", "key", "title", "status", "attempts", "finished_at"]
    list_filter = ["status", "key"]
    list_select_related = ["run"]
    search_fields = ["key", "title", "=run__id"]
    date_hierarchy = "started_at"
    ordering = ["-run_id", "position"]


@admin.register(Confirmation)
class ConfirmationAdmin(ReadOnlyAdmin):
    list_display = ["step", "confirmed_by", "created_at"]
    list_select_related = ["step", "confirmed_by"]
    search_fields = ["confirmed_by__username", "=step__run__id"]
    date_hierarchy = "created_at"
