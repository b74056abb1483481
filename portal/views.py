from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from portal.errors import ApplicationError
from portal.htmx import render_polled
from portal.kinds import environment_check
from portal.models import Environment
from portal.roles import Role, has_role, role_required
from portal.runs.api import (
    ACTIVE_RUN_STATUSES,
    RunStatus,
    run_kind_choices,
    run_list,
    run_percent,
    run_start,
    worker_stall,
)


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    kind = request.GET.get("kind", "")
    status = request.GET.get("status", "")
    runs = list(run_list(kind=kind, status=status))
    rows = [(run, run_percent(run)) for run in runs]
    context = {
        "rows": rows,
        "kind": kind,
        "status": status,
        "kinds": run_kind_choices(),
        "statuses": RunStatus.choices,
        "any_active": any(run.status in ACTIVE_RUN_STATUSES for run in runs),
        "environments": Environment.objects.all(),
        "can_check": has_role(request.user, Role.ENGINEER, Role.ADMIN),
    }
    # Engineers and admins are told when work is waiting that no worker takes.
    context["stall"] = worker_stall() if context["can_check"] else None
    # The runs fragment polls while a run is active; the filters swap it too.
    return render_polled(
        request, "portal/home.html", context, fragment="runs", done=not context["any_active"]
    )


@require_POST
@role_required(Role.ENGINEER, Role.ADMIN)
def environment_check_start(request: HttpRequest) -> HttpResponse:
    names = request.POST.getlist("environment") or list(
        Environment.objects.values_list("name", flat=True)
    )
    try:
        run = run_start(kind=environment_check, actor=request.user, params={"environments": names})
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("home")
    return redirect("runs:detail", run_id=run.pk)


@login_not_required
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and database reachability, for load balancers. No secrets, no login."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return JsonResponse({"status": "ok", "database": "ok"})
    except Exception:
        return JsonResponse({"status": "error", "database": "unreachable"}, status=503)
