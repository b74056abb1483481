"""The plan-diff run's step: compare the plan with what one environment's AWS has. Reads
AWS again each time; changes nothing."""

from __future__ import annotations

import json
from typing import Any

from onboarding.aws.diff import diff_plan
from onboarding.aws.live import read_live
from onboarding.plan import plan_digest
from onboarding.steps.common import step_plan, step_request
from portal.runs.api import Done, StepContext, step


def _pretty(value: Any) -> str:
    """A value for the diff table (AWS values can hold Decimals and datetimes)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@step("onboarding.plan_diff_environment", title="Compare the plan with AWS")
def plan_diff_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    env = ctx.environment()
    plan = step_plan(ctx, request)
    changes = diff_plan(plan, read_live(plan, lambda service: ctx.aws(service, env)))
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
        if change.action != "unchanged":
            ctx.log("read", f"{change.section}.{change.field}: {change.action}")
    ctx.log("info", ", ".join(f"{n} {action}" for action, n in sorted(counts.items())))
    rows = [
        {
            "section": c.section,
            "field": c.field,
            "action": c.action,
            "expected": _pretty(c.expected),
            "actual": _pretty(c.actual),
        }
        for c in changes
    ]
    return Done(
        {
            "environment": env.name,
            "revision": request.revision,
            "plan_digest": plan_digest(plan),
            "counts": counts,
            "changes": rows,
        }
    )
