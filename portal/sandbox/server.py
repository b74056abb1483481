"""Run the sandbox: moto's server behind the sandbox middleware, on loopback.

`start_sandbox_server(host, port)` starts it on a thread of this process (what
``manage.py sandbox`` does) or, with ``isolated=True``, in a child process — what the
tests use, because moto keeps its state in module globals that ``mock_aws`` in another
test would reset. Port 0 picks a free port; the handle's ``.url`` says which.

``python -m portal.sandbox.server [--host H] [--port P]`` runs a bare server (no seeding,
no Django) and prints ``sandbox listening on <url>`` once it answers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from portal.sandbox import patches
from portal.sandbox.pipeline import Pipeline
from portal.sandbox.state import Loaded, StateStore
from portal.sandbox.wsgi import SandboxMiddleware

READY_PREFIX = "sandbox listening on "


class SandboxServer(Protocol):
    url: str

    def stop(self) -> None: ...


def make_app() -> SandboxMiddleware:
    """moto's whole-AWS WSGI app wrapped in the sandbox middleware."""
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    patches.install()
    return SandboxMiddleware(DomainDispatcherApplication(create_backend_app))


def wait_until_ready(url: str, timeout: float = 30.0) -> None:
    """Block until the sandbox answers its health check, or raise TimeoutError."""
    if not url.startswith("http://"):
        raise ValueError(f"The sandbox speaks plain http on loopback, not {url!r}")
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"The sandbox at {url} did not answer within {timeout:.0f}s: {last}")


def writes(url: str) -> int:
    """How many calls that may have changed state the sandbox at `url` has served."""
    if not url.startswith("http://"):
        raise ValueError(f"The sandbox speaks plain http on loopback, not {url!r}")
    with urllib.request.urlopen(f"{url}/_sandbox/state", timeout=10) as r:  # noqa: S310
        return int(json.loads(r.read())["writes"])


class ThreadedSandbox:
    """The sandbox on a daemon thread of this process. With `state_dir`, the saved state
    there is restored before the first call is served and saved every `save_seconds`
    (when something changed) and at `stop()` (see state.py); `.loaded` says what was found."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        state_dir: Path | None = None,
        save_seconds: float = 0,
        durable: bool = False,
    ) -> None:
        # import here: moto loads only in the sandbox server process, never in web or workers
        from moto.moto_server.werkzeug_app import MotoRequestHandler
        from werkzeug.serving import make_server

        self.app = make_app()
        self.store: StateStore | None = None
        self.loaded: Loaded | None = None
        if state_dir is not None:
            self.store = StateStore(state_dir, interval=save_seconds)
            self.loaded = self.store.load()
        self._server = make_server(
            host, port, self.app, threaded=True, request_handler=MotoRequestHandler
        )
        bound_host, bound_port = self._server.server_address[:2]
        # getsockname() of a TCP socket gives the host as str; typeshed also allows bytes.
        assert isinstance(bound_host, str)
        self.url = f"http://{bound_host}:{bound_port}"
        # The pipeline stand-in calls this server; a wildcard address is not one to call.
        own = "127.0.0.1" if bound_host in ("0.0.0.0", "::", "") else bound_host  # noqa: S104
        self.pipeline = Pipeline(f"http://{own}:{bound_port}")
        self.app.pipeline = self.pipeline
        if self.store is not None and self.loaded is not None:
            self.store.extras = lambda: {"pipeline": self.pipeline.saved_state()}
            if self.loaded.extras and "pipeline" in self.loaded.extras:
                self.pipeline.restore_state(self.loaded.extras["pipeline"])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox-server", daemon=True
        )
        self._thread.start()
        self.pipeline.start()
        if self.store is not None:
            self.store.start()
            if durable:
                self.app.persist = self.store.save

    def save(self) -> bool:
        """Save the state now (when there is a state folder); whether it was written."""
        return self.store.save(force=True) if self.store is not None else False

    def stop(self) -> None:
        self.pipeline.stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        if self.store is not None:
            self.store.stop()


class ProcessSandbox:
    """The sandbox in a child process, which exits when this one closes its stdin."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if k != "MOTO_ACCOUNT_ID"}
        self._process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [
                sys.executable,
                "-m",
                "portal.sandbox.server",
                "--host",
                host,
                "--port",
                str(port),
                "--exit-with-parent",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.url = self._read_url(timeout)

    def _read_url(self, timeout: float) -> str:
        assert self._process.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert self._process.stdout is not None
            for line in self._process.stdout:
                if line.startswith(READY_PREFIX):
                    found.append(line[len(READY_PREFIX) :].strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.stop()
            raise TimeoutError(f"The sandbox process did not start within {timeout:.0f}s")
        return found[0]

    def stop(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(OSError):
                assert self._process.stdin is not None
                self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.terminate()
                self._process.wait(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def start_sandbox_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    isolated: bool = False,
    timeout: float = 30.0,
    state_dir: Path | None = None,
    save_seconds: float = 0,
    durable: bool = False,
) -> ThreadedSandbox | ProcessSandbox:
    """Start the sandbox and return once it answers; `.url` and `.stop()` on the handle.
    With `state_dir` (threaded only), it keeps its state there (see ThreadedSandbox)."""
    if isolated and state_dir is not None:
        raise ValueError("An isolated sandbox keeps no state; run manage.py sandbox for that.")
    server: ThreadedSandbox | ProcessSandbox = (
        ProcessSandbox(host, port, timeout)
        if isolated
        else ThreadedSandbox(
            host, port, state_dir=state_dir, save_seconds=save_seconds, durable=durable
        )
    )
    try:
        wait_until_ready(server.url, timeout)
    except TimeoutError:
        server.stop()
        raise
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The Onramp sandbox AWS (no seeding).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="exit when stdin reaches end of file"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = start_sandbox_server(args.host, args.port)
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.exit_with_parent:

        def watch_stdin() -> None:
            sys.stdin.read()
            stopping.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
    sys.stdout.write(f"{READY_PREFIX}{server.url}\n")
    sys.stdout.flush()
    while not stopping.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
