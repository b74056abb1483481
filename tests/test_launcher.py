"""`python onramp.py run` end to end: it starts everything, stops everything, restarts a
service that dies or is reported jammed (up to a limit), and starts again on the same data.

Each launcher gets its own ONRAMP_VAR_DIR (SQLite, file broker, beat schedule) and free
ports, and runs the embedded set-up even when CI exports a PostgreSQL/Redis configuration.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
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

    def start(self, *args: str) -> None:
        self.seen.clear()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "onramp.py", "run", *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so cleanup can reach everything if the test fails
        )
        log.close()

    def count(self, text: str) -> int:
        """How many times `text` occurs in everything the launcher printed."""
        return self.log_path.read_text(errors="replace").count(text)

    def kill_service(self, name: str) -> int:
        """SIGKILL a service's whole process group; returns the pid it had."""
        self.remember_processes()
        pid = self.pids()[name]
        os.killpg(pid, signal.SIGKILL)
        return pid

    def wait_for_restart(self, name: str, old_pid: int, timeout: float = 90) -> int:
        def restarted() -> bool:
            try:
                return self.pids().get(name, old_pid) != old_pid
            except (OSError, ValueError):
                return False  # being rewritten

        self.wait_for(f"{name} to be restarted", restarted, timeout)
        return self.pids()[name]

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


