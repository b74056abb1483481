"""The durable step-run engine.

A worker claims a run with a conditional UPDATE (a lease), renews the lease with heartbeats
while a step executes, records each step's outcome in its own transaction, and moves on to
the next step while it holds the lease — for up to RUNS_SLICE_SECONDS, after which it hands
the run back to the queue so long runs do not starve short ones. Every write after a step
is fenced on the lease token: a worker that lost its lease (it stalled past expiry and
another worker took over) records nothing.

The database is the source of truth. The broker only says "look at run N"; a message
lost with a killed worker is replaced by the reaper, a duplicate message finds the run
leased or finished and does nothing.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.audit import audit_batch, audit_record
from portal.runs.models import (
    ACTIVE_RUN_STATUSES,
    DONE_STEP_STATUSES,
    Run,
    RunStatus,
    Step,
    StepStatus,
)
from portal.runs.registry import (
    Done,
    PermanentStepError,
    TransientStepError,
    Wait,
    get_step,
)

logger = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
LOG_LIMIT = 500  # entries kept per step; the oldest are dropped beyond that
LOG_ACTIONS = ("read", "created", "updated", "unchanged", "deleted", "info", "warning")


class _Next(Enum):
    CONTINUE = "continue"
    STOP = "stop"
    LOST = "lost"
    YIELD = "yielded"


# --- What a step sees ------------------------------------------------------------------


@dataclass
class StepContext:
    """What a step function receives: its run, its params, a log and AWS clients."""

    run: Run
    step: Step
    token: str
    entries: list[dict[str, str]] = field(default_factory=list)
    lease_lost: threading.Event = field(default_factory=threading.Event)
    environments: dict[str, Any] = field(default_factory=dict)
    _dirty: bool = False

    @property
    def params(self) -> dict[str, Any]:
        return {**self.run.params, **self.step.params}

    def log(self, action: str, message: str) -> None:
        """Record what was read or changed: read, created, updated, unchanged, deleted…"""
        if action not in LOG_ACTIONS:
            raise ValueError(f"unknown log action {action!r}")
        self.entries.append(
            {"at": timezone.now().isoformat(), "action": action, "message": message}
        )
        del self.entries[:-LOG_LIMIT]
        self._dirty = True

    def environment(self) -> Any:
        from portal.models import Environment

        name = self.params.get("environment")
        if not name:
            raise PermanentStepError("This step needs an environment and none was given.")
        if name not in self.environments:  # cached for the rest of this worker's slice
            try:
                self.environments[name] = Environment.objects.get(name=name)
            except Environment.DoesNotExist:
                raise PermanentStepError(f"There is no environment called {name!r}.") from None
        return self.environments[name]

    def aws(self, service: str, environment: Any = None) -> Any:
        """A boto3 client for `service` in the step's environment (portal/aws.py)."""
        from portal import aws

        return aws.client(service, environment or self.environment())

    def still_leased(self) -> bool:
        """False once another worker has taken the run over; a long step should stop."""
        return not self.lease_lost.is_set()


@dataclass
class _Lease:
    """One worker's hold on one run, for as long as it keeps executing its steps."""

    run_id: int
    token: str
    lost: threading.Event = field(default_factory=threading.Event)
    environments: dict[str, Any] = field(default_factory=dict)
    current: StepContext | None = None


class _Heartbeat(threading.Thread):
    """Renews the lease while the worker holds the run, and saves the running step's log
    tail so the run page shows it before the step ends."""

    def __init__(self, lease: _Lease) -> None:
        super().__init__(name=f"run-{lease.run_id}-heartbeat", daemon=True)
        self.lease = lease
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.RUNS_HEARTBEAT_SECONDS):
                now = timezone.now()
                renewed = Run.objects.filter(
                    pk=self.lease.run_id, lease_owner=self.lease.token
                ).update(
                    lease_expires_at=now + timedelta(seconds=settings.RUNS_LEASE_SECONDS),
                    heartbeat_at=now,
                )
                if not renewed:
                    logger.warning("run %s: lease lost", self.lease.run_id)
                    self.lease.lost.set()
                    return
                ctx = self.lease.current
                if ctx is not None and ctx._dirty:
                    ctx._dirty = False
                    Step.objects.filter(pk=ctx.step.pk).update(log=list(ctx.entries))
        except Exception:
            logger.exception("run %s: heartbeat failed", self.lease.run_id)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=settings.RUNS_HEARTBEAT_SECONDS + 5)


