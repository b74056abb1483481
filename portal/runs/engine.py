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

import functools
import logging
import os
import random
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.audit import audit_batch, audit_batch_write, audit_record
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

_HOST = socket.gethostname()
LOG_LIMIT = 500  # entries kept per step; the oldest are dropped beyond that
LOG_ACTIONS = ("read", "created", "updated", "unchanged", "deleted", "info", "warning")


class _Next(Enum):
    CONTINUE = "continue"
    STOP = "stop"
    LOST = "lost"
    YIELD = "yielded"


def _worker_id() -> str:
    """This process in lease tokens and the audit trail, as host:pid. Read when used, not at
    import: a Celery worker imports the engine before it forks its pool processes."""
    return f"{_HOST}:{os.getpid()}"


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
                    # Only while it runs: once recorded, the step's log is the engine's, and
                    # an older copy from here must not overwrite it.
                    Step.objects.filter(pk=ctx.step.pk, status=StepStatus.RUNNING).update(
                        log=list(ctx.entries)
                    )
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
    step costs one commit; the step itself runs outside any transaction. That transaction is
    the engine's whole overhead per step, so it is kept to a few plain statements: lock the
    run row and read what others may change (the lease, a cancel request), update the two
    step rows, append the two audit events (portal/audit.py).
    """
    token = f"{_worker_id()}:{uuid.uuid4().hex[:12]}"
    if not _claim(run_id, token):
        return "not-claimed"
    lease = _Lease(run_id=run_id, token=token)
    heartbeat = _Heartbeat(lease)
    heartbeat.start()
    slice_ends = time.monotonic() + settings.RUNS_SLICE_SECONDS
    outcome = _Next.CONTINUE
    finished: tuple[Step, StepContext, Any] | None = None  # executed, not yet recorded
    run: Run | None = None
    steps: list[Step] | None = None
    try:
        while True:
            with transaction.atomic(), audit_batch(), _batched_writes():
                # Lock the run row and prove we still hold the lease before writing.
                holder, cancel_requested = _lock_run(run_id)
                if holder != token:
                    logger.warning("run %s: lease lost, recording nothing", run_id)
                    outcome = _Next.LOST
                    break
                if run is None or steps is None:
                    # Read once: while this worker holds the lease only it changes the run
                    # and its steps, except for a cancel request, which _lock_run reads.
                    run = Run.objects.get(pk=run_id)
                    steps = list(run.steps.order_by("position"))
                run.cancel_requested = cancel_requested
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
        _finish(run, RunStatus.CANCELLED, actor_label=_worker_id())
        return _Next.STOP, None
    step = next((s for s in steps if s.status not in DONE_STEP_STATUSES), None)
    if step is None:
        _finish(run, RunStatus.SUCCEEDED, actor_label=_worker_id())
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
    if rechecking:
        _save(step, attempts=step.attempts + 1)
    else:
        _save(
            step,
            attempts=step.attempts + 1,
            status=StepStatus.RUNNING,
            started_at=now,
            finished_at=None,
            error="",
        )
    if run.status != RunStatus.RUNNING and not rechecking:
        _save(run, status=RunStatus.RUNNING, started_at=run.started_at or now, wake_at=None)
    if restarted:
        _audit_step(run, step, "step.restarted", note="its previous worker stopped mid-step")
    elif not rechecking:
        _audit_step(run, step, "step.running")


def _record(run: Run, step: Step, ctx: StepContext, result: Any) -> _Next:
    """Inside the transaction: store what the step's execution came to."""
    log = ctx.entries
    now = timezone.now()
    if result is None:
        result = Done()
    if isinstance(result, Done):
        return _step_succeeded(run, step, result, now, log)
    if isinstance(result, Wait):
        return _step_waits(run, step, result, log)
    transient, message = classify_error(result)
    if transient and step.transient_failures + 1 < _max_attempts(step):
        return _step_retries(run, step, message, now, log)
    if transient:
        message = f"Gave up after {step.transient_failures + 1} attempts: {message}"
    if not isinstance(result, PermanentStepError | TransientStepError) and not _is_aws(result):
        logger.error("run %s step %s crashed:\n%s", run.pk, step.key, _format_tb(result))
    return _step_fails(run, step, message, now, log)


