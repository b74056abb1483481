#!/usr/bin/env python3
"""Onramp's single entry point. Standard library only: it runs before the venv exists.

    python3 onramp.py run            set up, then run and supervise sandbox, web, worker, beat
    python3 onramp.py run --reset-sandbox   the same, the sandbox AWS starting clean
    python3 onramp.py test [ARGS]    set up, then run the whole test suite (ARGS go to pytest)
    python3 onramp.py check          ruff, import contracts, mypy, makemigrations --check

Set-up creates .venv when it is missing and installs `-e .[dev]` whenever pyproject.toml
changed since the last install (a hash is kept in .venv). ONRAMP_SKIP_INSTALL=1 skips the
install when a venv exists. `run` reads ONRAMP_WEB_PORT (8000), ONRAMP_SANDBOX_PORT (5055),
ONRAMP_START_TIMEOUT (180 s) and ONRAMP_STOP_TIMEOUT (20 s).

`run` restarts a service that stops (sandbox, web, worker, beat; never the set-up steps,
which fail fast) with the same command and environment after a back-off of
ONRAMP_RESTART_BACKOFF (1 s), doubling with each restart in the window up to 30 s. After
ONRAMP_RESTART_LIMIT (5) restarts of one service within ONRAMP_RESTART_WINDOW (600 s), one
more stop makes it stop everything and exit 1. A restarted sandbox counts as up once it says
"sandbox ready" again. Every few seconds it reads <var>/runs-health.json,
{"checked_at": ISO-8601 UTC, "worker": "ok" | "stalled", "reason": text}: a "stalled" report
made more than ONRAMP_HEALTH_GRACE (30 s) after the worker's last (re)start restarts the
worker (SIGTERM to its process group, SIGKILL after ONRAMP_STOP_TIMEOUT), which counts
towards the limit. `--reset-sandbox` passes --reset to the sandbox's first start only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_BIN = VENV / "bin"
VENV_PYTHON = VENV_BIN / "python"
INSTALL_STAMP = VENV / ".onramp-install.sha256"
INSTALL_LOCK = VENV / ".onramp-install.lock"
EXTRAS = "dev"
HOST = "127.0.0.1"
CHROMIUM = Path("/usr/bin/chromium")

EXIT_USAGE = 2
EXIT_CHILD_DIED = 1

HEALTH_FILE = "runs-health.json"  # written by the runs health check, read by `run`
HEALTH_POLL_SECONDS = 3.0

_print_lock = threading.Lock()


class LauncherError(Exception):
    """A problem the launcher explains in one message and exits on."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    with _print_lock:
        print(f"onramp: {message}", flush=True)


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise LauncherError(f"{name} must be a whole number, not {raw!r}", EXIT_USAGE) from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise LauncherError(f"{name} must be a number of seconds, not {raw!r}", EXIT_USAGE)
    return value


def env_flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise LauncherError(f"{name} must be true or false, not {raw!r}", EXIT_USAGE)


def var_dir() -> Path:
    return Path(os.environ.get("ONRAMP_VAR_DIR") or ROOT / "var")


# --- Set-up: venv and dependencies --------------------------------------------------------


def requirements_hash() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"\0[{EXTRAS}]\0{sys.version_info[:2]}".encode())
    return digest.hexdigest()


