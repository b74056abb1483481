"""Django admin for runs: read-only. Runs change only through the engine and its services."""

from __future__ import annotations

from django.contrib import admin

from portal.admin_base import ReadOnly, ReadOnlyAdmin
from portal.runs.models import Decision, Run, Step

_STEP_COLUMNS = (
    "position",
    "key",
    "title",
    "status",
    "attempts",
    "ticks",
    "started_at",
    "finished_at",
    "wait_reason",
    "skip_reason",
    "error",
)


class StepInline(ReadOnly, admin.TabularInline):
    model = Step
    fields = _STEP_COLUMNS
    readonly_fields = _STEP_COLUMNS
    ordering = ["position"]
    extra = 0
    show_change_link = True


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


@admin.register(Decision)
class DecisionAdmin(ReadOnlyAdmin):
    list_display = ["step", "choice", "chosen_by", "by_default", "created_at"]
    list_select_related = ["step", "chosen_by"]
    search_fields = ["chosen_by__username", "choice", "=step__run__id"]
    date_hierarchy = "created_at"
