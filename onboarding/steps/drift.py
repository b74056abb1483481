"""The drift check's step: what differs in one environment from a live source's approved
plan — the changes applying the plan again (the provision run) would make. Reads only."""

from __future__ import annotations

from functools import partial
from typing import Any

from onboarding.aws.diff import PlanChange, diff_plan, differs, pending
from onboarding.aws.live import read_live
from onboarding.models import OnboardingRequest
from onboarding.request_state import plan_for
from onboarding.steps.common import rule_stops_run, step_request
from portal.aws import client
from portal.runs.api import Done, StepContext, step


def drift_for(request: OnboardingRequest, environment: Any) -> list[PlanChange]:
    """What differs in `environment` from the request's plan: the pending changes that
    applying the plan again (the provision run) would make."""
    plan = plan_for(request, environment)
    live = read_live(plan, partial(client, environment=environment))
    return [change for change in pending(diff_plan(plan, live)) if differs(change)]


@step("onboarding.drift_environment", title="Compare an environment with the plan")
def drift_environment_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    env = ctx.environment()
    with rule_stops_run():
        changes = drift_for(request, env)
    for change in changes:
        ctx.log("warning", f"{change.section}.{change.field}: {change.action}")
    if not changes:
        ctx.log("read", f"{env.name}: everything is as planned")
    return Done(
        {
            "environment": env.name,
            "drifted": bool(changes),
            "changes": [
                {
                    "section": c.section,
                    "field": c.field,
                    "action": c.action,
                    "expected": c.expected,
                    "actual": c.actual,
                }
                for c in changes
            ],
        }
    )
