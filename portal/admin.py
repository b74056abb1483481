"""Django admin for the portal's own models. The audit trail is read-only here too."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from portal.admin_base import ReadOnlyAdmin
from portal.audit import audit_record
from portal.models import AuditChainHead, AuditEvent, Environment


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "seq",
        "created_at",
        "actor_label",
        "action",
        "object_type",
        "object_id",
        "object_label",
    ]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["=seq", "actor_label", "action", "object_type", "=object_id", "object_label"]
    date_hierarchy = "created_at"
    ordering = ["-seq"]
    # Counting the whole trail on every changelist page gets slow as it grows.
    show_full_result_count = False


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyAdmin):
    list_display = ["id", "last_seq", "last_hash"]


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "order", "account_id", "region", "role_arn", "is_production"]
    list_display_links = ["name"]
    list_filter = ["is_production", "region"]
    search_fields = ["name", "account_id", "role_arn"]
    ordering = ["order", "name"]
    readonly_fields = ["updated_at"]

    def save_model(
        self, request: HttpRequest, obj: Environment, form: ModelForm, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        audit_record(
            action="environment.changed" if change else "environment.created",
            actor=request.user,
            obj=obj,
            data={"fields": {name: form.cleaned_data.get(name) for name in form.changed_data}},
        )

    def delete_model(self, request: HttpRequest, obj: Environment) -> None:
        audit_record(action="environment.deleted", actor=request.user, obj=obj)
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for environment in queryset:
            audit_record(action="environment.deleted", actor=request.user, obj=environment)
        super().delete_queryset(request, queryset)
