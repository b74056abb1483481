"""The handoff checklist and the 30-day review on the ticket (SOP-001 steps 8-10).

One view per action, engineers only; the services check the role again and the rules
(prod live, not done twice), and a broken rule is shown beside the item it concerns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from onboarding import services, views
from onboarding.models import HandoffItem, OnboardingRequest
from onboarding.services.handoff import consumers_notice_for
from portal.errors import ApplicationError
from portal.roles import Role, has_role, role_required


def _ticket(obj: OnboardingRequest, anchor: str = "#handoff") -> str:
    return reverse("onboarding:request-detail", args=[obj.number]) + anchor


def _act(
    request: HttpRequest,
    number: int,
    action: Callable[..., Any],
    *,
    inputs: tuple[str, ...],
    error_key: str,
    success: str,
    anchor: str = "#handoff",
) -> HttpResponse:
    """Call a handoff service with the posted `inputs`; on a broken rule show the ticket
    again with the error beside the item and what was typed kept."""
    obj = views.get_request(number)
    values = {name: request.POST.get(name, "") for name in inputs}
    try:
        action(request=obj, actor=request.user, **values)
    except ApplicationError as exc:
        obj.refresh_from_db()
        errors = {error_key: exc.message, f"{error_key}_item": values.get("item", "")}
        context = views.ticket_context(request, obj, errors=errors, handoff_input=values)
        return render(request, "onboarding/request_detail.html", context)
    messages.success(request, success)
    return redirect(_ticket(obj, anchor))


@login_required
@require_POST
@role_required(Role.ENGINEER)
def handoff_oncall(request: HttpRequest, number: int) -> HttpResponse:
    return _act(
        request,
        number,
        services.handoff_brief_oncall,
        inputs=("note",),
        error_key="handoff_oncall",
        success="Recorded: on-call engineers briefed.",
    )


@login_required
@require_POST
@role_required(Role.ENGINEER)
def handoff_runbook(request: HttpRequest, number: int) -> HttpResponse:
    return _act(
        request,
        number,
        services.handoff_record_runbook,
        inputs=("url",),
        error_key="handoff_runbook",
        success="Recorded: runbook entry written.",
    )


@login_required
@require_POST
@role_required(Role.ENGINEER)
def handoff_review(request: HttpRequest, number: int) -> HttpResponse:
    return _act(
        request,
        number,
        services.handoff_record_review,
        inputs=("note",),
        error_key="handoff_review",
        success="Recorded: 30-day review held.",
        anchor="#review",
    )


@login_required
@require_POST
@role_required(Role.ENGINEER)
def handoff_undo(request: HttpRequest, number: int) -> HttpResponse:
    return _act(
        request,
        number,
        services.handoff_undo,
        inputs=("item", "reason"),
        error_key="handoff_undo",
        success="Undone; the earlier mark is kept in the history.",
    )


@login_required
@require_http_methods(["GET", "POST"])
@role_required(Role.ENGINEER)
def handoff_notify(request: HttpRequest, number: int) -> HttpResponse:
    """The notice to downstream consumers: prefilled, editable, sent by e-mail (and Slack)."""
    obj = views.get_request(number)
    errors: dict[str, str] = {}
    try:
        notice = consumers_notice_for(obj)
    except ApplicationError as exc:
        notice, errors["form"] = None, exc.message
    values = {
        "recipients": "\n".join(notice.recipients) if notice else "",
        "message": notice.message if notice else "",
    }
    if request.method == "POST":
        values = {name: request.POST.get(name, "") for name in values}
        try:
            services.handoff_notify_consumers(request=obj, actor=request.user, **values)
        except ApplicationError as exc:
            errors[exc.field or "form"] = exc.message
        else:
            messages.success(request, "Sent to the downstream consumers; the item is done.")
            return redirect(_ticket(obj))
    state = services.handoff_state(obj)
    context = {"obj": obj, "notice": notice, "values": values, "errors": errors}
    context["item"] = state.item(HandoffItem.CONSUMERS_NOTIFIED)
    context["slack"] = bool(settings.SLACK_WEBHOOK_URL)
    return render(request, "onboarding/handoff_notify.html", context)


@login_required
@require_POST
@role_required(Role.ENGINEER)
def volume_measure(request: HttpRequest, number: int) -> HttpResponse:
    return _act(
        request,
        number,
        services.volume_review_start,
        inputs=(),
        error_key="volume",
        success="Measuring prod's volume; the figures appear below when the run finishes.",
        anchor="#review",
    )


@login_required
@require_GET
@role_required(*views.ANY_ROLE)
def volume_result(request: HttpRequest, number: int) -> HttpResponse:
    """The review's figures, polled while a measurement runs."""
    obj = views.get_request(number)
    context = {
        "obj": obj,
        "handoff": services.handoff_panel(obj),
        "can_handoff": has_role(request.user, Role.ENGINEER),
    }
    response = render(request, "onboarding/handoff_panel.html#volume", context)
    if not (context["handoff"] and context["handoff"].measuring):
        response.status_code = HTMX_STOP_POLLING
    return response
