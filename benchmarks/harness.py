"""What the benchmarks share: the portal's processes in a temporary var folder (sandbox,
Celery workers, a web server), a free port, a percentile, and waiting for a run to end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


class Stack:
    """The portal's processes in a temporary var folder; each logs to <folder>/<name>.log."""

    def __init__(self, prefix: str = "onramp-bench-") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.sandbox_port = free_port()
        self.web_port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "ONRAMP_VAR_DIR": str(self.tmp),
                "ONRAMP_SANDBOX_PORT": str(self.sandbox_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.pop("PYTEST_VERSION", None)
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []
        self.workers: list[str] = []

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def spawn(self, name: str, args: list[str], ready: str, timeout: float = 90) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        self.names.append(name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready in self.log(name):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start:\n{self.log(name)[-3000:]}")

    def start_sandbox(self) -> None:
        """Migrate, seed the environments and start the sandbox AWS."""
        self.manage("migrate", "-v0")
        self.manage("seed_environments")
        self.spawn("sandbox", [sys.executable, "manage.py", "sandbox"], "sandbox ready")

    def add_worker(self, *, concurrency: int, options: tuple[str, ...] = ()) -> str:
        name = f"worker{len(self.workers) + 1}"
        command = [sys.executable, "-m", "celery", "-A", "portal", "worker", "-n", f"{name}@%h"]
        command += ["-c", str(concurrency), "-l", "info", "--without-gossip", "--without-mingle"]
        self.spawn(name, [*command, *options], "ready.")
        self.workers.append(name)
        return name

    def start_web(self) -> None:
        address = f"127.0.0.1:{self.web_port}"
        command = [sys.executable, "manage.py", "runserver", address, "--noreload"]
        self.spawn("web", command, "Quit the server")

    def crashed(self) -> list[str]:
        """Processes that died, or logged a step crash or a traceback."""
        found = []
        for name, proc in zip(self.names, self.procs, strict=True):
            text = self.log(name)
            if proc.poll() is not None or "Traceback" in text or "crashed:" in text:
                found.append(name)
        return found

    def stop(self) -> None:
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)


def wait_terminal(run_id: int, timeout: float = 300, poll: float = 0.02) -> Any:
    """Wait for the run to end, polling lightly so the observer does not slow the workers."""
    from portal.runs.models import TERMINAL_RUN_STATUSES, Run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Run.objects.filter(pk=run_id).values_list("status", flat=True).get()
        if status in TERMINAL_RUN_STATUSES:
            return Run.objects.get(pk=run_id)
        time.sleep(poll)
    raise RuntimeError(f"run {run_id} did not finish in {timeout:.0f} s")
