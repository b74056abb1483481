"""Claiming runs and executing their steps; the reaper.

A worker claims a run with a conditional UPDATE (a lease), renews the lease with heartbeats
while a step executes, records each step's outcome in its own transaction, and moves on to
the next step while it holds the lease — for up to RUNS_SLICE_SECONDS, after which it hands
the run back to the queue so long runs do not starve short ones. Every write after a step
is fenced on the lease token: a worker that lost its lease (it stalled past expiry and
another worker took over) records nothing.

The database is the source of truth. The broker only says "look at run N"; a message
lost with a killed worker is replaced by the reaper, a duplicate message finds the run
leased or finished and does nothing. A waiting run holds no worker: it is parked with the
time it is due, and a timed message (or the reaper) brings it back.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from portal.audit import audit_batch
from portal.runs.context import StepContext
from portal.runs.models import (
    ACTIVE_RUN_STATUSES,
    DONE_STEP_STATUSES,
    Run,
    RunStatus,
    Step,
    StepStatus,
)
from portal.runs.queue import enqueue
from portal.runs.recording import finish, park, record, start_step, take_default, worker_id
from portal.runs.registry import get_step
from portal.runs.sql import batched_writes, lock_run

logger = logging.getLogger(__name__)


class _Next(Enum):
    CONTINUE = "continue"
    STOP = "stop"
    LOST = "lost"
    YIELD = "yielded"


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


def advance(run_id: int) -> str:
    """Claim the run and execute its next steps. Returns what happened, for logs and tests.

    Each step's outcome and the next step's start are recorded in one transaction, so a
    step costs one commit; the step itself runs outside any transaction. That transaction is
    the engine's whole overhead per step, so it is kept to a few plain statements: lock the
    run row and read what others may change (the lease, a cancel request), update the two
    step rows, append the two audit events (portal/audit.py).
    """
    token = f"{worker_id()}:{uuid.uuid4().hex[:12]}"
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
    step: Step | None = None
    try:
        while True:
            with transaction.atomic(), audit_batch(), batched_writes():
                # Lock the run row and prove we still hold the lease before writing.
                holder, cancel_requested = lock_run(run_id)
                if holder != token:
                    logger.warning("run %s: lease lost, recording nothing", run_id)
                    outcome = _Next.LOST
                    break
                if run is None or steps is None:
                    # Read once: while this worker holds the lease only it changes the run
                    # and its steps, except for a cancel request, which lock_run reads.
                    run = Run.objects.get(pk=run_id)
                    steps = list(run.steps.order_by("position"))
                run.cancel_requested = cancel_requested
                if finished is not None:
                    outcome = _Next.CONTINUE if record(run, *finished) else _Next.STOP
                    finished = None
                if outcome is _Next.CONTINUE and time.monotonic() > slice_ends:
                    outcome = _Next.YIELD
                if outcome is _Next.CONTINUE:
                    outcome, step = _begin_next_step(run, steps)
            if outcome is not _Next.CONTINUE or step is None:
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
        finish(run, RunStatus.CANCELLED, actor_label=worker_id())
        return _Next.STOP, None
    step = next((s for s in steps if s.status not in DONE_STEP_STATUSES), None)
    if step is None:
        finish(run, RunStatus.SUCCEEDED, actor_label=worker_id())
        return _Next.STOP, None
    if step.status in (StepStatus.FAILED, StepStatus.CANCELLED):
        return _Next.STOP, None  # a person decides what happens next
    now = timezone.now()
    if step.not_before and step.not_before > now:
        park(run, wake_at=step.not_before)
        return _Next.STOP, None
    start_step(run, step, now)
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
        take_default(run, step)
        result: Any = get_step(step.key).func(ctx)
    except Exception as exc:  # every failure is classified and recorded
        result = exc
    finally:
        lease.current = None
    return ctx, result


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
