"""The 30-day review of a live source (SOP-001 step 10): measuring prod's volume, and the
reminder beat sends, once, when the review falls due (30 days after prod first went live).
The checklist item that records the review is in `handoff`."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from onboarding.kinds import volume_review
from onboarding.models import (
    HandoffItem,
    HandoffMark,
    OnboardingRequest,
    RequestStatus,
    ReviewReminder,
)
from onboarding.selectors import environment_states, users_with_role
from onboarding.services.handoff import REVIEW_AFTER, handoff_state, production_environment
from portal.audit import audit_record
from portal.errors import ApplicationError
from portal.models import Environment
from portal.notify import Notification, absolute_url, notify
from portal.roles import Role, require_role
from portal.runs.api import Run, run_start


def volume_review_start(*, request: OnboardingRequest, actor: Any) -> Run:
    """An engineer starts measuring prod's volume (read-only on AWS)."""
    require_role(actor, Role.ENGINEER)
    with transaction.atomic():
        request = OnboardingRequest.objects.select_for_update().get(pk=request.pk)
        state = handoff_state(request)
        prod, ps = state.prod, state.prod_state
        if state.measure_why_not or prod is None or ps is None or ps.first_live_at is None:
            why = state.measure_why_not or "prod has not gone live yet"
            raise ApplicationError(f"Measuring the volume is not possible yet: {why}.")
        return run_start(
            kind=volume_review,
            actor=actor,
            params={
                "request_id": request.pk,
                "environment": prod.name,
                "since": ps.first_live_at.isoformat(),
            },
            subject=request,
            title=f"Measure volume {request.key} {request.source_name} in {prod.name}",
        )


def review_reminders_send(*, now: datetime | None = None) -> list[OnboardingRequest]:
    """Remind the engineers and the requester of every 30-day review that fell due and was
    not reminded of yet (beat, daily). One ReviewReminder row per request: sent once."""
    now = now or timezone.now()
    envs = list(Environment.objects.all())
    prod = production_environment(envs)
    if prod is None:
        return []
    candidates = list(
        OnboardingRequest.objects.filter(
            status=RequestStatus.APPROVED, review_reminder__isnull=True
        )
        .exclude(
            pk__in=HandoffMark.objects.filter(
                item=HandoffItem.REVIEW_HELD, undone_at__isnull=True
            ).values("request_id")
        )
        .select_related("requested_by")
    )
    states = environment_states([r.pk for r in candidates], envs)
    engineers = users_with_role(Role.ENGINEER)
    sent = []
    for request in candidates:
        ps = next((s for s in states.get(request.pk, []) if s.environment.pk == prod.pk), None)
        if ps is None or ps.first_live_at is None or now < ps.first_live_at + REVIEW_AFTER:
            continue
        due = ps.first_live_at + REVIEW_AFTER
        users = [*engineers, request.requested_by]
        addresses = sorted({u.email for u in users if u.is_active and u.email})
        with transaction.atomic():
            try:
                with transaction.atomic():
                    ReviewReminder.objects.create(request=request, due_at=due, recipients=addresses)
            except IntegrityError:
                continue  # another worker sent it
            audit_record(
                action="onboarding.review_reminder_sent",
                obj=request,
                data={"due": due.isoformat(), "recipients": addresses},
            )
            transaction.on_commit(partial(_remind, request, due, users))
        sent.append(request)
    return sent


def _remind(request: OnboardingRequest, due: datetime, users: list[Any]) -> int:
    estimate = "no estimate in the spec"
    if request.files_per_day is not None and request.average_file_size_kb is not None:
        mib = request.files_per_day * request.average_file_size_kb / 1024
        estimate = f"{request.files_per_day} files and about {mib:.1f} MiB per day"
    return notify(
        users=users,
        notification=Notification(
            subject=f"{request.key}: 30-day review due {due:%Y-%m-%d} — {request.source_name}",
            body=(
                f"{request.source_name} went live in prod on {due - REVIEW_AFTER:%Y-%m-%d}. Its "
                f"30-day review is due on {due:%Y-%m-%d}: measure the volume on the ticket, "
                "compare it with the "
                f"estimate ({estimate}) and record the review."
            ),
            url=absolute_url(reverse("onboarding:request-detail", args=[request.number]))
            + "#review",
        ),
    )