def ensure_venv() -> None:
    """Create .venv if needed and install the project when pyproject.toml changed."""
    # The system python3 may be older than the project's floor; say so plainly.
    if sys.version_info < (3, 11):  # noqa: UP036
        raise LauncherError("Onramp needs Python 3.11 or newer.", EXIT_USAGE)
    if not VENV_PYTHON.exists():
        say(f"creating the virtualenv in {VENV.relative_to(ROOT)}/")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        INSTALL_STAMP.unlink(missing_ok=True)
    if env_flag("ONRAMP_SKIP_INSTALL", False):
        say("ONRAMP_SKIP_INSTALL is set: not installing dependencies")
        return
    wanted = requirements_hash()
    import fcntl  # POSIX only, like the rest of the launcher

    with INSTALL_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two launchers never install at once
        if INSTALL_STAMP.exists() and INSTALL_STAMP.read_text().strip() == wanted:
            return
        say(f"installing dependencies: pip install -e .[{EXTRAS}] (minutes, the first time)")
        result = subprocess.run(
            [str(VENV_PYTHON), "-m", "pip", "install", "--quiet", "-e", f".[{EXTRAS}]"],
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            raise LauncherError(f"pip install failed (exit code {result.returncode})")
        INSTALL_STAMP.write_text(wanted + "\n")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    env.pop("PYTHONHOME", None)
    return env


def manage(*args: str) -> list[str]:
    return [str(VENV_PYTHON), str(ROOT / "manage.py"), *args]


# --- Supervision ---------------------------------------------------------------------------

_COLOURS = ["36", "35", "33", "32", "34", "31"]


class Child:
    """One process the launcher started, in its own process group, output prefixed."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], colour: str) -> None:
        self.name = name
        self.argv = argv
        self.colour = colour
        self.lines: list[str] = []
        self._watchers: list[tuple[re.Pattern[str], threading.Event]] = []
        self._lock = threading.Lock()
        use_colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        self.prefix = f"\033[{colour}m{name:<8}|\033[0m " if use_colour else f"{name:<8}| "
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop it and all it forked
            text=True,
            errors="replace",
            bufsize=1,
        )
        self.pid = self.proc.pid
        self._reader = threading.Thread(target=self._pump, name=f"read-{name}", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with _print_lock:
                sys.stdout.write(f"{self.prefix}{line}\n")
                sys.stdout.flush()
            with self._lock:
                self.lines.append(line)
                del self.lines[:-200]
                for pattern, event in self._watchers:
                    if pattern.search(line):
                        event.set()

    def watch(self, pattern: str) -> threading.Event:
        """An event set once a line of output matches `pattern` (past lines count too)."""
        event = threading.Event()
        compiled = re.compile(pattern)
        with self._lock:
            if any(compiled.search(line) for line in self.lines):
                event.set()
            self._watchers.append((compiled, event))
        return event

    def running(self) -> bool:
        return self.proc.poll() is None

    def group_alive(self) -> bool:
        """True while any process in the child's process group still exists."""
        self.proc.poll()  # reap the leader if it has exited, so a zombie does not count
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def finish_output(self, timeout: float = 2) -> None:
        self._reader.join(timeout=timeout)


@dataclass
class RestartPolicy:
    """How often a service that stops may be started again before the launcher gives up."""

    limit: int = 5  # restarts allowed per service within `window`...
    window: float = 600.0  # ...seconds; one more stop and everything stops
    backoff: float = 1.0  # the first restart waits this long, then 2x, 4x, ...
    backoff_max: float = 30.0  # ...up to this
    health_grace: float = 30.0  # a jam report counts only this long after a (re)start

    @classmethod
    def from_env(cls) -> RestartPolicy:
        policy = cls(
            limit=env_int("ONRAMP_RESTART_LIMIT", cls.limit),
            window=env_float("ONRAMP_RESTART_WINDOW", cls.window),
            backoff=env_float("ONRAMP_RESTART_BACKOFF", cls.backoff),
            health_grace=env_float("ONRAMP_HEALTH_GRACE", cls.health_grace),
        )
        if policy.limit < 0:
            raise LauncherError("ONRAMP_RESTART_LIMIT must be 0 or more", EXIT_USAGE)
        return policy

    def delay(self, recent_restarts: int) -> float:
        return min(self.backoff * 2 ** min(recent_restarts, 32), self.backoff_max)


class Service:
    """A long-running child (sandbox, web, worker, beat) the launcher keeps running."""

    def __init__(
        self, name: str, argv: list[str], restart_argv: list[str], ready: str | None
    ) -> None:
        self.name = name
        self.argv = argv  # the first start
        self.restart_argv = restart_argv  # every later start (no one-off flags)
        self.ready_pattern = ready
        self.child: Child | None = None
        self.ready_event = threading.Event()
        self.ready_deadline: float | None = None  # only while a restart is not yet up
        self.started_at = datetime.now(UTC)  # wall clock, compared with health reports
        self.restarts: deque[float] = deque()  # monotonic times of restarts in the window
        self.restart_at: float | None = None  # set while waiting out a back-off
        self.stop_deadline: float | None = None  # set while being stopped to restart
        self.killed = False

    def is_ready(self) -> bool:
        return self.child is not None and self.child.running() and self.ready_event.is_set()

    @property
    def live(self) -> bool:
        """Started and not (being) replaced."""
        return (
            self.child is not None
            and self.restart_at is None
            and self.stop_deadline is None
            and self.child.running()
        )


class Supervisor:
    """Starts children, restarts services that stop, and stops them all on request."""

    def __init__(self, policy: RestartPolicy | None = None, stop_timeout: float = 20) -> None:
        self.children: list[Child] = []  # set-up steps while they run
        self.services: list[Service] = []
        self.retired: list[Child] = []  # replaced children whose group may linger
        self.stopping = threading.Event()
        self.stop_reason = ""
        self.env = child_env()
        self.policy = policy or RestartPolicy()
        self.stop_timeout = stop_timeout
        self.start_timeout = 180.0
        self.health_file = var_dir() / HEALTH_FILE
        self._next_health_check = 0.0
        self._acted_on: datetime | None = None  # the last health report restarted for

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            if not self.stopping.is_set():
                self.stop_reason = signal.Signals(signum).name
                self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGHUP, handler)

    def _colour(self) -> str:
        return _COLOURS[(len(self.children) + len(self.services)) % len(_COLOURS)]

    def start(self, name: str, argv: list[str]) -> Child:
        """Start a set-up step (see run_step)."""
        child = Child(name, argv, self.env, self._colour())
        self.children.append(child)
        self.write_pids()
        return child

    def run_step(self, name: str, argv: list[str]) -> Child:
        """Run a set-up command to completion; stop everything if it fails."""
        child = self.start(name, argv)
        while child.running():
            if self.stopping.wait(0.1):
                raise StopRequested
        child.finish_output()
        self.children.remove(child)
        self.write_pids()
        if child.proc.returncode != 0:
            raise LauncherError(f"{name} failed (exit code {child.proc.returncode})")
        return child

    def start_service(
        self,
        name: str,
        argv: list[str],
        *,
        restart_argv: list[str] | None = None,
        ready: str | None = None,
    ) -> Service:
        """Start a service; it is restarted (with `restart_argv`, default `argv`) if it stops."""
        service = Service(name, argv, restart_argv or argv, ready)
        service.child = Child(name, argv, self.env, self._colour())
        self._watch_ready(service)
        self.services.append(service)
        self.write_pids()
        return service

    def _watch_ready(self, service: Service) -> None:
        assert service.child is not None
        service.started_at = datetime.now(UTC)
        if service.ready_pattern is None:
            service.ready_event = threading.Event()
            service.ready_event.set()
        else:
            service.ready_event = service.child.watch(service.ready_pattern)

    # --- the supervision loop ---------------------------------------------------------

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Wait for `ready()` while supervising; fail if time runs out or a stop is asked."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.tick()
            if time.monotonic() > deadline:
                raise LauncherError(f"{what} was not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def supervise(self) -> None:
        """Supervise until a stop is asked (raises StopRequested) or a service gives out
        (raises GaveUp)."""
        while True:
            self.tick()
            self.stopping.wait(0.2)

    def tick(self) -> None:
        """One round: notice stops, restart what is due, react to health reports."""
        if self.stopping.is_set():
            raise StopRequested
        now = time.monotonic()
        for service in self.services:
            child = service.child
            assert child is not None
            if service.stop_deadline is not None:
                self._continue_stopping(service, now)
            elif service.restart_at is not None:
                if now >= service.restart_at:
                    self._restart(service)
            elif not child.running():
                self._died(service, f"exited unexpectedly ({describe_exit(child.proc.returncode)})")
            elif service.ready_deadline is not None:
                if service.ready_event.is_set():
                    service.ready_deadline = None
                    say(f"{service.name} is up again")
                elif now > service.ready_deadline:
                    child.signal_group(signal.SIGKILL)
                    child.proc.wait()
                    self._died(
                        service, f"was not ready {self.start_timeout:.0f} s after it started"
                    )
            if self.stopping.is_set():
                raise StopRequested
        self.retired = [child for child in self.retired if child.group_alive()]
        if now >= self._next_health_check:
            self._next_health_check = now + HEALTH_POLL_SECONDS
            self.check_health()

    def _count_restart(self, service: Service, why: str) -> int:
        """Record one more restart of `service`; give up past the limit. Returns how many
        restarts it had in the window before this one."""
        now = time.monotonic()
        while service.restarts and now - service.restarts[0] > self.policy.window:
            service.restarts.popleft()
        recent = len(service.restarts)
        if recent >= self.policy.limit:
            raise GaveUp(service, why, recent)
        service.restarts.append(now)
        return recent

    def _died(self, service: Service, why: str) -> None:
        assert service.child is not None
        service.ready_deadline = None
        service.child.signal_group(signal.SIGTERM)  # whatever it forked, e.g. pool processes
        recent = self._count_restart(service, why)
        delay = self.policy.delay(recent)
        service.restart_at = time.monotonic() + delay
        when = (datetime.now() + timedelta(seconds=delay)).strftime("%H:%M:%S")
        say(
            f"{service.name} {why}; restarting it in {delay:g} s at "
            f"{when} (restart {recent + 1} of {self.policy.limit} allowed within "
            f"{self.policy.window:g} s)"
        )
        self.write_pids()

    def _restart(self, service: Service) -> None:
        old = service.child
        assert old is not None
        if old.group_alive():  # leftovers that ignored SIGTERM during the back-off
            old.signal_group(signal.SIGKILL)
            deadline = time.monotonic() + 5
            while old.group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        old.finish_output(timeout=0.5)
        if old.group_alive():
            self.retired.append(old)
        service.restart_at = None
        service.stop_deadline = None
        service.killed = False
        service.child = Child(service.name, service.restart_argv, self.env, old.colour)
        self._watch_ready(service)
        if service.ready_pattern is not None:
            service.ready_deadline = time.monotonic() + self.start_timeout
        say(f"{service.name} restarted (pid {service.child.pid})")
        self.write_pids()

    def restart_now(self, service: Service, why: str) -> None:
        """Stop a running service (SIGTERM its group, SIGKILL after the stop timeout) and
        start it again once it is gone; counts towards the restart limit."""
        assert service.child is not None
        self._count_restart(service, why)
        service.ready_deadline = None
        service.stop_deadline = time.monotonic() + self.stop_timeout
        service.killed = False
        service.child.signal_group(signal.SIGTERM)
        self.write_pids()

    def _continue_stopping(self, service: Service, now: float) -> None:
        child = service.child
        assert child is not None and service.stop_deadline is not None
        if not child.group_alive():
            self._restart(service)
        elif now > service.stop_deadline and not service.killed:
            say(f"{service.name} did not stop within {self.stop_timeout:g} s: killing it")
            child.signal_group(signal.SIGKILL)
            service.killed = True

    def check_health(self) -> None:
        """Restart the worker when `<var>/runs-health.json` says it is stalled.

        The file is {"checked_at": ISO-8601 UTC, "worker": "ok" | "stalled", "reason": ...}.
        A report counts only when it was made more than the grace after the worker's last
        (re)start, so one report is acted on once. A missing or garbled file is ignored.
        """
        worker = next((s for s in self.services if s.name == "worker"), None)
        if worker is None or not worker.live:
            return
        try:
            report = json.loads(self.health_file.read_text())
            if report.get("worker") != "stalled":
                return
            checked_at = datetime.fromisoformat(str(report["checked_at"]))
            reason = str(report.get("reason") or "no reason given")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return
        if checked_at.tzinfo is None:
            checked_at = checked_at.replace(tzinfo=UTC)
        if checked_at <= worker.started_at + timedelta(seconds=self.policy.health_grace):
            return
        if checked_at == self._acted_on:  # even one dated in the future counts once
            return
        self._acted_on = checked_at
        say(f"worker made no progress ({reason}): restarting it")
        self.restart_now(worker, f"made no progress ({reason})")

    # --- stopping -----------------------------------------------------------------------

    def all_children(self) -> list[Child]:
        services = [s.child for s in self.services if s.child is not None]
        return [*self.retired, *self.children, *services]

    def stop_all(self, timeout: float) -> None:
        """Stop every child: SIGTERM, then SIGKILL whatever is left after `timeout`.

        The first SIGTERM goes to each child itself, so a Celery worker makes its warm
        shutdown and lets its pool finish the tasks in hand; whatever a child leaves behind
        in its process group is then sent SIGTERM too, and SIGKILL at the deadline.
        """
        for service in self.services:
            service.restart_at = None  # nothing waiting out a back-off starts any more
        everything = self.all_children()
        live = [child for child in everything if child.group_alive()]
        if not live:
            self.remove_pids()
            return
        say("stopping " + ", ".join(dict.fromkeys(child.name for child in live)))
        for child in reversed(live):
            if child.running():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        orphans_signalled: set[int] = set()
        while time.monotonic() < deadline and any(child.group_alive() for child in live):
            for child in live:
                if not child.running() and child.pid not in orphans_signalled:
                    child.signal_group(signal.SIGTERM)  # leftovers of a child that has exited
                    orphans_signalled.add(child.pid)
            time.sleep(0.1)
        for child in live:
            if child.group_alive():
                say(f"{child.name} did not stop within {timeout} s: killing it")
                child.signal_group(signal.SIGKILL)
        kill_deadline = time.monotonic() + 10
        while time.monotonic() < kill_deadline and any(c.group_alive() for c in live):
            time.sleep(0.1)
        for child in everything:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=1)
            child.finish_output()
        self.remove_pids()

    @property
    def pids_file(self) -> Path:
        return var_dir() / "onramp-run.json"

    def write_pids(self) -> None:
        """Record who is running, for people and for tests (removed when the launcher ends).

        A service waiting out its back-off is left out until it runs again."""
        children = {child.name: child.pid for child in self.children}
        for service in self.services:
            if service.child is not None and service.restart_at is None:
                children[service.name] = service.child.pid
        data = {"launcher": os.getpid(), "children": children}
        tmp = self.pids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.pids_file)

    def remove_pids(self) -> None:
        self.pids_file.unlink(missing_ok=True)


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: stop everything and exit 0."""


class GaveUp(Exception):
    """A service stopped once more than the restart limit allows."""

    def __init__(self, service: Service, why: str, restarts: int) -> None:
        super().__init__(service.name)
        self.service = service
        self.why = why
        self.restarts = restarts


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def sandbox_commands(reset: bool) -> tuple[list[str], list[str]]:
    """The sandbox's first command and the one every restart uses: only the first resets."""
    command = manage("sandbox")
    return ([*command, "--reset"] if reset else command), command


