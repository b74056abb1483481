"""A canary release in miniature: an AWS call that may be throttled, a bake that looks at
the canary every tick with a deadline, and a promote / roll back / pause decision that a
second engineer makes (or that promotes by itself once its time limit passes).

Only `portal.runs.api` (and the roles) are imported: tests/runs/test_shape.py checks it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from portal.roles import Role
from portal.runs.api import (
    Choice,
    Decide,
    Done,
    PlannedStep,
    StepContext,
    Wait,
    run_kind,
    step,
)


@step("shape.who_am_i", title="Who am I (STS)")
def who_am_i(ctx: StepContext) -> Done:
    identity = ctx.aws("sts").get_caller_identity()  # throttling is the engine's to retry
    ctx.log("read", f"caller {identity['Arn']}")
    return Done({"account": identity["Account"]})


@step("shape.bake", title="Bake the canary")
def bake(ctx: StepContext) -> Done | Wait:
    needed = int(ctx.params["invocations"])
    seen = ctx.step.ticks * 10  # ten invocations a tick, in this miniature
    if seen >= needed:
        return Done({"invocations": seen, "errors": 0})
    return Wait(
        seconds=float(ctx.params.get("every", 0.2)),
        reason=f"canary: {seen} of {needed} invocations needed, 0 errors",
        output={"invocations": seen, "needed": needed, "errors": 0},
        deadline=timedelta(seconds=float(ctx.params.get("bake_deadline", 60))),
        deadline_message="The canary never reached enough invocations to judge it.",
    )


@step("shape.verdict", title="Promote or roll back")
def verdict(ctx: StepContext) -> Done | Decide:
    chosen = ctx.decision
    if chosen is None:
        limit = ctx.params.get("promote_after")
        return Decide(
            prompt="The canary baked cleanly: promote it?",
            choices=[
                Choice("promote", "Promote", style="primary"),
                Choice("rollback", "Roll back", style="danger"),
                Choice("pause", "Pause"),
            ],
            roles=[Role.ENGINEER],
            not_starter=True,
            default="promote" if limit is not None else None,
            timeout=timedelta(seconds=float(limit)) if limit is not None else None,
        )
    ctx.log("info", f"{chosen.by or 'the time limit'} chose {chosen.choice}")
    return Done({"choice": chosen.choice, "by": chosen.by, "by_default": chosen.by_default})


@run_kind("shape.canary", title="Canary (shape test)", start_roles=[Role.ENGINEER])
def canary(params: dict[str, Any]) -> list[PlannedStep]:
    return [PlannedStep(who_am_i), PlannedStep(bake), PlannedStep(verdict)]
