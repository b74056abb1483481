"""``manage.py runs_health``: is work moving? Exit 0 when it is, 1 with the reason when runs
have waited RUNS_STALL_SECONDS while no worker took any (portal.runs.api.worker_stall), or
when the worker named by ``--worker`` does not answer a ping. The container health check
of a worker runs it (docker-compose.yml); so can a person."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.celery import app
from portal.runs.api import worker_stall


class Command(BaseCommand):
    help = "Exit non-zero when runs are not moving, or when the named worker does not answer."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--worker", default="", help="a worker's node name, e.g. celery@host")
        parser.add_argument("--timeout", type=float, default=10.0, help="ping timeout (s)")

    def handle(self, *args: Any, **options: Any) -> None:
        worker = options["worker"]
        if worker:
            replies = app.control.ping(destination=[worker], timeout=options["timeout"])
            if not any(worker in reply for reply in replies or []):
                raise CommandError(f"{worker} did not answer a ping within {options['timeout']} s")
        stall = worker_stall()
        if stall is not None:
            raise CommandError(f"runs are not moving: {stall.message}")
        self.stdout.write("runs are moving" + (f"; {worker} answers" if worker else ""))
