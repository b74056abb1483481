"""Celery entry points for onboarding: thin, they call services."""

from __future__ import annotations

from celery import shared_task

from onboarding import services
from portal.roles import scheduler_user


@shared_task(name="onboarding.drift_scan")
def drift_scan() -> int:
    """Start a drift check for every live source (beat, ONBOARDING_DRIFT_SCAN_SECONDS)."""
    return len(services.drift_scan_all(actor=scheduler_user()))


@shared_task(name="onboarding.review_reminders")
def review_reminders() -> int:
    """Remind of each 30-day review that fell due, once (beat, daily by default:
    ONBOARDING_REVIEW_REMINDER_SECONDS)."""
    return len(services.review_reminders_send())
