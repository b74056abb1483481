"""Step and run kinds used only by the engine tests.

Real Celery workers import this module with `--include tests.runs.worker_steps`, so the
test process and the workers know the same kinds. Each step appends to a journal file the
test reads afterwards: which worker process ran which step, when it started and ended.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from portal import aws
from portal.roles import Role
from portal.runs.api import Done, PlannedStep, Wait, run_kind, step


def journal(ctx: Any, event: str) -> None:
    path = ctx.params.get("journal")
    if not path:
        return
    line = f"{ctx.run.pk} {ctx.step.position} {event} {os.getpid()} {time.time():.6f}\n"
    with Path(path).open("a") as fh:
        fh.write(line)


@step("test.record", title="Record and sleep")
def record(ctx: Any) -> Done:
    journal(ctx, "start")
    time.sleep(float(ctx.params.get("sleep", 0)))
    journal(ctx, "end")
    ctx.log("info", f"step {ctx.step.position} ran in pid {os.getpid()}")
    return Done({"pid": os.getpid()})


@run_kind("test.sequence", title="Test sequence", start_roles=[Role.ENGINEER])
def plan_sequence(params: dict[str, Any]) -> list[PlannedStep]:
    if "sleeps" in params:  # one step per given duration
        return [
            PlannedStep("test.record", f"Step {i + 1}", {"sleep": s})
            for i, s in enumerate(params["sleeps"])
        ]
    return [PlannedStep("test.record", f"Step {i + 1}") for i in range(int(params.get("steps", 3)))]


@step("test.ensure_key", title="Ensure the test KMS key")
def ensure_key(ctx: Any) -> Done:
    journal(ctx, "start")

    def pause_after_create(key_id: str) -> None:
        journal(ctx, "created")
        time.sleep(float(ctx.params.get("pause", 0)))

    kms = ctx.aws("kms")
    key_id, action = aws.ensure_kms_key(
        kms,
        alias=ctx.params["alias"],
        description="engine crash test",
        tags={"Purpose": "engine-test"},
        on_created=pause_after_create,
    )
    ctx.log(action, f"KMS key {key_id} for {ctx.params['alias']}")
    journal(ctx, "end")
    return Done({"key_id": key_id, "action": action})


@run_kind("test.kms", title="Test KMS key", start_roles=[Role.ENGINEER])
def plan_kms(params: dict[str, Any]) -> list[PlannedStep]:
    return [PlannedStep("test.ensure_key")]


@step("test.caller", title="Who am I (STS)")
def caller(ctx: Any) -> Done:
    journal(ctx, "start")
    identity = ctx.aws("sts").get_caller_identity()
    ctx.log("read", f"caller {identity['Arn']}")
    journal(ctx, "end")
    return Done({"account": identity["Account"]})


@run_kind("test.aws", title="Test AWS call", start_roles=[Role.ENGINEER])
def plan_aws(params: dict[str, Any]) -> list[PlannedStep]:
    return [
        PlannedStep("test.record", "Before"),
        PlannedStep("test.caller"),
        PlannedStep("test.record", "After"),
    ]


@step("test.wait_until", title="Wait until a time")
def wait_until(ctx: Any) -> Done | Wait:
    due = ctx.run.created_at + timedelta(seconds=float(ctx.params.get("wait", 2)))
    from django.utils import timezone

    if timezone.now() < due:
        journal(ctx, "wait")
        return Wait(until=due, reason=f"until {due:%H:%M:%S}")
    journal(ctx, "end")
    return Done()


@step("test.wait_person", title="Wait for a person")
def wait_person(ctx: Any) -> Done | Wait:
    if not Path(ctx.params["flag"]).exists():
        journal(ctx, "wait")
        return Wait(reason="a person to press the button")
    journal(ctx, "end")
    return Done()


@run_kind("test.waits", title="Test waits", start_roles=[Role.ENGINEER])
def plan_waits(params: dict[str, Any]) -> list[PlannedStep]:
    key = "test.wait_person" if params.get("flag") else "test.wait_until"
    return [PlannedStep(key), PlannedStep("test.record", "After the wait")]


@step("test.tick", title="Look again until enough ticks")
def tick(ctx: Any) -> Done | Wait:
    """Waits `ticks` times, `every` seconds apart, each tick with its own output; gives up
    after `deadline` seconds if given."""
    n, target = ctx.step.ticks, int(ctx.params.get("ticks", 3))
    journal(ctx, f"tick{n}")
    if n >= target:
        return Done({"ticks": n})
    deadline = ctx.params.get("deadline")
    return Wait(
        seconds=float(ctx.params.get("every", 0)),
        reason=f"tick {n} of {target}",
        output={"tick": n, "of": target},
        deadline=timedelta(seconds=float(deadline)) if deadline is not None else None,
    )


@run_kind("test.ticks", title="Test ticks", start_roles=[Role.ENGINEER])
def plan_ticks(params: dict[str, Any]) -> list[PlannedStep]:
    return [PlannedStep(tick), PlannedStep("test.record", "After the ticks")]
