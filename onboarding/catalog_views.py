"""The catalog of live sources and its DATA_CATALOG.md export: every signed-in user may
read them."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from onboarding import presentation
from onboarding.catalog import catalog_markdown
from onboarding.selectors import catalog_entries
from portal.htmx import render_page

EXPORT_NAME = "DATA_CATALOG.md"


@login_required
@require_GET
def catalog_list(request: HttpRequest) -> HttpResponse:
    """One row per source live in at least one environment; the search box swaps the rows."""
    catalog = catalog_entries(q=request.GET.get("q", ""))
    context = {
        "catalog": catalog,
        "rows": [(e, presentation.state_badges(e.environments)) for e in catalog.entries],
    }
    return render_page(request, "onboarding/catalog.html", context, fragment="results")


@login_required
@require_GET
def catalog_export(request: HttpRequest) -> HttpResponse:
    """The whole catalog as DATA_CATALOG.md (SOP-001 step 8), one section per source."""
    body = catalog_markdown(catalog_entries().entries, generated_at=timezone.now())
    response = HttpResponse(body, content_type="text/markdown; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{EXPORT_NAME}"'
    return response
