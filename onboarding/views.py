"""Onboarding pages: the requests board, my requests, the approver's queue and the ticket.

One view per action. Services decide who may do what (PermissionDenied is a 403) and
raise ApplicationError for a broken rule, which the ticket shows beside the field or
button it concerns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HTMX_STOP_POLLING

from onboarding import selectors, services
from onboarding.forms import RequestForm, SampleUploadForm
from onboarding.models import (
    ApprovalRole,
    DataFormat,
    OnboardingRequest,
    RequestStatus,
    Sample,
    Sensitivity,
)
from onboarding.plan import render_plan
from portal.errors import ApplicationError
from portal.models import Environment
from portal.roles import Role, has_role, role_required

ANY_ROLE = tuple(Role)
AWAITING_POLL_SECONDS = 10.0
EDITORS = (Role.REQUESTER, Role.ENGINEER)
APPROVERS = (Role.SECURITY_APPROVER, Role.GOVERNANCE_APPROVER)
COMPARERS = (Role.ENGINEER, *APPROVERS)


def get_request(number: int) -> OnboardingRequest:
    return get_object_or_404(
        OnboardingRequest.objects.select_related("requested_by"), number=number
    )


def _get_sample(obj: OnboardingRequest, sample_id: int) -> Sample:
    return get_object_or_404(Sample.objects.select_related("request"), pk=sample_id, request=obj)


def _validation_context(obj: OnboardingRequest) -> dict[str, Any]:
    samples = list(obj.samples.select_related("uploaded_by").order_by("original_name", "pk"))
    prerequisites = services.request_prerequisites(
        spec=services.spec_snapshot(obj), sample_count=len(samples)
    )
    validation = services.validation_state(
        samples=samples, schema_text=obj.schema_text, data_format=obj.data_format
    )
    run = selectors.latest_run(obj, services.VALIDATE_KIND)
    return {
        "samples": samples,
        "prerequisites": prerequisites,
        "validation": validation,
        "blockers": services.submission_blockers(
            prerequisites=prerequisites, validation=validation
        ),
        "validate_run": run,
        "validating": run is not None and not run.is_terminal,
    }


def _diff_context(obj: OnboardingRequest) -> dict[str, Any]:
    run = selectors.latest_run(obj, services.PLAN_DIFF_KIND)
    steps = list(run.steps.order_by("position")) if run else []
    return {
        "diff_run": run,
        "diff_steps": steps,
        "diffing": run is not None and not run.is_terminal,
    }


def _permissions(request: HttpRequest, obj: OnboardingRequest) -> dict[str, Any]:
    live = selectors.request_live_approvals(obj)
    can = selectors.request_permissions(
        user=request.user,
        request=obj,
        editor_ids=selectors.request_editor_ids(obj),
        live_approvals=live,
    )
    return {"can": can, "live_by_role": {a.role: a for a in live}}


def _rollout_context(request: HttpRequest, obj: OnboardingRequest) -> dict[str, Any]:
    rollout = services.rollout_states(obj)
    going = [r for r in rollout if r.last_run and not r.last_run.is_terminal]
    return {
        "rollout": rollout,
        "can_rollout": has_role(request.user, Role.ENGINEER),
        # While a run is going, the panel follows it without a reload; a run that waits for
        # a second engineer may wait for hours, so then it looks less often.
        "rollout_busy": bool(going),
        "rollout_poll_seconds": (
            settings.RUNS_POLL_SECONDS
            if any(not r.awaiting for r in going)
            else AWAITING_POLL_SECONDS
        ),
    }


def _handoff_context(request: HttpRequest, obj: OnboardingRequest) -> dict[str, Any]:
    """The handoff checklist and 30-day review, once the request is approved."""
    return {
        "handoff": services.handoff_panel(obj),
        "can_handoff": has_role(request.user, Role.ENGINEER),
        "handoff_input": {},
    }


def ticket_context(request: HttpRequest, obj: OnboardingRequest, **extra: Any) -> dict[str, Any]:
    spec = services.spec_snapshot(obj)
    plans = services.environment_plans(spec=spec, environments=Environment.objects.all())
    decisions = obj.approvals.exclude(decision="approved").select_related("decided_by")
    context = {
        "obj": obj,
        "approval_roles": ApprovalRole.choices,
        "decisions": decisions,
        "revision": obj.revisions.filter(number=obj.revision).first(),
        "plans": [(p, render_plan(p.plan) if p.plan else None) for p in plans],
        "timeline": selectors.request_timeline(obj),
        "upload_form": SampleUploadForm(),
        "decision_comment": "",
        "errors": {},
        **_permissions(request, obj),
        **_rollout_context(request, obj),
        **_handoff_context(request, obj),
        **_validation_context(obj),
        **_diff_context(obj),
    }
    context.update(extra)
    return context


def _act(
    request: HttpRequest,
    obj: OnboardingRequest,
    action: Callable[..., Any],
    /,
    *,
    error_key: str,
    success: str,
    anchor: str = "",
    then: str = "",
    **kwargs: Any,
) -> HttpResponse:
    """Call a service; on a broken rule show the ticket again with the error beside the
    control it concerns, otherwise go back to the ticket. (`kwargs` go to the service,
    whose `request` is the onboarding request.)"""
    try:
        action(actor=request.user, **kwargs)
    except ApplicationError as exc:
        obj.refresh_from_db()
        errors = {error_key: exc.message}
        return render(
            request, "onboarding/request_detail.html", ticket_context(request, obj, errors=errors)
        )
    messages.success(request, success)
    return redirect(then or reverse("onboarding:request-detail", args=[obj.number]) + anchor)


# --- Lists ---------------------------------------------------------------------------------------


@login_required
@require_GET
@role_required(*ANY_ROLE)
def request_list(request: HttpRequest) -> HttpResponse:
    filters = {
        name: request.GET.get(name, "")
        for name in ("status", "data_format", "sensitivity", "owner_team", "q")
    }
    requests = list(selectors.request_list(**filters))
    context = {
        "filters": filters,
        "columns": selectors.request_board(requests),
        "count": len(requests),
        "statuses": RequestStatus.choices,
        "formats": DataFormat.choices,
        "sensitivities": Sensitivity.choices,
        "teams": selectors.owner_team_choices(),
        "filtered": any(filters.values()),
    }
    template = "onboarding/request_list.html"
    return render(request, f"{template}#board" if request.htmx else template, context)


@login_required
@require_GET
@role_required(Role.REQUESTER)
def request_mine(request: HttpRequest) -> HttpResponse:
    requests = selectors.request_list_for_user(request.user)
    return render(request, "onboarding/request_mine.html", {"requests": requests})


@login_required
@require_GET
@role_required(*APPROVERS)
def request_queue(request: HttpRequest) -> HttpResponse:
    items = selectors.request_queue_for_user(request.user)
    return render(request, "onboarding/request_queue.html", {"items": items})


# --- The request ---------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
@role_required(Role.REQUESTER)
def request_create(request: HttpRequest) -> HttpResponse:
    form = RequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            obj = services.request_create(actor=request.user, data=form.spec_data())
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"{obj.key} saved as a draft.")
            return redirect("onboarding:request-detail", number=obj.number)
    return render(request, "onboarding/request_form.html", {"form": form, "obj": None})


@login_required
@require_GET
@role_required(*ANY_ROLE)
def request_detail(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    return render(request, "onboarding/request_detail.html", ticket_context(request, obj))


@login_required
@require_http_methods(["GET", "POST"])
@role_required(*EDITORS)
def request_edit(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    if not selectors.may_edit(request.user, obj):
        raise PermissionDenied("Only the requester or an engineer can change this request.")
    form = RequestForm(request.POST or None, instance=obj)
    if request.method == "POST" and form.is_valid():
        try:
            services.request_update(request=obj, actor=request.user, data=form.spec_data())
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"{obj.key} saved.")
            return redirect("onboarding:request-detail", number=obj.number)
    obj.refresh_from_db()
    return render(request, "onboarding/request_form.html", {"form": form, "obj": obj})


@login_required
@require_POST
@role_required(*EDITORS)
def schema_infer(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    return _act(
        request,
        obj,
        services.request_infer_schema,
        request=obj,
        error_key="schema",
        success="Schema inferred from the samples. Review and edit it below.",
        then=reverse("onboarding:request-edit", args=[obj.number]) + "#id_schema_text",
    )


@login_required
@require_POST
@role_required(Role.REQUESTER)
def request_submit(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    return _act(
        request,
        obj,
        services.request_submit,
        request=obj,
        error_key="submit",
        success=f"{obj.key} submitted for approval.",
    )


# --- Samples and validation ----------------------------------------------------------------------


@login_required
@require_POST
@role_required(*EDITORS)
def sample_upload(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    form = SampleUploadForm(request.POST, request.FILES)
    if form.is_valid():
        try:
            samples = services.sample_upload(
                request=obj, actor=request.user, files=form.cleaned_data["files"]
            )
        except services.UploadRefused as exc:
            form.add_error(
                "files", [*exc.problems, "Nothing was uploaded; fix these and try again."]
            )
        except ApplicationError as exc:
            form.add_error("files", exc.message)
        else:
            messages.success(request, f"{len(samples)} sample file(s) uploaded.")
            return redirect(reverse("onboarding:request-detail", args=[obj.number]) + "#samples")
    context = ticket_context(request, obj, upload_form=form)
    return render(request, "onboarding/request_detail.html", context)


@login_required
@require_POST
@role_required(*EDITORS)
def sample_delete(request: HttpRequest, number: int, sample_id: int) -> HttpResponse:
    obj = get_request(number)
    sample = _get_sample(obj, sample_id)
    return _act(
        request,
        obj,
        services.sample_delete,
        sample=sample,
        error_key="samples",
        success=f"Removed {sample.original_name}.",
        anchor="#samples",
    )


@login_required
@require_POST
@role_required(*EDITORS)
def sample_mark(request: HttpRequest, number: int, sample_id: int) -> HttpResponse:
    obj = get_request(number)
    sample = _get_sample(obj, sample_id)
    malformed = request.POST.get("expected_malformed") == "1"
    return _act(
        request,
        obj,
        services.sample_mark,
        sample=sample,
        expected_malformed=malformed,
        error_key="samples",
        success=f"Updated {sample.original_name}.",
        anchor="#samples",
    )


@login_required
@require_POST
@role_required(*EDITORS)
def request_validate(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    return _act(
        request,
        obj,
        services.request_validate,
        request=obj,
        error_key="validate",
        success="Validation started.",
        anchor="#samples",
    )


@login_required
@require_GET
@role_required(*ANY_ROLE)
def request_validation(request: HttpRequest, number: int) -> HttpResponse:
    """The samples and reports fragment, polled while a validation runs; the readiness
    checklist rides along out of band."""
    obj = get_request(number)
    context = {"obj": obj, "errors": {}, "oob": True, **_permissions(request, obj)}
    context.update(_validation_context(obj))
    response = render(request, "onboarding/request_detail.html#validation", context)
    if not context["validating"]:
        response.status_code = HTMX_STOP_POLLING
    return response


# --- Plan ---------------------------------------------------------------------------------------


@login_required
@require_POST
@role_required(*COMPARERS)
def plan_compare(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    environment = request.POST.get("environment", "")
    return _act(
        request,
        obj,
        services.plan_compare_start,
        request=obj,
        environment=environment,
        error_key="compare",
        success="Comparing the plan with AWS.",
        anchor="#plan",
    )


@login_required
@require_GET
@role_required(*ANY_ROLE)
def plan_diff(request: HttpRequest, number: int) -> HttpResponse:
    """The comparison's result, polled while the run reads AWS."""
    obj = get_request(number)
    context = {"obj": obj, **_diff_context(obj)}
    response = render(request, "onboarding/request_detail.html#plan-diff", context)
    if not context["diffing"]:
        response.status_code = HTMX_STOP_POLLING
    return response


