"""Handoff of a live source (SOP-001 steps 8-10): the checklist on the ticket, the notice
to downstream consumers, and where the 30-day review stands (`review` measures the volume
and sends the reminder).

The rules:
- the checklist shows once the request is approved; its items can be done once the
  production environment is live (its newest rollout run is a passing smoke test);
- "Monitored for 48 hours in prod" is never clicked: it is done once prod has been live
  for 48 hours, counted from the passing prod smoke test's finish time;
- the 30-day review is due 30 days after prod first went live; it is recorded as held,
  with the measured figures as evidence, once it is due and the volume was measured on or
  after that day; beat sends one reminder when it falls due;
- only engineers mark, undo, notify and measure (checked here and in the views); each
  action writes exactly one audit event; a second "done" is refused with who did it first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from onboarding.handoff_texts import (
    ConsumersNotice,
    consumers_notice,
    parse_recipients,
    runbook_draft,
)
from onboarding.models import (
    HandoffItem,
    HandoffMark,
    OnboardingRequest,
    RequestStatus,
    ReviewReminder,
)
from onboarding.request_state import plan_for
from onboarding.selectors import EnvironmentState, environment_states, latest_volume
from onboarding.volume import VolumeFigure, compare_volume
from portal.audit import audit_record
from portal.errors import ApplicationError
from portal.models import Environment
from portal.notify import Notification, absolute_url, post_slack, send_emails
from portal.roles import Role, require_role
from portal.runs.api import Run

MONITOR_FOR = timedelta(hours=48)
REVIEW_AFTER = timedelta(days=30)
MAX_RECIPIENTS = 50
MAX_TEXT = 5000
MIN_TEXT = 5
MONITORED_KEY = "monitored_48h"

_HELP = {
    HandoffItem.ONCALL_BRIEFED: "Train the on-call engineers on this source's troubleshooting. "
    "Note who was briefed and when.",
    HandoffItem.CONSUMERS_NOTIFIED: "Tell the downstream consumers the data is available: "
    "where, which schema, which SLA. Sent from here by e-mail (and Slack when configured).",
    HandoffItem.RUNBOOK_WRITTEN: "Write the runbook entry for this source's errors (start from "
    "the draft below) and record its URL.",
    MONITORED_KEY: "Ticked by itself once prod has been live for 48 hours.",
    HandoffItem.REVIEW_HELD: "Validate the volume and cost assumptions 30 days after prod went "
    "live: measure the volume, then record the review with the figures.",
}


@dataclass
class ChecklistItem:
    key: str
    label: str
    help: str
    done: bool
    why_not: str = ""  # empty when it can be done now
    mark: HandoffMark | None = None  # the mark in force
    history: list[HandoffMark] = field(default_factory=list)  # undone marks, newest first
    automatic: bool = False
    detail: str = ""


@dataclass
class HandoffState:
    request: OnboardingRequest
    prod: Environment | None
    prod_state: EnvironmentState | None
    items: list[ChecklistItem]
    review_due: datetime | None
    reminder: ReviewReminder | None
    volume_run: Run | None  # the newest measurement, whatever its status
    volume: dict[str, Any] | None  # the newest successful measurement's output
    figures: list[VolumeFigure]
    measure_why_not: str

    def item(self, key: str) -> ChecklistItem:
        return next(i for i in self.items if i.key == key)

    @property
    def review_due_passed(self) -> bool:
        return self.review_due is not None and self.review_due <= timezone.now()

    @property
    def review(self) -> ChecklistItem:
        return self.item(HandoffItem.REVIEW_HELD)

    @property
    def measuring(self) -> bool:
        return self.volume_run is not None and not self.volume_run.is_terminal

    @property
    def done_count(self) -> int:
        return sum(1 for i in self.items if i.done)

    @cached_property
    def runbook_draft(self) -> str:
        """The draft runbook entry for prod, or empty while there is no prod plan."""
        try:
            return runbook_draft_for(self.request)
        except ApplicationError:
            return ""

    @property
    def estimated_bytes_per_day(self) -> int | None:
        r = self.request
        if r.files_per_day is None or r.average_file_size_kb is None:
            return None
        return r.files_per_day * r.average_file_size_kb * 1024


def production_environment(environments: Iterable[Environment] | None = None) -> Environment | None:
    """The last production environment of the rollout (prod), or None when none is marked."""
    envs = list(Environment.objects.all() if environments is None else environments)
    found = [e for e in envs if e.is_production]
    return found[-1] if found else None


def duration_text(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _gate(request: OnboardingRequest, prod: Environment | None, ps: Any) -> str:
    if request.status != RequestStatus.APPROVED:
        return "the request is not approved"
    if prod is None:
        return "no environment is marked as production"
    if ps is None or not ps.is_live:
        return f"{prod.name} is not live yet: its smoke test must pass first"
    return ""


def _monitored(prod: Environment | None, ps: Any, now: datetime) -> ChecklistItem:
    item = ChecklistItem(
        MONITORED_KEY, "Monitored for 48 hours in prod", _HELP[MONITORED_KEY], False
    )
    item.automatic = True
    if prod is None or ps is None or not ps.is_live or ps.live_since is None:
        item.why_not = f"{prod.name if prod else 'prod'} is not live yet"
        return item
    since = f"{prod.name} live since {ps.live_since:%Y-%m-%d %H:%M} UTC"
    elapsed = now - ps.live_since
    item.done = elapsed >= MONITOR_FOR
    if item.done:
        item.detail = f"{since} ({duration_text(elapsed)}; smoke test run #{ps.live_run_id})"
    else:
        item.why_not = f"{since}: {duration_text(MONITOR_FOR - elapsed)} to go"
    return item


def handoff_panel(request: OnboardingRequest) -> HandoffState | None:
    """The checklist for the ticket, which shows it once the request is approved."""
    return handoff_state(request) if request.status == RequestStatus.APPROVED else None


def handoff_state(request: OnboardingRequest, *, now: datetime | None = None) -> HandoffState:
    """The checklist as it stands, the review's due date and the newest measured volume."""
    now = now or timezone.now()
    envs = list(Environment.objects.all())
    prod = production_environment(envs)
    states = environment_states([request.pk], envs).get(request.pk, [])
    ps = next((s for s in states if prod is not None and s.environment.pk == prod.pk), None)
    marks = list(
        request.handoff_marks.select_related("done_by", "undone_by").order_by("-done_at", "-pk")
    )
    gate = _gate(request, prod, ps)
    first_live = ps.first_live_at if ps else None
    due = first_live + REVIEW_AFTER if first_live else None
    volume_run, volume = latest_volume(request)

    def manual(key: HandoffItem, why_not: str) -> ChecklistItem:
        mine = [m for m in marks if m.item == key]
        mark = next((m for m in mine if m.undone_at is None), None)
        history = [m for m in mine if m.undone_at is not None]
        why = "" if mark else why_not
        return ChecklistItem(key, key.label, _HELP[key], mark is not None, why, mark, history)

    items = [
        manual(HandoffItem.ONCALL_BRIEFED, gate),
        manual(HandoffItem.CONSUMERS_NOTIFIED, gate),
        manual(HandoffItem.RUNBOOK_WRITTEN, gate),
        _monitored(prod, ps, now),
        manual(HandoffItem.REVIEW_HELD, _review_why_not(request, prod, due, volume, now)),
    ]
    figures = compare_volume(
        files_per_day=request.files_per_day,
        average_file_size_kb=request.average_file_size_kb,
        objects_per_day=volume["objects_per_day"] if volume else None,
        bytes_per_day=volume["bytes_per_day"] if volume else None,
    )
    return HandoffState(
        request=request,
        prod=prod,
        prod_state=ps,
        items=items,
        review_due=due,
        reminder=ReviewReminder.objects.filter(request=request).first(),
        volume_run=volume_run,
        volume=volume,
        figures=figures,
        measure_why_not=_measure_why_not(request, prod, first_live, volume_run),
    )


