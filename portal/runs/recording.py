"""Recording what a step came to, inside the engine's transaction: each outcome's writes
to the step and the run, and the audit events that go with them."""

from __future__ import annotations

import logging
import os
import random
import socket
import traceback
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from portal.audit import audit_record
from portal.runs.context import LOG_LIMIT, StepContext
from portal.runs.models import DONE_STEP_STATUSES, Decision, Run, RunStatus, Step, StepStatus
from portal.runs.outcomes import Decide, Done, Wait, classify_error, is_expected
from portal.runs.queue import enqueue_on_commit
from portal.runs.registry import get_step
from portal.runs.sql import flush_writes, save

logger = logging.getLogger(__name__)

_HOST = socket.gethostname()


def worker_id() -> str:
    """This process in lease tokens and the audit trail, as host:pid. Read when used, not at
    import: a Celery worker imports the engine before it forks its pool processes."""
    return f"{_HOST}:{os.getpid()}"


def start_step(run: Run, step: Step, now: datetime) -> None:
    """The step is about to execute. A waiting step looking again is a tick, not an attempt."""
    restarted = step.status == StepStatus.RUNNING  # its last worker died mid-step
    rechecking = step.status == StepStatus.WAITING
    if rechecking:
        save(step, ticks=step.ticks + 1)
    else:
        save(
            step,
            attempts=step.attempts + 1,
            status=StepStatus.RUNNING,
            started_at=now,
            finished_at=None,
            error="",
        )
    if run.status != RunStatus.RUNNING and not rechecking:
        save(run, status=RunStatus.RUNNING, started_at=run.started_at or now, wake_at=None)
    if restarted:
        audit_step(run, step, "step.restarted", note="its previous worker stopped mid-step")
    elif not rechecking:
        audit_step(run, step, "step.running")


def record(run: Run, step: Step, ctx: StepContext, result: Any) -> bool:
    """Store what the step's execution came to; True if the run goes on to its next step."""
    log = ctx.entries
    now = timezone.now()
    if result is None:
        result = Done()
    if isinstance(result, Done):
        return _succeeded(run, step, result, now, log)
    if isinstance(result, Wait):
        return _waits(run, step, result, now, log)
    if isinstance(result, Decide):
        return _decides(run, step, result, now, log)
    if not isinstance(result, BaseException):
        result = TypeError(f"the step returned {type(result).__name__}, not an outcome")
    transient, message = classify_error(result)
    if transient and step.transient_failures + 1 < _max_attempts(step):
        return _retries(run, step, message, now, log)
    if transient:
        message = f"Gave up after {step.transient_failures + 1} attempts: {message}"
    if not is_expected(result):
        logger.error("run %s step %s crashed:\n%s", run.pk, step.key, _format_tb(result))
    return _fails(run, step, message, now, log)


def _succeeded(run: Run, step: Step, result: Done, now: datetime, log: list) -> bool:
    save(
        step,
        status=StepStatus.SUCCEEDED,
        output=result.output,
        finished_at=now,
        error="",
        wait_reason="",
        log=log,
        transient_failures=0,
        not_before=None,
    )
    audit_step(run, step, "step.succeeded")
    return True


def _deadline(step: Step, result: Wait, now: datetime) -> datetime | None:
    if step.deadline_at is not None:
        return step.deadline_at
    if isinstance(result.deadline, timedelta):
        return (step.started_at or now) + result.deadline
    return result.deadline


def _waits(run: Run, step: Step, result: Wait, now: datetime, log: list) -> bool:
    deadline = _deadline(step, result, now)
    if deadline is not None and now >= deadline:
        waited = _duration(now - (step.started_at or now))
        message = result.deadline_message or (
            f"Still waiting {result.reason or 'for its condition'} when the deadline passed "
            f"after {waited}."
        )
        save(step, output=result.output or step.output, deadline_at=deadline)
        return _fails(run, step, message, now, log)
    wake = result.wake_at(now)
    if deadline is not None and (wake is None or wake > deadline):
        wake = deadline  # look once more at the deadline, then give up
    was_waiting = step.status == StepStatus.WAITING
    save(
        step,
        status=StepStatus.WAITING,
        wait_reason=result.reason[:255],
        log=log,
        output=result.output or step.output,
        deadline_at=deadline,
    )
    if not was_waiting:
        audit_step(run, step, "step.waiting", note=result.reason)
    park(run, wake_at=wake)
    return False


