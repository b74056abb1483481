"""Drift: what differs in AWS from a live source's approved plan, and the scheduled scan."""

from __future__ import annotations

from typing import Any

from onboarding.live import PlanChange, diff_plan, pending, read_live
from onboarding.models import OnboardingRequest, RequestStatus
from onboarding.provisioning import (
    DRIFT_KIND,
    PROVISION_KIND,
    TEARDOWN_KIND,
    differs,
    plan_for,
)

# --- drift ------------------------------------------------------------------------------------


def drift_for(request: OnboardingRequest, environment: Any) -> list[PlanChange]:
    """What differs in `environment` from the request's plan: the pending changes that
    applying the plan again (the provision run) would make."""
    from portal.aws import client

    plan = plan_for(request, environment)
    live = read_live(plan, lambda service: client(service, environment))
    return [change for change in pending(diff_plan(plan, live)) if differs(change)]


def provisioned_environments(request: OnboardingRequest) -> list[str]:
    """Environments whose last provision or teardown run for the request that succeeded
    was a provision, in rollout order."""
    from portal.models import Environment
    from portal.runs.models import RunStatus
    from portal.runs.selectors import runs_of

    runs = (
        runs_of(request, PROVISION_KIND, TEARDOWN_KIND)
        .filter(status=RunStatus.SUCCEEDED)
        .order_by("finished_at", "pk")
    )
    last: dict[str, str] = {}
    for kind, params in runs.values_list("kind", "params"):
        last[str(params.get("environment"))] = kind
    names = {name for name, kind in last.items() if kind == PROVISION_KIND}
    return [env.name for env in Environment.objects.all() if env.name in names]


def drift_scan_all(*, actor: Any) -> list[Any]:
    """Start a drift-check run for every approved request provisioned somewhere; `actor`
    (an engineer or admin, e.g. a service user for the schedule) starts them."""
    from portal.runs.services import run_start

    started = []
    for request in OnboardingRequest.objects.filter(status=RequestStatus.APPROVED):
        environments = provisioned_environments(request)
        if environments:
            started.append(
                run_start(
                    kind=DRIFT_KIND,
                    actor=actor,
                    params={"request_id": request.pk, "environments": environments},
                    subject=request,
                    title=f"Drift check {request.key} ({', '.join(environments)})",
                )
            )
    return started