# --- Enqueueing --------------------------------------------------------------------------


def enqueue(run_id: int, *, countdown: float | None = None) -> None:
    """Ask a worker to look at the run. Safe to call any number of times."""
    from portal.runs.tasks import run_advance

    Run.objects.filter(pk=run_id).update(last_enqueued_at=timezone.now())
    run_advance.apply_async((run_id,), countdown=countdown)


def enqueue_on_commit(run_id: int, *, countdown: float | None = None) -> None:
    transaction.on_commit(lambda: enqueue(run_id, countdown=countdown))


# --- Executing ---------------------------------------------------------------------------


def advance(run_id: int) -> str:
    """Claim the run and execute its next steps. Returns what happened, for logs and tests.

    Each step's outcome and the next step's start are recorded in one transaction, so a
    step costs one commit; the step itself runs outside any transaction.
    """
    token = f"{WORKER_ID}:{uuid.uuid4().hex[:12]}"
    if not _claim(run_id, token):
        return "not-claimed"
    lease = _Lease(run_id=run_id, token=token)
    heartbeat = _Heartbeat(lease)
    heartbeat.start()
    slice_ends = time.monotonic() + settings.RUNS_SLICE_SECONDS
    outcome = _Next.CONTINUE
    finished: tuple[Step, StepContext, Any] | None = None  # executed, not yet recorded
    steps: list[Step] | None = None
    try:
        while True:
            with transaction.atomic(), audit_batch():
                # Lock the run row and prove we still hold the lease before writing.
                run = Run.objects.select_for_update().get(pk=run_id)
                if run.lease_owner != token:
                    logger.warning("run %s: lease lost, recording nothing", run_id)
                    outcome = _Next.LOST
                    break
                if steps is None:
                    # Read once: while this worker holds the lease, only it changes them.
                    steps = list(run.steps.order_by("position"))
                if finished is not None:
                    outcome = _record(run, *finished)
                    finished = None
                if outcome is _Next.CONTINUE and time.monotonic() > slice_ends:
                    outcome = _Next.YIELD
                if outcome is _Next.CONTINUE:
                    outcome, step = _begin_next_step(run, steps)
            if outcome is not _Next.CONTINUE:
                break
            finished = (step, *_execute(lease, run, step))
    finally:
        heartbeat.stop()
        if outcome is not _Next.LOST:
            _release(run_id, token)
    if outcome is _Next.YIELD:
        enqueue(run_id)  # let other runs have the worker; this one carries on later
    return outcome.value


def _claim(run_id: int, token: str) -> bool:
    now = timezone.now()
    claimed = (
        Run.objects.filter(pk=run_id, status__in=ACTIVE_RUN_STATUSES)
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now))
        .filter(Q(status__in=[RunStatus.PENDING, RunStatus.RUNNING]) | Q(wake_at__lte=now))
        .update(
            lease_owner=token,
            lease_expires_at=now + timedelta(seconds=settings.RUNS_LEASE_SECONDS),
            heartbeat_at=now,
        )
    )
    return claimed == 1


def _release(run_id: int, token: str) -> None:
    Run.objects.filter(pk=run_id, lease_owner=token).update(lease_owner="", lease_expires_at=None)


def _begin_next_step(run: Run, steps: list[Step]) -> tuple[_Next, Step | None]:
    """Inside the transaction: honour a cancel, finish, park or start the next step."""
    if run.cancel_requested:
        _finish(run, RunStatus.CANCELLED, actor_label=WORKER_ID)
        return _Next.STOP, None
    step = next((s for s in steps if s.status not in DONE_STEP_STATUSES), None)
    if step is None:
        _finish(run, RunStatus.SUCCEEDED, actor_label=WORKER_ID)
        return _Next.STOP, None
    if step.status in (StepStatus.FAILED, StepStatus.CANCELLED):
        return _Next.STOP, None  # a person decides what happens next
    now = timezone.now()
    if step.not_before and step.not_before > now:
        _park(run, wake_at=step.not_before)
        return _Next.STOP, None
    _start_step(run, step, now)
    return _Next.CONTINUE, step


