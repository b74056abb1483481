"""`python onramp.py run` end to end: it starts everything, stops everything, and restarts.

Each launcher gets its own ONRAMP_VAR_DIR (SQLite, file broker, beat schedule) and free
ports, and runs the embedded set-up even when CI exports a PostgreSQL/Redis configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 240.0  # first start migrates a new database and seeds the sandbox
STOP_TIMEOUT = 60.0

# Production settings a CI job or a developer may have exported; the launcher test is about
# the embedded set-up, so none of them may leak into it.
PRODUCTION_VARIABLES = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "ONRAMP_SANDBOX",
    "SECRET_KEY",
    "SECRET_KEY_FILE",
    "ALLOWED_HOSTS",
    "AWS_ENDPOINT_URL",
    "ONRAMP_BROKER_DIR",
    "STATIC_ROOT",
    "MEDIA_ROOT",
    "PORTAL_BASE_URL",
)

pytestmark = pytest.mark.worker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid`, or None once it is gone (or only a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in {"Z", "X"}:  # exited, waiting to be reaped
        return None
    return int(fields[19])


def descendants(pid: int) -> dict[int, str]:
    """Every live process below `pid`, with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        found[child] = cmdline.decode(errors="replace").strip()
        stack.extend(children.get(child, []))
    return found


@dataclass
class Launcher:
    var_dir: Path
    web_port: int
    sandbox_port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    seen: dict[int, tuple[int | None, str]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        self.seen.clear()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "onramp.py", "run"],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so cleanup can reach everything if the test fails
        )
        log.close()

    def output(self, tail: int = 80) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n--- last lines of onramp.py run ---\n{self.output()}")

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.remember_processes()
            if check():
                return
            if self.proc.poll() is not None:
                self.fail(f"onramp.py run exited with {self.proc.returncode} before {what}")
            time.sleep(0.5)
        self.fail(f"timed out after {timeout:.0f} s waiting for {what}")

    def remember_processes(self) -> None:
        """Note every process the launcher has started so far, to check none outlives it."""
        assert self.proc is not None
        for pid, cmdline in descendants(self.proc.pid).items():
            if pid not in self.seen:
                self.seen[pid] = (process_start_time(pid), cmdline)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=5) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, OSError):
            return 0, ""

    def pids(self) -> dict[str, int]:
        data = json.loads((self.var_dir / "onramp-run.json").read_text())
        assert data["launcher"] == self.proc.pid
        return data["children"]

    def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.remember_processes()
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"onramp.py run did not exit within {STOP_TIMEOUT:.0f} s of {sig!r}")
        raise AssertionError("unreachable")

    def survivors(self) -> dict[int, str]:
        """Processes the launcher started that are still alive (same pid, same start time)."""
        deadline = time.monotonic() + 5
        while True:
            alive = {
                pid: cmdline
                for pid, (started, cmdline) in self.seen.items()
                if started is not None and process_start_time(pid) == started
            }
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.2)

    def assert_no_survivors(self) -> None:
        alive = self.survivors()
        if alive:
            listing = "\n".join(f"  {pid}: {cmdline}" for pid, cmdline in sorted(alive.items()))
            self.fail(f"these processes outlived onramp.py run:\n{listing}")

    def kill_everything(self) -> None:
        if self.proc is None:
            return
        self.remember_processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION_VARIABLES}
    var_dir = tmp_path / "var"
    web_port, sandbox_port = free_port(), free_port()
    env.update(
        ONRAMP_VAR_DIR=str(var_dir),
        ONRAMP_WEB_PORT=str(web_port),
        ONRAMP_SANDBOX_PORT=str(sandbox_port),
        # The suite runs inside the venv `onramp.py test` has just brought up to date.
        ONRAMP_SKIP_INSTALL="1",
        ONRAMP_PING_LOG=str(tmp_path / "pings.log"),
        ONRAMP_STOP_TIMEOUT="20",
        NO_COLOR="1",
    )
    # Not a test process: the launcher's children must run with the real configuration.
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("PYTEST_VERSION", None)
    running = Launcher(var_dir, web_port, sandbox_port, env, tmp_path / "onramp-run.log")
    yield running
    running.kill_everything()


