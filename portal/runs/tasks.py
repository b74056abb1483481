"""Celery entry points for runs: thin, they take ids and call the engine. (The reaper is
not a task: it runs in beat's own process, portal/runs/watchdog.py.)"""

from celery import shared_task

from portal.runs import dispatch
from portal.runs.queue import ADVANCE_TASK


@shared_task(name=ADVANCE_TASK, acks_late=True, reject_on_worker_lost=True)
def run_advance(run_id: int) -> str:
    return dispatch.advance(run_id)
