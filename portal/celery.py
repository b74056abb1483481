"""The Celery app. Tasks are thin entry points; the database is the source of truth."""

from __future__ import annotations

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# The embedded broker: kombu's file-system transport with atomic writes (portal/broker.py).
TRANSPORT_ALIASES["onrampfs"] = "portal.broker:Transport"

app = Celery("onramp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["portal.runs"])