def _live_why_not(
    request: OnboardingRequest, prod: Environment | None, went_live: datetime | None
) -> str:
    if request.status != RequestStatus.APPROVED:
        return "the request is not approved"
    if prod is None:
        return "no environment is marked as production"
    if went_live is None:
        return f"{prod.name} has not gone live yet"
    return ""


def _review_why_not(
    request: OnboardingRequest,
    prod: Environment | None,
    due: datetime | None,
    volume: dict[str, Any] | None,
    now: datetime,
) -> str:
    if why_not := _live_why_not(request, prod, due):
        return why_not
    if due is None:  # _live_why_not said why already; tells the type checker
        return ""
    if now < due:
        return f"the review is due on {due:%Y-%m-%d}"
    if volume is None or datetime.fromisoformat(volume["measured_at"]) < due:
        return "measure the volume first, on or after the due date"
    return ""


def _measure_why_not(
    request: OnboardingRequest,
    prod: Environment | None,
    first_live: datetime | None,
    volume_run: Run | None,
) -> str:
    if why_not := _live_why_not(request, prod, first_live):
        return why_not
    if volume_run is not None and not volume_run.is_terminal:
        return "a measurement is in progress"
    return ""


def _prod_plan(request: OnboardingRequest, prod: Environment | None) -> dict[str, Any]:
    if prod is None:
        raise ApplicationError("No environment is marked as production.")
    return plan_for(request, prod)


