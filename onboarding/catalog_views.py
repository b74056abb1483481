"""The catalog of live sources and its DATA_CATALOG.md export: every signed-in user may
read them."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from onboarding.catalog import catalog_entries, catalog_markdown

EXPORT_NAME = "DATA_CATALOG.md"


@login_required
@require_GET
def catalog_list(request: HttpRequest) -> HttpResponse:
    """One row per source live in at least one environment; the search box swaps the rows."""
    catalog = catalog_entries(q=request.GET.get("q", ""))
    template = "onboarding/catalog.html"
    return render(
        request, f"{template}#results" if request.htmx else template, {"catalog": catalog}
    )


@login_required
@require_GET
def catalog_export(request: HttpRequest) -> HttpResponse:
    """The whole catalog as DATA_CATALOG.md (SOP-001 step 8), one section per source."""
    body = catalog_markdown(catalog_entries().entries, generated_at=timezone.now())
    response = HttpResponse(body, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{EXPORT_NAME}"'
    return response
