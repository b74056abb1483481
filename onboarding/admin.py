"""Onboarding in the Django admin: read-only. Every change goes through services.py, which
keeps revisions, voids approvals and writes the audit trail; the admin would bypass them."""

from __future__ import annotations

from django.contrib import admin

from onboarding.models import (
    Approval,
    HandoffMark,
    OnboardingRequest,
    RequestRevision,
    ReviewReminder,
    Sample,
)
from portal.admin import ReadOnlyAdmin


class SampleInline(admin.TabularInline):
    model = Sample
    fields = ["original_name", "size", "sha256", "detected_format", "expected_malformed"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(OnboardingRequest)
class OnboardingRequestAdmin(ReadOnlyAdmin):
    list_display = ["number", "source_name", "status", "owner_team", "requested_by", "revision"]
    list_filter = ["status", "data_format", "latency_sla"]
    search_fields = ["source_name", "owner_team", "=number"]
    inlines = [SampleInline]


@admin.register(Sample)
class SampleAdmin(ReadOnlyAdmin):
    list_display = ["original_name", "request", "size", "detected_format", "expected_malformed"]
    search_fields = ["original_name", "sha256"]
    list_select_related = ["request"]


@admin.register(RequestRevision)
class RequestRevisionAdmin(ReadOnlyAdmin):
    list_display = ["request", "number", "edited_by", "created_at", "digest"]
    list_select_related = ["request", "edited_by"]


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    list_display = [
        "request",
        "role",
        "decision",
        "decided_by",
        "revision",
        "created_at",
        "voided_at",
    ]
    list_filter = ["role", "decision"]
    list_select_related = ["request", "decided_by"]


@admin.register(HandoffMark)
class HandoffMarkAdmin(ReadOnlyAdmin):
    list_display = ["request", "item", "done_by", "done_at", "undone_by", "undone_at"]
    list_filter = ["item"]
    list_select_related = ["request", "done_by", "undone_by"]


@admin.register(ReviewReminder)
class ReviewReminderAdmin(ReadOnlyAdmin):
    list_display = ["request", "due_at", "sent_at"]
    list_select_related = ["request"]
