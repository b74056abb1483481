"""The volume review's step: objects and bytes per day that reached the raw bucket in prod
since it went live (at most the last 30 days), read only (`onboarding.aws.volume`)."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.utils import timezone

from onboarding.aws.volume import measure
from onboarding.steps.common import rule_stops_run, step_plan, step_request
from onboarding.volume import window_start
from portal.runs.api import Done, StepContext, step


@step("onboarding.volume_measure", title="Measure objects and bytes per day")
def volume_measure_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    plan = step_plan(ctx, request)
    until = timezone.now()
    live = ctx.params.get("since")
    since = window_start(until, datetime.fromisoformat(live) if live else None)
    with rule_stops_run():
        result = measure(
            ctx.aws("s3"),
            ctx.aws("cloudwatch"),
            plan["bucket"]["name"],
            since=since,
            until=until,
            cap=settings.ONBOARDING_VOLUME_MAX_OBJECTS,
            log=ctx.log,
        )
    return Done(
        {"environment": ctx.params["environment"], "measured_at": until.isoformat(), **result}
    )