def _step_succeeded(run: Run, step: Step, result: Done, now: datetime, log: list) -> _Next:
    _save(
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
    _audit_step(run, step, "step.succeeded")
    return _Next.CONTINUE


def _step_waits(run: Run, step: Step, result: Wait, log: list) -> _Next:
    was_waiting = step.status == StepStatus.WAITING
    _save(step, status=StepStatus.WAITING, wait_reason=result.reason[:255], log=log)
    if not was_waiting:
        _audit_step(run, step, "step.waiting", note=result.reason)
    _park(run, wake_at=result.until)
    return _Next.STOP


def _step_retries(run: Run, step: Step, message: str, now: datetime, log: list) -> _Next:
    failures = step.transient_failures + 1
    delay = backoff_seconds(failures)
    warning = {
        "at": now.isoformat(),
        "action": "warning",
        "message": f"{message} — retrying in {delay:.1f}s",
    }
    _save(
        step,
        status=StepStatus.PENDING,
        not_before=now + timedelta(seconds=delay),
        error=message,
        finished_at=now,
        log=[*log, warning][-LOG_LIMIT:],
        transient_failures=failures,
    )
    _audit_step(run, step, "step.retry_scheduled", note=message)
    _park(run, wake_at=step.not_before)
    return _Next.STOP


def _step_fails(run: Run, step: Step, message: str, now: datetime, log: list) -> _Next:
    _save(step, status=StepStatus.FAILED, error=message, finished_at=now, log=log)
    _audit_step(run, step, "step.failed", note=message)
    _save(run, error=f"{step.title}: {message}")
    _finish(run, RunStatus.FAILED, actor_label=_worker_id())
    return _Next.STOP


def _park(run: Run, *, wake_at: datetime | None) -> None:
    """The run waits: for a time (the reaper or a countdown wakes it) or for a person."""
    _save(run, status=RunStatus.WAITING, wake_at=wake_at)
    if wake_at is not None:
        delay = max(0.0, (wake_at - timezone.now()).total_seconds())
        # Short waits get a timed message; long ones are left to the reaper.
        if delay <= 3600:
            enqueue_on_commit(run.pk, countdown=delay)


def _finish(
    run: Run, status: RunStatus, *, actor: Any = None, actor_label: str | None = None
) -> None:
    now = timezone.now()
    _save(run, status=status, finished_at=now, wake_at=None)
    if status == RunStatus.CANCELLED:
        _flush_writes()
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
    audit_record(action=action, actor_label=_worker_id(), obj=run, data=data)


# --- The bookkeeping statements ----------------------------------------------------------
# The few statements every step executes, written out rather than built by the query
# compiler: on the development machine the ORM spends about half a millisecond building
# an update or a select that SQLite then runs in a few tens of microseconds. Values still
# go through each field's get_db_prep_save, so they are stored exactly as the ORM would.

_writes = threading.local()


def _lock_run(run_id: int) -> tuple[str | None, bool]:
    """Lock the run row; (lease owner, cancel requested), or (None, False) if it is gone.

    On PostgreSQL the same statement makes this transaction commit without waiting for the
    WAL flush (set_config(..., true) is SET LOCAL). That is safe for the engine's own
    bookkeeping: a crash of the database server (a killed worker loses nothing) can forget
    the last moments of commits, whole and in order, never a later one without the earlier
    ones. The run then looks as it did a moment before: a step recorded as running or
    succeeded runs again once its lease expires, and steps are idempotent, so it converges.
    The audit events go with the rows they describe, so the chain stays intact. Whatever
    people do (start, approve, cancel) still commits durably, and as the log is written in
    order, that also makes durable every commit they could have seen before.
    """
    with connection.cursor() as cursor:
        cursor.execute(_lock_run_sql(connection.vendor), [run_id])
        row = cursor.fetchone()
    return (row[0], bool(row[1])) if row else (None, False)


@functools.cache
def _lock_run_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    meta = Run._meta
    owner, cancel = (quote(meta.get_field(n).column) for n in ("lease_owner", "cancel_requested"))
    columns = f"{owner}, {cancel}"
    if vendor == "postgresql":
        columns += ", set_config('synchronous_commit', 'off', true)"
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    return f"SELECT {columns} FROM {quote(meta.db_table)} WHERE id = %s{lock}"  # noqa: S608 - names from model metadata


@contextmanager
def _batched_writes() -> Iterator[None]:
    """Within this block changes to steps and runs are collected and stored when it ends,
    one UPDATE per table (the step that finished and the step that starts share one),
    executed with the transaction's audit events (portal.audit.audit_batch_write)."""
    _writes.pending = {}
    try:
        yield
        pending, _writes.pending = _writes.pending, None
        for model, rows in pending.items():
            audit_batch_write(*_update_sql(model, rows))
    finally:
        _writes.pending = None


def _flush_writes() -> None:
    """Store the changes collected so far now (before a statement touching the same rows)."""
    pending = getattr(_writes, "pending", None)
    if pending:
        with connection.cursor() as cursor:
            for model, rows in pending.items():
                cursor.execute(*_update_sql(model, rows))
        pending.clear()


def _save(obj: Run | Step, **values: Any) -> None:
    """Set the fields on the run or step and store the ones whose value changed."""
    changed = {name: value for name, value in values.items() if getattr(obj, name) != value}
    if not changed:
        return
    for name, value in changed.items():
        setattr(obj, name, value)
    pending = getattr(_writes, "pending", None)
    if pending is not None:
        pending.setdefault(type(obj), {}).setdefault(obj.pk, {}).update(changed)
    else:
        with connection.cursor() as cursor:
            cursor.execute(*_update_sql(type(obj), {obj.pk: changed}))


def _update_sql(
    model: type[models.Model], rows: dict[Any, dict[str, Any]]
) -> tuple[str, list[Any]]:
    """One UPDATE for some fields of some rows, {pk: {field name: value}}."""
    items = list(rows.items())
    sql, fields = _update_statement(
        connection.vendor, model, tuple(tuple(values) for _, values in items)
    )
    params: list[Any] = []
    for name, model_field, owners in fields:
        for i in owners:
            key, values = items[i]
            value = model_field.get_db_prep_save(values[name], connection)
            params += [value] if len(items) == 1 else [key, value]
    return sql, [*params, *rows]


@functools.lru_cache(maxsize=256)
def _update_statement(
    vendor: str, model: type[models.Model], shape: tuple[tuple[str, ...], ...]
) -> tuple[str, list[tuple[str, models.Field, list[int]]]]:
    """The UPDATE for rows that change these fields, made once per shape. With several
    rows each column is CASE pk WHEN 1 THEN ... WHEN 2 THEN ... ELSE column END, so a row
    that does not change it keeps its value."""
    quote = connection.ops.quote_name
    meta = model._meta
    pk = quote(meta.pk.column)
    names = list(dict.fromkeys(name for row in shape for name in row))
    assignments, fields = [], []
    for name in names:
        model_field = meta.get_field(name)
        column = quote(model_field.column)
        owners = [i for i, row in enumerate(shape) if name in row]
        if len(shape) == 1:
            assignments.append(f"{column} = %s")
        else:
            whens = " ".join(["WHEN %s THEN %s"] * len(owners))
            assignments.append(f"{column} = CASE {pk} {whens} ELSE {column} END")
        fields.append((name, model_field, owners))
    keys = ", ".join(["%s"] * len(shape))
    sql = f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} WHERE {pk} IN ({keys})"  # noqa: S608 - names from model metadata
    return sql, fields


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
