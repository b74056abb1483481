"""Real Celery workers (and beat) for the tests that need them.

They run as separate processes against the test database and the test broker — the
embedded file-system broker by default, Redis when CELERY_BROKER_URL says so — exactly as
`celery -A portal worker` runs in production. Nothing about the engine is faked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from portal.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent

# Short intervals so the guarantees show in seconds, not minutes.
FAST_RUNS = {
    "RUNS_LEASE_SECONDS": "3",
    "RUNS_HEARTBEAT_SECONDS": "0.5",
    "RUNS_REAPER_INTERVAL_SECONDS": "1",
    "RUNS_ENQUEUE_GRACE_SECONDS": "1",
    "RUNS_BACKOFF_BASE_SECONDS": "0.2",
    "RUNS_BACKOFF_MAX_SECONDS": "1",
}


def database_url() -> str:
    """The URL of the database this test session uses (the test database)."""
    d = connection.settings_dict
    if d["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{d['NAME']}"
    user = quote(d.get("USER") or "")
    password = quote(d.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else f"{user}@"
    return f"postgres://{auth}{d.get('HOST') or '127.0.0.1'}:{d.get('PORT') or 5432}/{d['NAME']}"


def purge_broker() -> None:
    celery_app.control.purge()


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: the worker and its pool children."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10) -> None:
        if not self.alive():
            return
        self.kill(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.popen.wait(5)


@dataclass
class Cluster:
    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "DATABASE_URL": database_url(),
                "ONRAMP_VAR_DIR": str(settings.VAR_DIR),
                "ONRAMP_BROKER_DIR": str(settings.BROKER_DIR),
                "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
                "AWS_ENDPOINT_URL": settings.AWS_ENDPOINT_URL,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(FAST_RUNS)
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        log = self.tmp / f"{name}.log"
        fh = log.open("wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "portal", *args],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        proc = Proc(name=name, popen=popen, log=log)
        self.procs.append(proc)
        return proc

    def worker(self, name: str = "w1", *, concurrency: int = 1, **env: str) -> Proc:
        proc = self._spawn(
            name,
            [
                "worker",
                "-n",
                f"{name}@%h",
                "-c",
                str(concurrency),
                "-l",
                "info",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-I",
                "tests.runs.worker_steps,tests.shape_app.kinds",
            ],
            self.env(**env),
        )
        wait_for(
            lambda: "ready." in proc.output() or not proc.alive(), 60, f"worker {name} to start"
        )
        assert proc.alive(), f"worker {name} died at start:\n{proc.output()[-3000:]}"
        return proc

    def beat(self, **env: str) -> Proc:
        schedule = self.tmp / "celerybeat-schedule"
        proc = self._spawn("beat", ["beat", "-l", "info", "-s", str(schedule)], self.env(**env))
        wait_for(lambda: "beat: Starting" in proc.output() or not proc.alive(), 60, "beat to start")
        assert proc.alive(), f"beat died at start:\n{proc.output()[-3000:]}"
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()[-4000:]}" for p in self.procs)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def cluster(transactional_db, tmp_path: Path) -> Iterator[Cluster]:
    """Start workers/beat on demand; all are stopped before the database is flushed."""
    purge_broker()
    c = Cluster(tmp=tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