def _execute(lease: _Lease, run: Run, step: Step) -> tuple[StepContext, Any]:
    """Run the step function outside any transaction; never raises."""
    ctx = StepContext(
        run=run,
        step=step,
        token=lease.token,
        entries=list(step.log),
        lease_lost=lease.lost,
        environments=lease.environments,
    )
    lease.current = ctx
    try:
        result: Any = get_step(step.key).func(ctx)
    except Exception as exc:  # every failure is classified and recorded
        result = exc
    finally:
        lease.current = None
    return ctx, result


def _start_step(run: Run, step: Step, now: datetime) -> None:
    restarted = step.status == StepStatus.RUNNING  # its last worker died mid-step
    rechecking = step.status == StepStatus.WAITING  # a wait re-evaluates without a transition
    step.attempts += 1
    fields = ["attempts"]
    if not rechecking:
        step.status = StepStatus.RUNNING
        step.started_at = now
        step.finished_at = None
        step.error = ""
        fields += ["status", "started_at", "finished_at", "error"]
    step.save(update_fields=fields)
    if run.status != RunStatus.RUNNING and not rechecking:
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or now
        run.wake_at = None
        run.save(update_fields=["status", "started_at", "wake_at"])
    if restarted:
        _audit_step(run, step, "step.restarted", note="its previous worker stopped mid-step")
    elif not rechecking:
        _audit_step(run, step, "step.running")


def _record(run: Run, step: Step, ctx: StepContext, result: Any) -> _Next:
    """Inside the transaction: store what the step's execution came to."""
    step.log = ctx.entries
    now = timezone.now()
    if result is None:
        result = Done()
    if isinstance(result, Done):
        return _step_succeeded(run, step, result, now)
    if isinstance(result, Wait):
        return _step_waits(run, step, result, now)
    transient, message = classify_error(result)
    if transient and step.transient_failures + 1 < _max_attempts(step):
        return _step_retries(run, step, message, now)
    if transient:
        message = f"Gave up after {step.transient_failures + 1} attempts: {message}"
    if not isinstance(result, PermanentStepError | TransientStepError) and not _is_aws(result):
        logger.error("run %s step %s crashed:\n%s", run.pk, step.key, _format_tb(result))
    return _step_fails(run, step, message, now)


def _step_succeeded(run: Run, step: Step, result: Done, now: datetime) -> _Next:
    step.status = StepStatus.SUCCEEDED
    step.output = result.output
    step.finished_at = now
    step.error = step.wait_reason = ""
    step.transient_failures = 0
    step.not_before = None
    step.save(
        update_fields=[
            "status",
            "output",
            "finished_at",
            "error",
            "wait_reason",
            "log",
            "transient_failures",
            "not_before",
        ]
    )
    _audit_step(run, step, "step.succeeded")
    return _Next.CONTINUE


def _step_waits(run: Run, step: Step, result: Wait, now: datetime) -> _Next:
    was_waiting = step.status == StepStatus.WAITING
    step.status = StepStatus.WAITING
    step.wait_reason = result.reason[:255]
    step.save(update_fields=["status", "wait_reason", "log"])
    if not was_waiting:
        _audit_step(run, step, "step.waiting", note=result.reason)
    _park(run, wake_at=result.until)
    return _Next.STOP


def _step_retries(run: Run, step: Step, message: str, now: datetime) -> _Next:
    step.transient_failures += 1
    delay = backoff_seconds(step.transient_failures)
    step.status = StepStatus.PENDING
    step.not_before = now + timedelta(seconds=delay)
    step.error = message
    step.finished_at = now
    step.log.append(
        {
            "at": now.isoformat(),
            "action": "warning",
            "message": f"{message} — retrying in {delay:.1f}s",
        }
    )
    del step.log[:-LOG_LIMIT]
    step.save(
        update_fields=["status", "not_before", "error", "finished_at", "log", "transient_failures"]
    )
    _audit_step(run, step, "step.retry_scheduled", note=message)
    _park(run, wake_at=step.not_before)
    return _Next.STOP


def _step_fails(run: Run, step: Step, message: str, now: datetime) -> _Next:
    step.status = StepStatus.FAILED
    step.error = message
    step.finished_at = now
    step.save(update_fields=["status", "error", "finished_at", "log"])
    _audit_step(run, step, "step.failed", note=message)
    run.error = f"{step.title}: {message}"
    run.save(update_fields=["error"])
    _finish(run, RunStatus.FAILED, actor_label=WORKER_ID)
    return _Next.STOP