def demo_users(var_dir: Path) -> list[tuple[int, str, str]]:
    with contextlib.closing(sqlite3.connect(var_dir / "onramp.sqlite3")) as db:
        rows = db.execute("SELECT id, username, date_joined FROM auth_user ORDER BY id")
        return list(rows)


def send_ping(launcher: Launcher) -> None:
    code = "from portal.celery import app; app.send_task('portal.ping', kwargs={'sent_at': 0.0})"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=launcher.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


class LauncherTests:
    def test_it_runs_stops_cleanly_and_reuses_the_database(self, launcher: Launcher) -> None:
        launcher.start()
        launcher.wait_for("/healthz", lambda: launcher.get("/healthz")[0] == 200, START_TIMEOUT)
        status, body = launcher.get("/healthz")
        assert json.loads(body)["status"] == "ok"

        status, body = launcher.get("/login/")
        assert status == 200
        assert "Sign in to Onramp" in body
        assert "csrfmiddlewaretoken" in body

        children = launcher.pids()
        assert {"web", "worker", "beat", "sandbox"} <= set(children), children
        for name in ("worker", "beat"):
            assert process_start_time(children[name]) is not None, f"{name} is not running"
            cmdline = Path(f"/proc/{children[name]}/cmdline").read_bytes().split(b"\0")
            assert b"celery" in b" ".join(cmdline) and name.encode() in cmdline

        # A real worker (never eager mode) takes a task from the broker and runs it.
        send_ping(launcher)
        ping_log = Path(launcher.env["ONRAMP_PING_LOG"])
        launcher.wait_for(
            "the worker to run a ping", lambda: ping_log.exists() and ping_log.stat().st_size, 60
        )
        launcher.wait_for(
            "beat to write its schedule",
            lambda: any(launcher.var_dir.glob("celerybeat-schedule*")),
            30,
        )
        users_before = demo_users(launcher.var_dir)
        assert {"requester", "security", "governance", "engineer", "finops", "admin"} <= {
            username for _, username, _ in users_before
        }
        assert len(launcher.seen) >= 4

        code = launcher.stop(signal.SIGINT)
        assert code == 0, launcher.output()
        launcher.assert_no_survivors()
        assert not (launcher.var_dir / "onramp-run.json").exists()

        # Again: same database, same users, nothing duplicated; SIGTERM also stops cleanly.
        launcher.start()
        launcher.wait_for("/healthz", lambda: launcher.get("/healthz")[0] == 200, START_TIMEOUT)
        assert demo_users(launcher.var_dir) == users_before
        assert "Applying" not in launcher.output(tail=40)  # nothing left to migrate
        code = launcher.stop(signal.SIGTERM)
        assert code == 0, launcher.output()
        launcher.assert_no_survivors()

    def test_it_stops_everything_and_fails_when_a_child_dies(self, launcher: Launcher) -> None:
        launcher.start()
        launcher.wait_for("/healthz", lambda: launcher.get("/healthz")[0] == 200, START_TIMEOUT)
        launcher.remember_processes()
        os.kill(launcher.pids()["beat"], signal.SIGKILL)
        try:
            code = launcher.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            launcher.fail("onramp.py run kept running after beat died")
        assert code != 0
        assert "beat exited unexpectedly" in launcher.output()
        launcher.assert_no_survivors()

    def test_it_refuses_to_start_when_the_web_port_is_taken(self, launcher: Launcher) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", launcher.web_port))
            busy.listen()
            launcher.start()
            code = launcher.proc.wait(timeout=60)
        assert code != 0
        output = launcher.output()
        assert f"port {launcher.web_port}" in output and "already in use" in output
        assert not (launcher.var_dir / "onramp.sqlite3").exists()  # it started nothing
