#!/usr/bin/env python3
"""Onramp's single entry point. Standard library only: it runs before the venv exists.

    python3 onramp.py run            set up, then run sandbox, web, worker and beat
    python3 onramp.py test [ARGS]    set up, then run the whole test suite (ARGS go to pytest)
    python3 onramp.py check          ruff, import contracts, mypy, makemigrations --check

Set-up creates .venv when it is missing and installs `-e .[dev]` whenever pyproject.toml
changed since the last install (a hash is kept in .venv). ONRAMP_SKIP_INSTALL=1 skips the
install when a venv exists. `run` reads ONRAMP_WEB_PORT (8000), ONRAMP_SANDBOX_PORT (5055),
ONRAMP_START_TIMEOUT (180 s) and ONRAMP_STOP_TIMEOUT (20 s).
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
from collections.abc import Callable
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

    def finish_output(self) -> None:
        self._reader.join(timeout=2)


class Supervisor:
    """Starts children, notices when one dies, and stops them all on request."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.stop_reason = ""
        self.env = child_env()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            if not self.stopping.is_set():
                self.stop_reason = signal.Signals(signum).name
                self.stopping.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGHUP, handler)

    def start(self, name: str, argv: list[str]) -> Child:
        colour = _COLOURS[len(self.children) % len(_COLOURS)]
        child = Child(name, argv, self.env, colour)
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

    def dead_child(self) -> Child | None:
        return next((child for child in self.children if not child.running()), None)

    def wait_until(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Wait for `ready()`, failing if a child dies, a stop is asked for, or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.stopping.is_set():
                raise StopRequested
            dead = self.dead_child()
            if dead is not None:
                raise ChildDied(dead)
            if time.monotonic() > deadline:
                raise LauncherError(f"{what} was not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def supervise(self) -> None:
        """Block until a stop is asked for (returns) or a child dies (raises ChildDied)."""
        while not self.stopping.wait(0.2):
            dead = self.dead_child()
            if dead is not None:
                raise ChildDied(dead)
        raise StopRequested

    def stop_all(self, timeout: float) -> None:
        """Stop every child: SIGTERM, then SIGKILL whatever is left after `timeout`.

        The first SIGTERM goes to each child itself, so a Celery worker makes its warm
        shutdown and lets its pool finish the tasks in hand; whatever a child leaves behind
        in its process group is then sent SIGTERM too, and SIGKILL at the deadline.
        """
        live = [child for child in self.children if child.group_alive()]
        if not live:
            self.remove_pids()
            return
        say("stopping " + ", ".join(child.name for child in live))
        for child in reversed(live):
            if child.running():
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        orphans_signalled: set[str] = set()
        while time.monotonic() < deadline and any(child.group_alive() for child in live):
            for child in live:
                if not child.running() and child.name not in orphans_signalled:
                    child.signal_group(signal.SIGTERM)  # leftovers of a child that has exited
                    orphans_signalled.add(child.name)
            time.sleep(0.1)
        for child in live:
            if child.group_alive():
                say(f"{child.name} did not stop within {timeout} s: killing it")
                child.signal_group(signal.SIGKILL)
        kill_deadline = time.monotonic() + 10
        while time.monotonic() < kill_deadline and any(c.group_alive() for c in live):
            time.sleep(0.1)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(timeout=1)
            child.finish_output()
        self.remove_pids()

    @property
    def pids_file(self) -> Path:
        return var_dir() / "onramp-run.json"

    def write_pids(self) -> None:
        """Record who is running, for people and for tests (removed when the launcher ends)."""
        data = {
            "launcher": os.getpid(),
            "children": {child.name: child.pid for child in self.children},
        }
        tmp = self.pids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.pids_file)

    def remove_pids(self) -> None:
        self.pids_file.unlink(missing_ok=True)


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: stop everything and exit 0."""


class ChildDied(Exception):
    def __init__(self, child: Child) -> None:
        super().__init__(child.name)
        self.child = child


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


def cmd_run() -> int:
    web_port = env_int("ONRAMP_WEB_PORT", 8000)
    sandbox = env_flag("ONRAMP_SANDBOX", True)
    sandbox_port = env_int("ONRAMP_SANDBOX_PORT", 5055)
    start_timeout = env_int("ONRAMP_START_TIMEOUT", 180)
    stop_timeout = env_int("ONRAMP_STOP_TIMEOUT", 20)

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
    supervisor = Supervisor()
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
            # environment; the port answers before that.
            sandbox_ready = supervisor.start("sandbox", manage("sandbox")).watch(
                r"(?i)\bsandbox ready\b"
            )
            supervisor.wait_until(
                f"the sandbox on port {sandbox_port}",
                lambda: sandbox_ready.is_set() and port_open(sandbox_port),
                start_timeout,
            )
            say(f"sandbox AWS is answering on http://{HOST}:{sandbox_port}")
        supervisor.start(
            "web", manage("runserver", f"{HOST}:{web_port}", "--noreload", "--skip-checks")
        )
        worker = supervisor.start(
            "worker",
            [str(VENV_PYTHON), "-m", "celery", "-A", "portal", "worker", "-c", "2", "-l", "info"],
        )
        worker_ready = worker.watch(r"\bready\.")
        schedule = var / "celerybeat-schedule"
        supervisor.start(
            "beat",
            [
                *[str(VENV_PYTHON), "-m", "celery", "-A", "portal", "beat", "-l", "info"],
                *["--schedule", str(schedule)],
            ],
        )
        supervisor.wait_until(
            f"the web server on {base_url}", lambda: http_ok(f"{base_url}/healthz"), start_timeout
        )
        supervisor.wait_until("the Celery worker", worker_ready.is_set, start_timeout)
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
    except ChildDied as died:
        code = died.child.proc.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        say(f"{died.child.name} exited unexpectedly ({how}); stopping the others")
        supervisor.stop_all(stop_timeout)
        say(f"{died.child.name} stopped unexpectedly; see its last lines above")
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
    usage = "usage: python3 onramp.py {run | test [pytest args] | check}"
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__.strip() if argv else usage)
        return 0 if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    try:
        if command == "run" and not rest:
            return cmd_run()
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