def consumers_notice_for(request: OnboardingRequest) -> ConsumersNotice:
    """The prefilled notice to the downstream consumers."""
    prod = production_environment()
    return consumers_notice(request, prod, _prod_plan(request, prod))


def runbook_draft_for(request: OnboardingRequest) -> str:
    prod = production_environment()
    return runbook_draft(request, prod, _prod_plan(request, prod))


# --- marking items done and undoing them ---------------------------------------------------------


def _text(value: str, *, field: str, what: str) -> str:
    value = (value or "").strip()
    if len(value) < MIN_TEXT:
        raise ApplicationError(f"{what} (at least {MIN_TEXT} characters).", field=field)
    if len(value) > MAX_TEXT:
        raise ApplicationError(f"Keep it under {MAX_TEXT} characters.", field=field)
    return value


def _mark(
    *,
    request: OnboardingRequest,
    actor: Any,
    item: HandoffItem,
    note: str = "",
    evidence: dict[str, Any] | None = None,
    summary: str,
) -> HandoffMark:
    """Record `item` as done, if the rules allow it now; one audit event."""
    with transaction.atomic():
        # Serialise clicks on the same request: a double click records one mark, not two.
        request = OnboardingRequest.objects.select_for_update().get(pk=request.pk)
        entry = handoff_state(request).item(item)
        if entry.mark is not None:
            raise ApplicationError(
                f"“{item.label}” is already done: marked by "
                f"{entry.mark.done_by.get_username()} on {entry.mark.done_at:%Y-%m-%d %H:%M} UTC."
            )
        if entry.why_not:
            raise ApplicationError(f"“{item.label}” cannot be done yet: {entry.why_not}.")
        try:
            with transaction.atomic():
                mark = HandoffMark.objects.create(
                    request=request, item=item, done_by=actor, note=note, evidence=evidence or {}
                )
        except IntegrityError:
            raise ApplicationError(f"“{item.label}” is already done.") from None
        audit_record(
            action="onboarding.handoff_done",
            actor=actor,
            obj=request,
            data={"item": item.value, "comment": f"{item.label}: {summary}", **(evidence or {})},
        )
    return mark


def handoff_brief_oncall(*, request: OnboardingRequest, actor: Any, note: str) -> HandoffMark:
    """An engineer records that the on-call engineers were briefed: who, and when."""
    require_role(actor, Role.ENGINEER)
    note = _text(note, field="note", what="Say who was briefed and when")
    return _mark(
        request=request, actor=actor, item=HandoffItem.ONCALL_BRIEFED, note=note, summary=note
    )


def handoff_record_runbook(*, request: OnboardingRequest, actor: Any, url: str) -> HandoffMark:
    """An engineer records where the source's runbook entry is (an http(s) URL)."""
    require_role(actor, Role.ENGINEER)
    url = (url or "").strip()
    try:
        URLValidator(schemes=["http", "https"])(url)
    except ValidationError:
        raise ApplicationError(
            "Enter the address of the runbook entry, starting with https:// or http://.",
            field="url",
        ) from None
    if len(url) > 500:
        raise ApplicationError("Keep the address under 500 characters.", field="url")
    return _mark(
        request=request,
        actor=actor,
        item=HandoffItem.RUNBOOK_WRITTEN,
        evidence={"url": url},
        summary=url,
    )


