"""Onboarding pages: the requests board, my requests, the approver's queue and the ticket.

One view per action. Services decide who may do what (PermissionDenied is a 403) and
raise ApplicationError for a broken rule, which the ticket shows beside the field or
button it concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from onboarding import presentation, selectors, services
from onboarding.forms import RequestForm, SampleUploadForm
from onboarding.models import (
    ApprovalRole,
    DataFormat,
    OnboardingRequest,
    RequestStatus,
    Sample,
    Sensitivity,
)
from onboarding.plan_display import render_plan
from onboarding.volume import FLAG_FACTOR
from portal.errors import ApplicationError
from portal.htmx import render_page, render_polled
from portal.models import Environment
from portal.roles import Role, has_role, role_required

ANY_ROLE = tuple(Role)
AWAITING_POLL_SECONDS = 10.0
EDITORS = (Role.REQUESTER, Role.ENGINEER)
APPROVERS = (Role.SECURITY_APPROVER, Role.GOVERNANCE_APPROVER)
COMPARERS = (Role.ENGINEER, *APPROVERS)
TICKET = "onboarding/request_detail.html"


def get_request(number: int) -> OnboardingRequest:
    return get_object_or_404(
        OnboardingRequest.objects.select_related("requested_by"), number=number
    )


def ticket_url(obj: OnboardingRequest, anchor: str = "") -> str:
    return reverse("onboarding:request-detail", args=[obj.number]) + anchor


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
        "open_reports": presentation.open_reports(validation),
        "blockers": services.submission_blockers(
            prerequisites=prerequisites, validation=validation
        ),
        "submit_label": presentation.submit_label(obj),
        "validate_run": run,
        "validating": run is not None and not run.is_terminal,
    }


def _diff_context(obj: OnboardingRequest) -> dict[str, Any]:
    run = selectors.latest_run(obj, services.PLAN_DIFF_KIND)
    steps = list(run.steps.order_by("position")) if run else []
    return {
        "diff_run": run,
        "diff_rows": presentation.diff_rows(steps),
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
        "rollout_rows": presentation.rollout_rows(rollout),
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


def handoff_context(request: HttpRequest, obj: OnboardingRequest) -> dict[str, Any]:
    """The handoff checklist and 30-day review, once the request is approved."""
    handoff = services.handoff_panel(obj)
    return {
        "obj": obj,
        "handoff": handoff,
        "handoff_items": presentation.handoff_items(handoff),
        "volume_factor": presentation.factor_label(FLAG_FACTOR),
        "volume_failed": presentation.volume_failed(handoff),
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
        "timeline": presentation.timeline_rows(selectors.request_timeline(obj)),
        "upload_form": SampleUploadForm(),
        "decision_comment": "",
        "errors": {},
        **_permissions(request, obj),
        **_rollout_context(request, obj),
        **handoff_context(request, obj),
        **_validation_context(obj),
        **_diff_context(obj),
    }
    context.update(extra)
    return context


def act(
    request: HttpRequest,
    obj: OnboardingRequest,
    action: Callable[..., Any],
    /,
    *,
    error_key: str,
    success: str,
    anchor: str = "",
    then: str = "",
    errors: Mapping[str, str] | None = None,
    keep: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> HttpResponse:
    """Call a service; on a broken rule show the ticket again with the error under
    `error_key`, beside the control it concerns, otherwise say `success` and go back to the
    ticket at `anchor` (or to `then`).

    `kwargs` go to the service, whose `request` is the onboarding request. On an error,
    `errors` adds entries saying which control it concerns (a role, an item) and `keep`
    goes to the ticket's context: what was typed, so that it is not lost."""
    try:
        action(actor=request.user, **kwargs)
    except ApplicationError as exc:
        obj.refresh_from_db()
        shown = {error_key: exc.message, **(errors or {})}
        return render(request, TICKET, ticket_context(request, obj, errors=shown, **(keep or {})))
    messages.success(request, success)
    return redirect(then or ticket_url(obj, anchor))


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
    return render_page(request, "onboarding/request_list.html", context, fragment="board")


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


