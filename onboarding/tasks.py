"""Celery entry points for onboarding: thin, they call services."""

from __future__ import annotations

from celery import shared_task
from portal.roles import scheduler_user


@shared_task(name="onboarding.drift_scan")
def drift_scan() -> int:
    """Start a drift check for every live source (beat, ONBOARDING_DRIFT_SCAN_SECONDS)."""
    from onboarding.provisioning.drift import drift_scan_all

    return len(drift_scan_all(actor=scheduler_user()))


@shared_task(name="onboarding.review_reminders")
def review_reminders() -> int:
    """Remind of each 30-day review that fell due, once (beat, daily by default:
    ONBOARDING_REVIEW_REMINDER_SECONDS)."""
    from onboarding.services.review import review_reminders_send

    return len(review_reminders_send())
