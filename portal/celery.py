"""The Celery app. Tasks are thin entry points; the database is the source of truth."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import beat_init
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# The embedded broker: kombu's file-system transport with atomic writes (portal/broker.py).
TRANSPORT_ALIASES["onrampfs"] = "portal.broker:Transport"

app = Celery("onramp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["portal.runs"])


@beat_init.connect
def start_watchdog(sender: Any = None, **kwargs: Any) -> None:
    """Beat's process also runs the reaper and the stall check (portal/runs/watchdog.py),
    so both go on when every worker is jammed or gone."""
    # import here: the engine's modules need Django's app registry, ready once beat starts
    from portal.runs.watchdog import Watchdog

    Watchdog().start()