def handoff_notify_consumers(
    *, request: OnboardingRequest, actor: Any, recipients: str, message: str
) -> HandoffMark:
    """An engineer sends the downstream consumers the notice (e-mail, and Slack when
    configured, once the transaction commits) and the item is done with who got it."""
    require_role(actor, Role.ENGINEER)
    valid, invalid = parse_recipients(recipients)
    if invalid:
        raise ApplicationError(
            f"Not an e-mail address: {', '.join(invalid)}. Separate addresses with commas "
            "or new lines.",
            field="recipients",
        )
    if not valid:
        raise ApplicationError("Add at least one recipient's e-mail address.", field="recipients")
    if len(valid) > MAX_RECIPIENTS:
        raise ApplicationError(
            f"At most {MAX_RECIPIENTS} recipients; use a mailing list.", field="recipients"
        )
    message = _text(message, field="message", what="Write the message")
    subject = consumers_notice_for(request).subject
    notification = Notification(
        subject=subject,
        body=message,
        url=absolute_url(reverse("onboarding:request-detail", args=[request.number])),
    )
    evidence = {
        "recipients": valid,
        "subject": subject,
        "message": message,
        "slack": bool(settings.SLACK_WEBHOOK_URL),
    }
    summary = f"sent to {', '.join(valid)}"
    with transaction.atomic():
        mark = _mark(
            request=request,
            actor=actor,
            item=HandoffItem.CONSUMERS_NOTIFIED,
            evidence=evidence,
            summary=summary,
        )
        transaction.on_commit(lambda: _send(valid, notification))
    return mark


def _send(recipients: list[str], notification: Notification) -> None:
    send_emails(recipients=recipients, notification=notification)
    post_slack(notification)


def handoff_record_review(*, request: OnboardingRequest, actor: Any, note: str) -> HandoffMark:
    """An engineer records the 30-day review as held; the newest measured volume and its
    comparison with the estimate are the evidence."""
    require_role(actor, Role.ENGINEER)
    note = _text(note, field="review_note", what="Say what the review concluded")
    state = handoff_state(request)
    volume = state.volume or {}
    evidence = {
        "volume_run": volume.get("run_id"),
        "measured_at": volume.get("measured_at"),
        "source": volume.get("source"),
        "window_days": volume.get("window_days"),
        "figures": [
            {
                "label": f.label,
                "estimated": f.estimated,
                "measured": f.measured,
                "ratio": f.ratio,
                "flagged": f.flagged,
            }
            for f in state.figures
        ],
    }
    return _mark(
        request=request,
        actor=actor,
        item=HandoffItem.REVIEW_HELD,
        note=note,
        evidence=evidence,
        summary=note,
    )


def handoff_undo(*, request: OnboardingRequest, actor: Any, item: str, reason: str) -> HandoffMark:
    """An engineer takes a mark back, with the reason; the mark stays as history."""
    require_role(actor, Role.ENGINEER)
    try:
        key = HandoffItem(item)
    except ValueError:
        raise ApplicationError("There is no such handoff item to undo.") from None
    reason = _text(reason, field="reason", what="Say why it is undone")
    with transaction.atomic():
        request = OnboardingRequest.objects.select_for_update().get(pk=request.pk)
        mark = (
            HandoffMark.objects.select_for_update()
            .filter(request=request, item=key, undone_at__isnull=True)
            .first()
        )
        if mark is None:
            raise ApplicationError(
                f"“{key.label}” is not marked done, so there is nothing to undo."
            )
        mark.undone_at = timezone.now()
        mark.undone_by = actor
        mark.undo_reason = reason
        mark.save(update_fields=["undone_at", "undone_by", "undo_reason"])
        audit_record(
            action="onboarding.handoff_undone",
            actor=actor,
            obj=request,
            data={"item": key.value, "reason": reason, "comment": f"{key.label}: {reason}"},
        )
    return mark