def cmd_run(reset_sandbox: bool = False) -> int:
    web_port = env_int("ONRAMP_WEB_PORT", 8000)
    sandbox = env_flag("ONRAMP_SANDBOX", True)
    sandbox_port = env_int("ONRAMP_SANDBOX_PORT", 5055)
    start_timeout = env_int("ONRAMP_START_TIMEOUT", 180)
    stop_timeout = env_int("ONRAMP_STOP_TIMEOUT", 20)
    policy = RestartPolicy.from_env()

    taken = [(name, port) for name, port in [("web", web_port)] if port_in_use(port)]
    if sandbox and port_in_use(sandbox_port):
        taken.append(("sandbox", sandbox_port))
    for name, port in taken:
        variable = "ONRAMP_WEB_PORT" if name == "web" else "ONRAMP_SANDBOX_PORT"
        say(
            f"port {port} on {HOST} is already in use, so the {name} cannot start. "
            f"Stop whatever listens there (see `ss -ltnp 'sport = :{port}'`; another "
            f"`onramp.py run`?) or choose another port with {variable}=..."
        )
    if taken:
        return EXIT_USAGE

    ensure_venv()
    var = var_dir()
    var.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("STATIC_ROOT"):
        (var / "staticfiles").mkdir(exist_ok=True)  # WhiteNoise warns when it is missing
    base_url = f"http://{HOST}:{web_port}"
    supervisor = Supervisor(policy, stop_timeout)
    supervisor.start_timeout = start_timeout
    supervisor.env["ONRAMP_SANDBOX_PORT"] = str(sandbox_port)
    supervisor.env.setdefault("PORTAL_BASE_URL", base_url)
    supervisor.install_signal_handlers()
    logins: list[str] = []
    try:
        supervisor.run_step("migrate", manage("migrate", "--noinput"))
        supervisor.run_step("seed", manage("seed_environments"))
        if sandbox:
            users = supervisor.run_step("users", manage("seed_demo_users"))
            logins = list(users.lines)
        else:
            say("ONRAMP_SANDBOX is off: no demo users (create one with manage.py createsuperuser)")

        if sandbox:
            # `manage.py sandbox` says "sandbox ready on <url>" once it has seeded every
            # environment; the port answers before that. A restarted sandbox is up again
            # only once it says so too.
            first, again = sandbox_commands(reset_sandbox)
            if reset_sandbox:
                say("--reset-sandbox: the sandbox starts clean (restarts keep its state)")
            aws = supervisor.start_service(
                "sandbox", first, restart_argv=again, ready=r"(?i)\bsandbox ready\b"
            )
            supervisor.wait_until(
                f"the sandbox on port {sandbox_port}",
                lambda: aws.is_ready() and port_open(sandbox_port),
                start_timeout,
            )
            say(f"sandbox AWS is answering on http://{HOST}:{sandbox_port}")
        elif reset_sandbox:
            say("ONRAMP_SANDBOX is off: --reset-sandbox has nothing to reset")
        supervisor.start_service(
            "web", manage("runserver", f"{HOST}:{web_port}", "--noreload", "--skip-checks")
        )
        worker = supervisor.start_service(
            "worker",
            [str(VENV_PYTHON), "-m", "celery", "-A", "portal", "worker", "-c", "2", "-l", "info"],
            ready=r"\bready\.",
        )
        schedule = var / "celerybeat-schedule"
        supervisor.start_service(
            "beat",
            [
                *[str(VENV_PYTHON), "-m", "celery", "-A", "portal", "beat", "-l", "info"],
                *["--schedule", str(schedule)],
            ],
        )
        supervisor.wait_until(
            f"the web server on {base_url}", lambda: http_ok(f"{base_url}/healthz"), start_timeout
        )
        supervisor.wait_until("the Celery worker", worker.is_ready, start_timeout)
        with _print_lock:
            print("", flush=True)
            print(f"onramp: Onramp is running at {base_url}/  (Ctrl-C stops everything)")
            for line in logins:
                print(f"onramp: {line}")
            print("", flush=True)
        supervisor.supervise()
    except StopRequested:
        say(f"{supervisor.stop_reason or 'stop'} received")
        supervisor.stop_all(stop_timeout)
        say("stopped")
        return 0
    except GaveUp as gave_up:
        name = gave_up.service.name
        say(
            f"{name} {gave_up.why} after {gave_up.restarts} restarts "
            f"within {policy.window:g} s (ONRAMP_RESTART_LIMIT={policy.limit}): giving up, "
            "stopping the others"
        )
        supervisor.stop_all(stop_timeout)
        say(f"{name} stopped unexpectedly; see its last lines above")
        return EXIT_CHILD_DIED
    except BaseException:
        supervisor.stop_all(stop_timeout)
        raise
    return 0  # pragma: no cover - supervise() only returns by raising