def _save_spec(
    request: HttpRequest,
    form: RequestForm,
    save: Callable[[dict[str, Any]], OnboardingRequest],
    success: str,
) -> HttpResponse | None:
    """Save a valid posted spec with `save` and go to the ticket; None (show the form again)
    on a GET, an invalid form, or a broken rule, which goes beside its field."""
    if request.method != "POST" or not form.is_valid():
        return None
    try:
        obj = save(form.spec_data())
    except ApplicationError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return None
    messages.success(request, success.format(key=obj.key))
    return redirect("onboarding:request-detail", number=obj.number)


def _render_form(
    request: HttpRequest, form: RequestForm, obj: OnboardingRequest | None
) -> HttpResponse:
    context = {
        "form": form,
        "obj": obj,
        "voids_approvals": presentation.edit_voids_approvals(obj),
    }
    return render(request, "onboarding/request_form.html", context)


@login_required
@require_http_methods(["GET", "POST"])
@role_required(Role.REQUESTER)
def request_create(request: HttpRequest) -> HttpResponse:
    form = RequestForm(request.POST or None)
    saved = _save_spec(
        request,
        form,
        lambda data: services.request_create(actor=request.user, data=data),
        "{key} saved as a draft.",
    )
    return saved if saved is not None else _render_form(request, form, None)


@login_required
@require_GET
@role_required(*ANY_ROLE)
def request_detail(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    return render(request, TICKET, ticket_context(request, obj))


@login_required
@require_http_methods(["GET", "POST"])
@role_required(*EDITORS)
def request_edit(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    if not selectors.may_edit(request.user, obj):
        raise PermissionDenied("Only the requester or an engineer can change this request.")
    form = RequestForm(request.POST or None, instance=obj)
    saved = _save_spec(
        request,
        form,
        lambda data: services.request_update(request=obj, actor=request.user, data=data),
        "{key} saved.",
    )
    if saved is not None:
        return saved
    obj.refresh_from_db()  # the form's validation may have changed it in memory
    return _render_form(request, form, obj)


@login_required
@require_POST
@role_required(*EDITORS)
def schema_infer(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    return act(
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
    return act(
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
            return redirect(ticket_url(obj, "#samples"))
    return render(request, TICKET, ticket_context(request, obj, upload_form=form))


@login_required
@require_POST
@role_required(*EDITORS)
def sample_delete(request: HttpRequest, number: int, sample_id: int) -> HttpResponse:
    obj = get_request(number)
    sample = _get_sample(obj, sample_id)
    return act(
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
    return act(
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
    return act(
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
    return render_polled(request, f"{TICKET}#validation", context, done=not context["validating"])


# --- Plan ---------------------------------------------------------------------------------------


@login_required
@require_POST
@role_required(*COMPARERS)
def plan_compare(request: HttpRequest, number: int) -> HttpResponse:
    obj = get_request(number)
    environment = request.POST.get("environment", "")
    return act(
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
    return render_polled(request, f"{TICKET}#plan-diff", context, done=not context["diffing"])


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
    response = act(
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
    """Reject or request changes: the same form, one comment, told apart by `text_arg`."""
    obj = get_request(number)
    role = _role(request)
    comment = request.POST.get("comment", "")
    return act(
        request,
        obj,
        action,
        request=obj,
        role=role,
        **{text_arg: comment},
        error_key="decide",
        errors={"decide_role": role.value},
        keep={"decision_comment": comment},
        success="Decision recorded; the requester is notified.",
        anchor="#approvals",
    )


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
        return render(request, TICKET, context)
    return redirect("runs:detail", run_id=run.pk)


@login_required
@require_GET
@role_required(*ANY_ROLE)
def rollout_panel(request: HttpRequest, number: int) -> HttpResponse:
    """The environments panel, polled while one of its runs is going."""
    obj = get_request(number)
    context = {"obj": obj, "errors": {}, **_rollout_context(request, obj)}
    return render_polled(request, f"{TICKET}#rollout", context, done=not context["rollout_busy"])


@login_required
@require_GET
def drift_summary(request: HttpRequest) -> HttpResponse:
    """The home dashboard's drift card: live sources that differ from their approved plan."""
    return render(
        request, "onboarding/drift_summary.html", {"drifted": services.drifted_requests()}
    )
