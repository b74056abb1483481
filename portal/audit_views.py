"""Audit pages: filterable list and CSV export (admins only)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from portal.roles import Role, role_required


@login_required
@role_required(Role.ADMIN)
def audit_list(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError


@login_required
@role_required(Role.ADMIN)
def audit_export_csv(request: HttpRequest) -> HttpResponse:
    raise NotImplementedError