# --- Approvals ------------------------------------------------------------------------------------


def _role(request: HttpRequest) -> ApprovalRole:
    try:
        return ApprovalRole(request.POST.get("role", ""))
    except ValueError:
        raise Http404("No such approval role.") from None


@login_required
@require_POST
@role_required(*APPROVERS)
def approval_grant(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    role = _role(request)
    response = _act(
        request,
        obj,
        services.approval_grant,
        request=obj,
        role=role,
        error_key="approve",
        success=f"{role.label} approval recorded.",
        anchor="#approvals",
    )
    if request.POST.get("from") == "queue" and response.status_code == 302:
        return redirect("onboarding:request-queue")
    return response


def _decide(
    request: HttpRequest, number: int, action: Callable[..., Any], text_arg: str
) -> HttpResponse:
    obj = get_request(number)
    role = _role(request)
    comment = request.POST.get("comment", "")
    try:
        action(request=obj, actor=request.user, role=role, **{text_arg: comment})
    except ApplicationError as exc:
        obj.refresh_from_db()
        errors = {"decide": exc.message, "decide_role": role.value}
        context = ticket_context(request, obj, decision_comment=comment, errors=errors)
        return render(request, "onboarding/request_detail.html", context)
    messages.success(request, "Decision recorded; the requester is notified.")
    return redirect(reverse("onboarding:request-detail", args=[obj.number]) + "#approvals")


@login_required
@require_POST
@role_required(*APPROVERS)
def approval_reject(request: HttpRequest, number: int) -> HttpResponse:
    return _decide(request, number, services.approval_reject, "reason")


@login_required
@require_POST
@role_required(*APPROVERS)
def approval_request_changes(request: HttpRequest, number: int) -> HttpResponse:
    return _decide(request, number, services.approval_request_changes, "comments")


@login_required
@require_POST
@role_required(Role.ENGINEER)
def rollout_start(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    try:
        run = services.rollout_start(
            request=obj,
            actor=request.user,
            environment=request.POST.get("environment", ""),
            action=request.POST.get("action", ""),
        )
    except ApplicationError as exc:
        context = ticket_context(request, obj, errors={"rollout": exc.message})
        return render(request, "onboarding/request_detail.html", context)
    return redirect("runs:detail", run_id=run.pk)


@login_required
@require_GET
@role_required(*ANY_ROLE)
def rollout_panel(request: HttpRequest, number: int) -> HttpResponse:
    """The environments panel, polled while one of its runs is going."""
    obj = get_request(number)
    context = {"obj": obj, "errors": {}, **_rollout_context(request, obj)}
    response = render(request, "onboarding/request_detail.html#rollout", context)
    if not context["rollout_busy"]:
        response.status_code = HTMX_STOP_POLLING
    return response


@login_required
@require_GET
def drift_summary(request: HttpRequest) -> HttpResponse:
    """The home dashboard's drift card: live sources that differ from their approved plan."""
    return render(
        request, "onboarding/drift_summary.html", {"drifted": services.drifted_requests()}
    )
