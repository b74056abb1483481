"""Diagnostic Celery tasks. `ping` proves a real worker is consuming from the broker."""

from __future__ import annotations

import os
import time

from celery import Task, shared_task

# When set, every ping appends one line to this file: "<task id> <sent_at> <ran_at> <pid>".
# The broker soak benchmark and the launcher test count deliveries with it, so neither
# needs a result backend.
PING_LOG_ENV = "ONRAMP_PING_LOG"


@shared_task(name="portal.ping", bind=True, ignore_result=True)
def ping(self: Task, sent_at: float | None = None) -> float:
    """Return the time (seconds since the epoch) at which a worker ran this ping."""
    ran_at = time.time()
    path = os.environ.get(PING_LOG_ENV)
    if path:
        sent = "-" if sent_at is None else f"{sent_at:.6f}"
        line = f"{self.request.id} {sent} {ran_at:.6f} {os.getpid()}\n".encode()
        # One write(2) on an O_APPEND descriptor: lines from the pool's processes never mix.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    return ran_at
