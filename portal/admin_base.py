"""What every app's Django admin builds on (kept apart from the portal's own admin so that
the engine's admin can use it without importing a module above it)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest


class ReadOnly:
    """View and search only: no add, change or delete, so no delete action either. For
    model admins (ReadOnlyAdmin) and inlines alike."""

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin):
    """A model admin that only shows."""
