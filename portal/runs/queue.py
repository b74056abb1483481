"""Asking a worker to look at a run. The broker only carries "look at run N"; the database
says what to do, so a lost or duplicated message costs nothing (the reaper replaces the
first, the lease turns the second away).

The task is sent by its name, so this module does not import the task module (which
imports the engine, which enqueues: no import circle)."""

from __future__ import annotations

from celery import current_app
from django.db import transaction
from django.utils import timezone

from portal.runs.models import Run

ADVANCE_TASK = "runs.advance"


def enqueue(run_id: int, *, countdown: float | None = None) -> None:
    """Ask a worker to look at the run. Safe to call any number of times."""
    Run.objects.filter(pk=run_id).update(last_enqueued_at=timezone.now())
    current_app.send_task(ADVANCE_TASK, args=(run_id,), countdown=countdown)


def enqueue_on_commit(run_id: int, *, countdown: float | None = None) -> None:
    transaction.on_commit(lambda: enqueue(run_id, countdown=countdown))
