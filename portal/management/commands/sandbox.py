"""``manage.py sandbox``: run the sandbox AWS in the foreground, seeded for every
Environment row, until SIGINT or SIGTERM.

Its AWS state is kept in settings.SANDBOX_STATE_DIR: restored before "sandbox ready",
saved every settings.SANDBOX_SAVE_SECONDS and when it stops (portal/sandbox/state.py).
``--reset`` deletes the saved state first, so it starts freshly seeded."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal import aws
from portal.models import Environment
from portal.sandbox.seed import seed
from portal.sandbox.server import SandboxServer, ThreadedSandbox, start_sandbox_server
from portal.sandbox.state import StateStore

__all__ = ["Command", "start_sandbox_server"]


class Command(BaseCommand):
    help = "Run the sandbox AWS (moto on loopback), seeded with the pipeline per environment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=None, help="default: settings.SANDBOX_HOST")
        parser.add_argument(
            "--port", type=int, default=None, help="default: settings.SANDBOX_PORT; 0 = any"
        )
        parser.add_argument("--no-seed", action="store_true", help="start empty")
        parser.add_argument(
            "--reset", action="store_true", help="delete the saved AWS state and start clean"
        )
        parser.add_argument("--verbose-requests", action="store_true", help="log every call")

    def handle(self, *args: Any, **options: Any) -> None:
        host = options["host"] or settings.SANDBOX_HOST
        port = settings.SANDBOX_PORT if options["port"] is None else options["port"]
        if not options["verbose_requests"]:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        keep = settings.SANDBOX_SAVE_SECONDS > 0
        state_dir = Path(settings.SANDBOX_STATE_DIR) if keep else None
        if options["reset"] and StateStore(Path(settings.SANDBOX_STATE_DIR), interval=0).reset():
            self.stdout.write(f"sandbox state in {settings.SANDBOX_STATE_DIR} deleted (--reset)")
        try:
            server = start_sandbox_server(
                host,
                port,
                state_dir=state_dir,
                save_seconds=settings.SANDBOX_SAVE_SECONDS,
                durable=settings.SANDBOX_DURABLE_WRITES,
            )
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc}") from exc
        assert isinstance(server, ThreadedSandbox)  # not isolated: this process serves it
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        try:
            self._report_state(server)
            if not options["no_seed"]:
                self._seed(server)
            self._save(server)
            self.stdout.write(f"sandbox ready on {server.url}")
            self.stdout.flush()
            while not stopping.wait(0.5):
                pass
        finally:
            server.stop()
            self.stdout.write("sandbox stopped")

    def _save(self, server: ThreadedSandbox) -> None:
        """Save what was restored and seeded, so that even a SIGKILL from now on keeps it."""
        if server.store is None:
            return
        store = server.store
        try:
            store.save(force=True)
        except Exception as exc:  # serve anyway: the timer tries again, and says so
            self.stderr.write(f"sandbox state cannot be saved in {store.path}: {exc!r}")
            return
        self.stdout.write(
            f"sandbox state saved in {store.path} "
            f"({store.last_size / 1024:.0f} KiB in {store.last_save_seconds:.2f}s)"
        )

    def _report_state(self, server: ThreadedSandbox) -> None:
        if server.loaded is None:
            self.stdout.write("sandbox state: kept in memory only (SANDBOX_SAVE_SECONDS=0)")
        elif server.loaded.outcome == "set-aside":
            self.stderr.write(str(server.loaded))
        else:
            self.stdout.write(str(server.loaded))

    def _seed(self, server: SandboxServer) -> None:
        if settings.AWS_ENDPOINT_URL.rstrip("/") != server.url:
            # This process seeds the server it just started, wherever settings point.
            settings.AWS_ENDPOINT_URL = server.url
            aws.reset_clients()
        environments = list(Environment.objects.all())
        if not environments:
            self.stderr.write("No environments to seed: run `manage.py seed_environments` first.")
            return
        for action in seed(environments):
            if action.action != "unchanged":
                self.stdout.write(f"  {action}")
        names = ", ".join(env.name for env in environments)
        self.stdout.write(f"seeded {names}")
