"""How views answer htmx: the whole page or just its fragment, and polling that stops.

A page and its fragments stay in one template (django-template-partials): an htmx request
gets ``"page.html#fragment"``, any other request the page. A fragment that follows a run
carries ``hx-trigger="every …"`` only while the run is unfinished, and the view answers 286
(``HTMX_STOP_POLLING``) at a terminal state, so a poll already on its way stops too. htmx
still swaps the body of a 286; it only cancels the polling of the element that asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django_htmx.http import HTMX_STOP_POLLING


def is_htmx(request: HttpRequest) -> bool:
    """Whether htmx sent the request (`HtmxMiddleware` sets ``request.htmx``)."""
    return bool(getattr(request, "htmx", False))


def page_or_fragment(request: HttpRequest, template_name: str, fragment: str) -> str:
    """``template_name#fragment`` for an htmx request, the whole ``template_name`` otherwise."""
    return f"{template_name}#{fragment}" if is_htmx(request) else template_name


def render_page(
    request: HttpRequest, template_name: str, context: Mapping[str, Any], *, fragment: str
) -> HttpResponse:
    """The page, or only its `fragment` when htmx asks (a filter or a search box swapping
    the results)."""
    return render(request, page_or_fragment(request, template_name, fragment), context)


def render_polled(
    request: HttpRequest,
    template_name: str,
    context: Mapping[str, Any],
    *,
    done: bool,
    fragment: str | None = None,
) -> HttpResponse:
    """A fragment htmx polls, answered with 286 once `done` (the run it follows has
    finished) so that htmx stops polling; 200 while it is not.

    Without `fragment`, `template_name` names the fragment itself (for example
    ``"onboarding/request_detail.html#rollout"``), served at a URL of its own. With
    `fragment`, `template_name` is the page: a plain request gets the whole page (always
    200: a page load is not a poll), an htmx request the fragment.
    """
    if fragment is not None:
        if not is_htmx(request):
            return render(request, template_name, context)
        template_name = f"{template_name}#{fragment}"
    response = render(request, template_name, context)
    if done:
        response.status_code = HTMX_STOP_POLLING
    return response