# --- test and check ------------------------------------------------------------------------


def cmd_test(args: list[str]) -> int:
    ensure_venv()
    if not CHROMIUM.exists():
        say(f"note: browser tests need {CHROMIUM} (apt-get install chromium)")
    argv = [str(VENV_PYTHON), "-m", "pytest", *args]
    sys.stdout.flush()
    os.chdir(ROOT)
    os.execve(argv[0], argv, child_env())  # pytest's exit code is ours  # noqa: S606
    return 0  # pragma: no cover


def cmd_check() -> int:
    ensure_venv()
    env = child_env()
    checks = [
        ("ruff check", [str(VENV_BIN / "ruff"), "check", "."]),
        ("ruff format --check", [str(VENV_BIN / "ruff"), "format", "--check", "."]),
        ("makemigrations --check", manage("makemigrations", "--check", "--dry-run")),
        ("import contracts (lint-imports)", [str(VENV_BIN / "lint-imports"), "--no-cache"]),
        ("mypy", [str(VENV_BIN / "mypy")]),
    ]
    failed = []
    for name, argv in checks:
        say(name)
        if subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode != 0:
            failed.append(name)
    if failed:
        say("failed: " + ", ".join(failed))
        return 1
    say("all checks passed")
    return 0


def main(argv: list[str]) -> int:
    usage = "usage: python3 onramp.py {run [--reset-sandbox] | test [pytest args] | check}"
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__.strip() if argv else usage)
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    try:
        if command == "run" and rest in ([], ["--reset-sandbox"]):
            return cmd_run(reset_sandbox=bool(rest))
        if command == "test":
            return cmd_test(rest)
        if command == "check" and not rest:
            return cmd_check()
    except LauncherError as exc:
        say(str(exc))
        return exc.code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    print(usage, file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