def _decides(run: Run, step: Step, result: Decide, now: datetime, log: list) -> bool:
    spec = result.spec(now)
    if step.decision_spec.get("decide_by"):  # asking again never moves the time limit
        spec["decide_by"] = step.decision_spec["decide_by"]
    was_waiting = step.status == StepStatus.WAITING
    save(
        step,
        status=StepStatus.WAITING,
        decision_spec=spec,
        wait_reason=f"for a decision: {result.prompt}"[:255],
        log=log,
        output=result.output or step.output,
    )
    if not was_waiting:
        audit_step(run, step, "step.decision_needed", note=result.prompt)
    decide_by = parse_datetime(spec["decide_by"]) if spec["decide_by"] else None
    park(run, wake_at=decide_by)
    return False


def take_default(run: Run, step: Step) -> None:
    """A decision whose time limit passed with nobody choosing takes its default choice."""
    spec = step.decision_spec
    decide_by = parse_datetime(spec["decide_by"]) if spec.get("decide_by") else None
    if not spec.get("default") or decide_by is None or decide_by > timezone.now():
        return
    try:
        with transaction.atomic():
            Decision.objects.create(
                step=step,
                choice=spec["default"],
                by_default=True,
                reason=f"Nobody chose by {decide_by:%Y-%m-%d %H:%M:%S} UTC; the default applies.",
            )
            audit_record(
                action="step.decided",
                actor_label=worker_id(),
                obj=run,
                data={
                    "step": step.key,
                    "position": step.position,
                    "choice": spec["default"],
                    "by_default": True,
                },
            )
    except IntegrityError:
        pass  # a person chose a moment before the limit; theirs stands


def _retries(run: Run, step: Step, message: str, now: datetime, log: list) -> bool:
    failures = step.transient_failures + 1
    delay = backoff_seconds(failures)
    warning = {
        "at": now.isoformat(),
        "action": "warning",
        "message": f"{message} — retrying in {delay:.1f}s",
    }
    save(
        step,
        status=StepStatus.PENDING,
        not_before=now + timedelta(seconds=delay),
        error=message,
        finished_at=now,
        log=[*log, warning][-LOG_LIMIT:],
        transient_failures=failures,
    )
    audit_step(run, step, "step.retry_scheduled", note=message)
    park(run, wake_at=step.not_before)
    return False


def _fails(run: Run, step: Step, message: str, now: datetime, log: list) -> bool:
    save(step, status=StepStatus.FAILED, error=message, finished_at=now, log=log)
    audit_step(run, step, "step.failed", note=message)
    save(run, error=f"{step.title}: {message}")
    finish(run, RunStatus.FAILED, actor_label=worker_id())
    return False


def park(run: Run, *, wake_at: datetime | None) -> None:
    """The run waits: for a time (a timed message or the reaper wakes it) or for a person."""
    save(run, status=RunStatus.WAITING, wake_at=wake_at)
    if wake_at is not None:
        delay = max(0.0, (wake_at - timezone.now()).total_seconds())
        # Short waits get a timed message; long ones are left to the reaper.
        if delay <= 3600:
            enqueue_on_commit(run.pk, countdown=delay)


def finish(
    run: Run, status: RunStatus, *, actor: Any = None, actor_label: str | None = None
) -> None:
    now = timezone.now()
    save(run, status=status, finished_at=now, wake_at=None)
    if status == RunStatus.CANCELLED:
        flush_writes()
        run.steps.exclude(status__in=[*DONE_STEP_STATUSES, StepStatus.FAILED]).update(
            status=StepStatus.CANCELLED, finished_at=now
        )
    audit_record(
        action=f"run.{status.value}",
        actor=actor,
        actor_label=actor_label,
        obj=run,
        data={"kind": run.kind, "error": run.error} if run.error else {"kind": run.kind},
    )


def audit_step(run: Run, step: Step, action: str, *, note: str = "") -> None:
    data: dict[str, Any] = {"step": step.key, "position": step.position, "attempt": step.attempts}
    if note:
        data["note"] = note[:500]
    audit_record(action=action, actor_label=worker_id(), obj=run, data=data)


def backoff_seconds(failures: int) -> float:
    """Exponential backoff with full jitter: base * 2^(n-1), capped, at least half of it."""
    ceiling = min(
        settings.RUNS_BACKOFF_MAX_SECONDS, settings.RUNS_BACKOFF_BASE_SECONDS * 2 ** (failures - 1)
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not security


def _max_attempts(step: Step) -> int:
    spec = get_step(step.key)
    return spec.max_attempts or settings.RUNS_TRANSIENT_MAX_ATTEMPTS


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _format_tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