def start_environment_check(launcher: Launcher) -> int:
    """Start an environment check of dev as the scheduler account; returns the run's id."""
    code = (
        "import django; django.setup()\n"
        "from portal.kinds import environment_check\n"
        "from portal.roles import scheduler_user\n"
        "from portal.runs.api import run_start\n"
        "run = run_start(kind=environment_check, actor=scheduler_user(),"
        " params={'environments': ['dev']})\n"
        "print(run.pk)\n"
    )
    env = {**launcher.env, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def run_status(launcher: Launcher, run_id: int) -> str:
    with contextlib.closing(sqlite3.connect(launcher.var_dir / "onramp.sqlite3")) as db:
        row = db.execute("SELECT status FROM runs_run WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else ""


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

    def test_it_restarts_what_dies_or_jams_and_stops_during_a_back_off(
        self, launcher: Launcher
    ) -> None:
        launcher.env.update(
            ONRAMP_RESTART_BACKOFF="3",  # long enough to stop the launcher inside one
            ONRAMP_RESTART_LIMIT="5",
            ONRAMP_HEALTH_GRACE="2",
        )
        health = launcher.var_dir / "runs-health.json"
        reset = sandbox_accepts_reset()
        launcher.start(*(["--reset-sandbox"] if reset else []))
        launcher.wait_for("/healthz", lambda: launcher.get("/healthz")[0] == 200, START_TIMEOUT)
        write_atomically(health, "{not json")  # garbled: read every few seconds, ignored
        first = launcher.pids()

        # The sandbox: restarted, up again once it says "sandbox ready", never reset again.
        if reset:
            assert "--reset" in cmdline(first["sandbox"])
        launcher.kill_service("sandbox")
        sandbox = launcher.wait_for_restart("sandbox", first["sandbox"])
        launcher.wait_for(
            "the sandbox to be up again", lambda: launcher.count("sandbox is up again") == 1, 90
        )
        assert "--reset" not in cmdline(sandbox)
        assert "sandbox exited unexpectedly (killed by SIGKILL); restarting it in 3 s" in (
            launcher.output()
        )

        # The worker: restarted with the same command, and the new one takes work.
        worker_command = cmdline(first["worker"])
        launcher.kill_service("worker")
        worker = launcher.wait_for_restart("worker", first["worker"])
        assert cmdline(worker) == worker_command
        launcher.wait_for(
            "the worker to be up again", lambda: launcher.count("worker is up again") == 1, 90
        )
        assert "worker exited unexpectedly (killed by SIGKILL); restarting it in 3 s" in (
            launcher.output()
        )
        send_ping(launcher)
        ping_log = Path(launcher.env["ONRAMP_PING_LOG"])
        launcher.wait_for(
            "the restarted worker to run a ping",
            lambda: ping_log.exists() and ping_log.stat().st_size > 0,
            60,
        )
        ran_in = int(ping_log.read_text().split()[3])
        assert ran_in == worker or ran_in in descendants(worker), "a stale process ran it"
        assert launcher.pids()["web"] == first["web"]  # the others kept running

        # The web server: restarted and serving again.
        launcher.kill_service("web")
        launcher.wait_for_restart("web", first["web"])
        launcher.wait_for(
            "/healthz after web restarted", lambda: launcher.get("/healthz")[0] == 200, 90
        )
        assert "web exited unexpectedly (killed by SIGKILL)" in launcher.output()

        # A jammed worker report: acted on once, again only for a report made later.
        stalled = "worker made no progress (test jam {}): restarting it"
        time.sleep(2.5)  # the worker's restart is past the grace
        write_health(health, "stalled", "test jam 1")
        launcher.wait_for("the jam reaction", lambda: launcher.count(stalled.format(1)) == 1, 30)
        worker_2 = launcher.wait_for_restart("worker", worker)
        time.sleep(8)  # two more reads of the same report
        assert launcher.count(stalled.format(1)) == 1, launcher.output()
        assert launcher.pids()["worker"] == worker_2
        write_health(health, "ok", "")
        time.sleep(0.5)
        write_health(health, "stalled", "test jam 2")
        launcher.wait_for("the second reaction", lambda: launcher.count(stalled.format(2)) == 1, 30)
        launcher.wait_for_restart("worker", worker_2)
        assert launcher.count("restarting it") == 5, launcher.output()

        # SIGTERM while beat waits out its back-off: all stops, beat never starts again.
        launcher.kill_service("beat")
        launcher.wait_for(
            "beat's back-off", lambda: launcher.count("beat exited unexpectedly") == 1, 10
        )
        started = time.monotonic()
        code = launcher.stop(signal.SIGTERM)
        assert code == 0, launcher.output()
        assert time.monotonic() - started < 25
        assert launcher.count("beat restarted") == 0, launcher.output()
        launcher.assert_no_survivors()
        assert not (launcher.var_dir / "onramp-run.json").exists()

    def test_a_worker_whose_pool_processes_were_all_killed_is_found_and_replaced(
        self, launcher: Launcher
    ) -> None:
        """The jam, end to end: prefork's new pool processes wait on the lock a killed one
        held, so the worker takes no work though it answers pings. Beat's watchdog finds
        runs due with no worker progress, the launcher restarts the worker, the run ends."""
        launcher.env.update(
            RUNS_STALL_SECONDS="5",
            RUNS_REAPER_INTERVAL_SECONDS="1",
            RUNS_ENQUEUE_GRACE_SECONDS="2",
            ONRAMP_HEALTH_GRACE="2",
        )
        launcher.start()
        launcher.wait_for("/healthz", lambda: launcher.get("/healthz")[0] == 200, START_TIMEOUT)
        launcher.wait_for("the worker", lambda: launcher.count("ready.") > 0, 90)
        worker = launcher.pids()["worker"]
        pool = [pid for pid, _ in descendants(worker).items() if pid != worker]
        assert pool, "the worker has no pool processes"
        for pid in pool:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(2)
        started = time.monotonic()
        run_id = start_environment_check(launcher)

        launcher.wait_for(
            "the run to finish", lambda: run_status(launcher, run_id) == "succeeded", 150
        )

        took = time.monotonic() - started
        jammed = launcher.count("worker made no progress") > 0
        if jammed:
            assert launcher.pids()["worker"] != worker, launcher.output()
            assert "no worker has taken work" in launcher.output()
        else:  # the pool recovered by itself this time: then it never waited for a stall
            assert took < 5 + 2, (took, launcher.output())
        assert launcher.stop(signal.SIGTERM) == 0, launcher.output()

    def test_it_gives_up_on_a_service_that_keeps_dying(self, launcher: Launcher) -> None:
        launcher.env.update(ONRAMP_RESTART_LIMIT="2", ONRAMP_RESTART_BACKOFF="0.2")
        launcher.start()
        launcher.wait_for("/healthz", lambda: launcher.get("/healthz")[0] == 200, START_TIMEOUT)
        for _ in range(2):
            old = launcher.kill_service("beat")
            launcher.wait_for_restart("beat", old, 30)
        launcher.kill_service("beat")
        try:
            code = launcher.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            launcher.fail("onramp.py run kept running after beat died past the limit")
        assert code != 0
        output = launcher.output()
        assert launcher.count("beat restarted") == 2, output
        assert "beat exited unexpectedly (killed by SIGKILL) after 2 restarts" in output
        assert "giving up" in output
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


class ResetSandboxTests:
    """`run --reset-sandbox` reaches the sandbox's first start only (argv level)."""

    def test_only_the_first_start_resets(self) -> None:
        onramp = load_onramp()
        first, again = onramp.sandbox_commands(True)
        assert first[-2:] == ["sandbox", "--reset"]
        assert again[-1] == "sandbox" and "--reset" not in again
        assert onramp.sandbox_commands(False) == (again, again)

    def test_the_flag_reaches_cmd_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        onramp = load_onramp()
        calls: list[bool] = []
        monkeypatch.setattr(
            onramp, "cmd_run", lambda reset_sandbox=False: calls.append(reset_sandbox) or 0
        )
        assert onramp.main(["run", "--reset-sandbox"]) == 0
        assert onramp.main(["run"]) == 0
        assert calls == [True, False]
        assert onramp.main(["run", "--reset"]) == onramp.EXIT_USAGE


def load_onramp() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("onramp_launcher", ROOT / "onramp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def sandbox_accepts_reset() -> bool:
    """Whether `manage.py sandbox` has its --reset option yet (another change adds it)."""
    source = (ROOT / "portal" / "management" / "commands" / "sandbox.py").read_text()
    return '"--reset"' in source


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp-test")
    tmp.write_text(text)
    tmp.replace(path)


def write_health(path: Path, worker: str, reason: str) -> None:
    checked_at = datetime.now(UTC).isoformat()
    write_atomically(
        path, json.dumps({"checked_at": checked_at, "worker": worker, "reason": reason})
    )