def _park(run: Run, *, wake_at: datetime | None) -> None:
    """The run waits: for a time (the reaper or a countdown wakes it) or for a person."""
    run.status = RunStatus.WAITING
    run.wake_at = wake_at
    run.save(update_fields=["status", "wake_at"])
    if wake_at is not None:
        delay = max(0.0, (wake_at - timezone.now()).total_seconds())
        # Short waits get a timed message; long ones are left to the reaper.
        if delay <= 3600:
            enqueue_on_commit(run.pk, countdown=delay)


def _finish(
    run: Run, status: RunStatus, *, actor: Any = None, actor_label: str | None = None
) -> None:
    now = timezone.now()
    run.status = status
    run.finished_at = now
    run.wake_at = None
    run.save(update_fields=["status", "finished_at", "wake_at", "error"])
    if status == RunStatus.CANCELLED:
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


def _audit_step(run: Run, step: Step, action: str, *, note: str = "") -> None:
    data: dict[str, Any] = {"step": step.key, "position": step.position, "attempt": step.attempts}
    if note:
        data["note"] = note[:500]
    audit_record(action=action, actor_label=WORKER_ID, obj=run, data=data)


# --- Errors ------------------------------------------------------------------------------

_TRANSIENT_AWS_CODES = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
    "TransactionInProgressException",
    "PriorRequestNotComplete",
}


def _is_aws(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("botocore")


def classify_error(exc: BaseException) -> tuple[bool, str]:
    """(transient?, message a person can act on) for an exception a step raised."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, TransientStepError):
        return True, str(exc)
    if isinstance(exc, PermanentStepError):
        return False, str(exc)
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        operation = getattr(exc, "operation_name", "call")
        message = f"AWS {operation} failed: {code}: {err.get('Message', '')}".strip()
        return (code in _TRANSIENT_AWS_CODES or (status or 0) >= 500), message
    if isinstance(
        exc,
        EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError,
    ):
        return True, f"AWS could not be reached: {exc}"
    if isinstance(exc, NoCredentialsError):
        return False, "No AWS credentials are configured for this environment."
    return False, f"{type(exc).__name__}: {exc}"


def backoff_seconds(failures: int) -> float:
    """Exponential backoff with full jitter: base * 2^(n-1), capped, at least half of it."""
    ceiling = min(
        settings.RUNS_BACKOFF_MAX_SECONDS, settings.RUNS_BACKOFF_BASE_SECONDS * 2 ** (failures - 1)
    )
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not security


def _max_attempts(step: Step) -> int:
    spec = get_step(step.key)
    return spec.max_attempts or settings.RUNS_TRANSIENT_MAX_ATTEMPTS


def _format_tb(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# --- The reaper --------------------------------------------------------------------------


def reap() -> dict[str, int]:
    """Re-enqueue runs a worker should be working on and is not:

    - running runs whose lease expired (their worker was killed or stalled),
    - pending runs never enqueued, or enqueued long ago and still unclaimed,
    - waiting runs whose wake time has come.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.RUNS_ENQUEUE_GRACE_SECONDS)
    free = Q(lease_owner="") | Q(lease_expires_at__lt=now)
    stale_enqueue = Q(last_enqueued_at__isnull=True) | Q(last_enqueued_at__lt=grace)
    expired = Run.objects.filter(
        status__in=ACTIVE_RUN_STATUSES, lease_owner__gt="", lease_expires_at__lt=now
    )
    unclaimed = Run.objects.filter(status=RunStatus.PENDING, created_at__lt=grace).filter(
        free & stale_enqueue
    )
    due = (
        Run.objects.filter(status=RunStatus.WAITING, wake_at__lte=now)
        .filter(free)
        .filter(
            Q(last_enqueued_at__isnull=True)
            | Q(last_enqueued_at__lt=grace)
            | Q(last_enqueued_at__lt=F("wake_at"))
        )
    )
    counts = {}
    for name, queryset in (("expired", expired), ("unclaimed", unclaimed), ("due", due)):
        ids = list(queryset.values_list("pk", flat=True)[:500])
        for run_id in ids:
            enqueue(run_id)
        counts[name] = len(ids)
    if any(counts.values()):
        logger.info("reaper re-enqueued %s", counts)
    return counts
