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
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from onboarding import services, views
from onboarding.models import HandoffItem
from onboarding.services.handoff import consumers_notice_for
from portal.errors import ApplicationError
from portal.htmx import render_polled
from portal.roles import Role, role_required


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
    return views.act(
        request,
        obj,
        action,
        request=obj,
        **values,
        error_key=error_key,
        errors={f"{error_key}_item": values.get("item", "")},
        keep={"handoff_input": values},
        success=success,
        anchor=anchor,
    )


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
            return redirect(views.ticket_url(obj, "#handoff"))
    context: dict[str, Any] = {"obj": obj, "notice": notice, "values": values, "errors": errors}
    context["item"] = services.handoff_state(obj).item(HandoffItem.CONSUMERS_NOTIFIED)
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
    context = views.handoff_context(request, views.get_request(number))
    measuring = context["handoff"] is not None and context["handoff"].measuring
    return render_polled(
        request, "onboarding/handoff_panel.html#volume", context, done=not measuring
    )
