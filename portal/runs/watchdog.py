"""The watchdog: the reaper and the check that workers make progress, run where a jammed
worker cannot stop them — a thread in Celery beat's process (`portal.celery`), not a task
a worker would have to pick up.

Every RUNS_REAPER_INTERVAL_SECONDS it re-enqueues the runs a worker should be working on
(`dispatch.reap`) and asks whether work is waiting that no worker has taken for
RUNS_STALL_SECONDS (`worker_stall`). The answer goes to the database's readers (the
dashboard shows it to engineers and admins) and to `<var>/runs-health.json`, which the
launcher reads to restart a jammed worker:

    {"checked_at": "<ISO-8601 UTC>", "worker": "ok" | "stalled", "reason": "<text>"}
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models import Max, Q
from django.utils import timezone

from portal.runs.dispatch import reap
from portal.runs.models import ACTIVE_RUN_STATUSES, Run, RunStatus

logger = logging.getLogger(__name__)

HEALTH_FILE = "runs-health.json"


@dataclass(frozen=True)
class Stall:
    """Work is waiting and no worker has taken any for `idle` (None: never)."""

    waiting: int
    idle: timedelta | None

    @property
    def message(self) -> str:
        if self.idle is None:
            since = "no worker has taken work yet"
        else:
            since = f"no worker has taken work for {_minutes(self.idle)}"
        runs = "1 run is" if self.waiting == 1 else f"{self.waiting} runs are"
        return f"{since}; {runs} waiting for a worker."


def worker_stall(now: datetime | None = None) -> Stall | None:
    """Whether the workers are stalled: runs have been due for RUNS_STALL_SECONDS (pending,
    woken, or left by a worker whose lease expired) and no worker has claimed or renewed
    any run in that time. None when they are not."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.RUNS_STALL_SECONDS)
    free = Q(lease_owner="") | Q(lease_expires_at__lt=now)
    overdue = (
        Run.objects.filter(status__in=ACTIVE_RUN_STATUSES)
        .filter(free)
        .filter(
            Q(status=RunStatus.PENDING, created_at__lt=limit)
            | Q(status=RunStatus.WAITING, wake_at__lt=limit)
            | Q(status=RunStatus.RUNNING, lease_expires_at__lt=limit)
        )
    )
    if not overdue.exists():
        return None
    last = Run.objects.aggregate(at=Max("heartbeat_at"))["at"]
    if last is not None and last >= limit:
        return None  # workers are taking work; these runs are next in line
    return Stall(waiting=overdue.count(), idle=(now - last) if last is not None else None)


def check(var_dir: Path | None = None) -> Stall | None:
    """One round: reap, look for a stall, write the health file."""
    reap()
    stall = worker_stall()
    write_health(stall, var_dir or Path(settings.VAR_DIR))
    if stall is not None:
        logger.warning("workers stalled: %s", stall.message)
    return stall


def write_health(stall: Stall | None, var_dir: Path) -> None:
    data = {
        "checked_at": timezone.now().isoformat(),
        "worker": "stalled" if stall else "ok",
        "reason": stall.message if stall else "",
    }
    path = var_dir / HEALTH_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


class Watchdog(threading.Thread):
    """The watchdog loop, as a daemon thread of the process that starts it (beat)."""

    def __init__(self, interval: float | None = None) -> None:
        super().__init__(name="runs-watchdog", daemon=True)
        self.interval = interval or settings.RUNS_REAPER_INTERVAL_SECONDS
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                close_old_connections()
                check()
            except Exception:  # the loop must outlive a database blip
                logger.exception("runs watchdog: the check failed; trying again")
                connection.close()

    def stop(self) -> None:
        self.stopped.set()


def _minutes(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds // 60} minutes"
