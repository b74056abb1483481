"""``manage.py sandbox``: run the sandbox AWS in the foreground, seeded for every
Environment row, until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal import aws
from portal.models import Environment
from portal.sandbox.seed import seed
from portal.sandbox.server import SandboxServer, start_sandbox_server

__all__ = ["Command", "start_sandbox_server"]


class Command(BaseCommand):
    help = "Run the sandbox AWS (moto on loopback), seeded with the pipeline per environment."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=None, help="default: settings.SANDBOX_HOST")
        parser.add_argument(
            "--port", type=int, default=None, help="default: settings.SANDBOX_PORT; 0 = any"
        )
        parser.add_argument("--no-seed", action="store_true", help="start empty")
        parser.add_argument("--verbose-requests", action="store_true", help="log every call")

    def handle(self, *args: Any, **options: Any) -> None:
        host = options["host"] or settings.SANDBOX_HOST
        port = settings.SANDBOX_PORT if options["port"] is None else options["port"]
        if not options["verbose_requests"]:
            logging.getLogger("werkzeug").setLevel(logging.WARNING)
        try:
            server = start_sandbox_server(host, port)
        except OSError as exc:
            raise CommandError(f"Cannot listen on {host}:{port}: {exc}") from exc
        stopping = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stopping.set())
        try:
            if not options["no_seed"]:
                self._seed(server)
            self.stdout.write(f"sandbox ready on {server.url}")
            self.stdout.flush()
            while not stopping.wait(0.5):
                pass
        finally:
            server.stop()
            self.stdout.write("sandbox stopped")

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
