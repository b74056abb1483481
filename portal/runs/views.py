from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_GET, require_POST

from portal.errors import ApplicationError
from portal.htmx import is_htmx, render_polled
from portal.runs import services
from portal.runs.models import Run
from portal.runs.selectors import run_percent, run_permissions, run_steps


def _render_run(request: HttpRequest, run: Run, *, error: str = "") -> HttpResponse:
    steps = run_steps(run, request.user)
    context = {
        "run": run,
        "steps": steps,
        "percent": run_percent(run, steps),
        "can": run_permissions(run, request.user),
        "action_error": error,
    }
    return render_polled(
        request, "runs/run_detail.html", context, done=run.is_terminal, fragment="progress"
    )


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(Run.objects.select_related("created_by"), pk=run_id)
    return _render_run(request, run)


def _act(request: HttpRequest, run_id: int, action: object, **kwargs: object) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    error = ""
    try:
        action(run=run, actor=request.user, **kwargs)  # type: ignore[operator]
    except ApplicationError as exc:
        error = exc.message
    run.refresh_from_db()
    if is_htmx(request):
        return _render_run(request, run, error=error)
    if error:
        messages.error(request, error)
    return redirect("runs:detail", run_id=run.pk)


@login_required
@require_POST
def step_retry(request: HttpRequest, run_id: int, step_id: int) -> HttpResponse:
    return _act(request, run_id, services.run_retry_step, step_id=step_id)


@login_required
@require_POST
def step_skip(request: HttpRequest, run_id: int, step_id: int) -> HttpResponse:
    reason = request.POST.get("reason", "")
    return _act(request, run_id, services.run_skip_step, step_id=step_id, reason=reason)


@login_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    return _act(request, run_id, services.run_cancel)


@login_required
@require_POST
def step_decide(request: HttpRequest, run_id: int, step_id: int) -> HttpResponse:
    choice, reason = request.POST.get("choice", ""), request.POST.get("reason", "")
    return _act(request, run_id, services.run_decide, step_id=step_id, choice=choice, reason=reason)
