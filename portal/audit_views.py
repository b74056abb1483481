"""Audit pages: filterable list and CSV export (admins only)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any, NamedTuple

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from portal.audit import audit_event_filter, audit_record
from portal.forms import AuditFilterForm
from portal.models import AuditEvent
from portal.roles import Role, role_required

PAGE_SIZE = 50
SUMMARY_CHARS = 160
CSV_HEADER = [
    "seq",
    "created_at",
    "actor",
    "action",
    "object_type",
    "object_id",
    "object_label",
    "data",
    "prev_hash",
    "hash",
]


class AuditRow(NamedTuple):
    event: AuditEvent
    object_url: str
    summary: str


@login_required
@role_required(Role.ADMIN)
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    valid = form.is_valid()
    events = audit_event_filter(**form.filters()) if valid else AuditEvent.objects.none()
    page = Paginator(events, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "rows": [AuditRow(e, _object_url(e), _summary(e.data)) for e in page],
        "filtered": any(request.GET.get(name) for name in form.fields),
    }
    return render(request, "portal/audit_list.html", context)


@login_required
@role_required(Role.ADMIN)
@require_POST
def audit_export_csv(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """Stream the filtered events as CSV. The export itself is recorded as one event."""
    form = AuditFilterForm(request.POST)
    if not form.is_valid():
        query = request.POST.copy()
        query.pop("csrfmiddlewaretoken", None)
        return redirect(f"{reverse('audit:list')}?{query.urlencode()}")
    filters = form.filters()
    exported = audit_record(action="audit.exported", actor=request.user, data={"filters": filters})
    # Everything up to the request: events appended while the file streams are left out.
    events = audit_event_filter(**filters).filter(seq__lt=exported.seq)
    response = StreamingHttpResponse(_csv_lines(events), content_type="text/csv; charset=utf-8")
    filename = f"audit-{timezone.now():%Y%m%d-%H%M%S}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _object_url(event: AuditEvent) -> str:
    if event.object_type == "runs.run" and event.object_id.isdigit():
        return reverse("runs:detail", args=[int(event.object_id)])
    return ""


def _summary(data: Any) -> str:
    """`key=value, ...` for a dict, compact JSON otherwise, cut to SUMMARY_CHARS."""
    if isinstance(data, dict):
        text = ", ".join(f"{key}={_compact(value)}" for key, value in data.items())
    else:
        text = _compact(data)
    return text if len(text) <= SUMMARY_CHARS else f"{text[: SUMMARY_CHARS - 1]}…"


def _compact(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class _Echo:
    """A file-like object whose write returns the line, for csv.writer in a generator."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(events: QuerySet[AuditEvent]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_HEADER)
    for event in events.iterator(chunk_size=2000):
        yield writer.writerow(
            [
                event.seq,
                event.created_at.isoformat(),
                _cell(event.actor_label),
                _cell(event.action),
                _cell(event.object_type),
                _cell(event.object_id),
                _cell(event.object_label),
                json.dumps(event.data, sort_keys=True, separators=(",", ":"), default=str),
                event.prev_hash,
                event.hash,
            ]
        )


def _cell(text: str) -> str:
    """Defuse spreadsheet formulas (CSV injection): text a person typed may start with =."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
