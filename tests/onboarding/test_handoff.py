"""The handoff checklist on the ticket (SOP-001 steps 8-10): hidden before approval, disabled
until prod is live, engineers only, one audit event per action, the notice to consumers, a
second "done" refused, undo with a reason, the automatic 48-hour item, the draft runbook
entry, and the 30-day review's due date and once-only reminder.

Prod's state comes from the request's rollout runs, recorded here as rows (`go_live`) with
the finish time each test needs; tests/onboarding/test_volume.py drives the real runs."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from onboarding import services
from onboarding.handoff_texts import emails_in, parse_recipients
from onboarding.kinds import provision as PROVISION_KIND
from onboarding.kinds import volume_review as VOLUME_KIND
from onboarding.models import HandoffItem, HandoffMark, OnboardingRequest, ReviewReminder
from onboarding.tasks import review_reminders
from portal.errors import ApplicationError
from portal.models import AuditEvent
from portal.runs.models import Run
from tests.onboarding.test_catalog import go_live, rollout_run
from tests.onboarding.test_provisioning import approved_request
from tests.onboarding.test_requests import (
    environment_rows_fixture,  # noqa: F401 - fixture
    make_request,
    media_fixture,  # noqa: F401 - fixture
)
from tests.personas import PERSONAS

ENGINEERS = {"erin", "eddie"}
CONSUMERS = "BI dashboards <bi@example.com>; the recommendations team (reco@example.com)"


def ticket(client, user, request: OnboardingRequest) -> str:
    client.force_login(user)
    response = client.get(reverse("onboarding:request-detail", args=[request.number]))
    assert response.status_code == 200
    return response.content.decode()


def item_html(html: str, key: str) -> str:
    start = html.index(f'data-item="{key}"')
    return html[start : html.index("</li>", start)]


def events(request: OnboardingRequest, action: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            action=action, object_type="onboarding.onboardingrequest", object_id=str(request.pk)
        )
    )


def post(client, user, name: str, request: OnboardingRequest, data: dict[str, Any]):
    client.force_login(user)
    return client.post(reverse(f"onboarding:{name}", args=[request.number]), data)


@pytest.fixture(name="live")
def live_fixture(personas, environment_rows) -> OnboardingRequest:
    """An approved request live in prod since 3 days ago."""
    request = approved_request(personas, downstream_consumers=CONSUMERS)
    go_live(request, "prod", finished_at=timezone.now() - timedelta(days=3))
    return request


class HandoffPanelTests:
    def test_it_is_hidden_before_approval(self, client, personas, environment_rows):
        draft = make_request(personas["rita"])
        assert 'id="handoff"' not in ticket(client, personas["erin"], draft)

    def test_its_items_are_disabled_with_why_until_prod_is_live(
        self, client, personas, environment_rows
    ):
        request = approved_request(personas)
        go_live(request, "dev")
        rollout_run(request, "prod", PROVISION_KIND)

        html = ticket(client, personas["erin"], request)

        for key in ("oncall_briefed", "consumers_notified", "runbook_written"):
            item = item_html(html, key)
            assert 'data-actionable="false"' in item
            assert "Not yet: prod is not live yet: its smoke test must pass first." in item
        for key in ("oncall_briefed", "consumers_notified", "runbook_written", "review_held"):
            assert f'<button type="button" disabled data-testid="mark-{key}">' in html
        assert 'name="note"' not in item_html(html, "oncall_briefed")  # no form to fill yet
        assert "The review is due 30 days after prod goes live." in html
        assert 'data-testid="measure-volume" disabled' in html
        with pytest.raises(ApplicationError, match="cannot be done yet: prod is not live"):
            services.handoff_brief_oncall(
                request=request, actor=personas["erin"], note="Briefed the rota."
            )
        assert not HandoffMark.objects.exists()

    def test_a_requester_sees_the_checklist_without_its_buttons(self, client, personas, live):
        html = ticket(client, personas["rita"], live)
        assert 'id="handoff"' in html and 'data-item="oncall_briefed"' in html
        assert 'data-testid="mark-oncall_briefed"' not in html
        assert 'data-testid="measure-volume"' not in html


class HandoffItemTests:
    def test_it_records_the_oncall_briefing_with_who_when_and_the_note(
        self, client, personas, live
    ):
        response = post(
            client,
            personas["erin"],
            "handoff-oncall",
            live,
            {"note": "Briefed Ana and Bo (rota week 12) on 3 March."},
        )

        assert response.status_code == 302
        assert response["Location"].endswith("#handoff")
        mark = HandoffMark.objects.get(request=live, item=HandoffItem.ONCALL_BRIEFED)
        assert mark.done_by == personas["erin"] and mark.note.startswith("Briefed Ana")
        (event,) = events(live, "onboarding.handoff_done")
        assert event.actor == personas["erin"] and event.data["item"] == "oncall_briefed"
        item = item_html(ticket(client, personas["rita"], live), "oncall_briefed")
        assert 'data-done="true"' in item
        assert "Done by <strong>erin</strong>" in item and "rota week 12" in item

    def test_a_second_mark_done_is_a_clear_message_not_a_duplicate(self, client, personas, live):
        data = {"note": "Briefed the on-call rota."}
        assert post(client, personas["erin"], "handoff-oncall", live, data).status_code == 302

        again = post(client, personas["eddie"], "handoff-oncall", live, data)

        assert again.status_code == 200
        html = again.content.decode()
        assert "“On-call engineers briefed” is already done: marked by erin on" in html
        assert HandoffMark.objects.filter(request=live).count() == 1
        assert len(events(live, "onboarding.handoff_done")) == 1

    def test_a_note_is_needed_and_kept_beside_the_field(self, client, personas, live):
        response = post(client, personas["erin"], "handoff-oncall", live, {"note": "ok"})
        html = response.content.decode()
        assert response.status_code == 200
        assert 'data-testid="oncall-error"' in html
        assert "Say who was briefed and when (at least 5 characters)." in html
        assert not HandoffMark.objects.exists()

    def test_the_runbook_entry_needs_an_http_address(self, client, personas, live):
        for bad in ("wiki page 12", "ftp://wiki.example.com/runbook", "javascript:alert(1)"):
            response = post(client, personas["erin"], "handoff-runbook", live, {"url": bad})
            html = response.content.decode()
            assert response.status_code == 200
            assert 'data-testid="runbook-error"' in html
            assert "starting with https:// or http://" in html
        assert not HandoffMark.objects.exists()

        url = "https://wiki.example.com/data-eng/runbooks/clicks"
        assert (
            post(client, personas["erin"], "handoff-runbook", live, {"url": url}).status_code == 302
        )

        item = item_html(ticket(client, personas["erin"], live), "runbook_written")
        assert f'<a href="{url}" rel="noopener noreferrer">' in item
        assert events(live, "onboarding.handoff_done")[0].data["url"] == url

    def test_undo_needs_a_reason_and_keeps_the_earlier_mark(self, client, personas, live):
        url = "https://wiki.example.com/runbooks/wrong"
        post(client, personas["erin"], "handoff-runbook", live, {"url": url})

        refused = post(client, personas["eddie"], "handoff-undo", live, {"item": "runbook_written"})
        assert refused.status_code == 200
        assert 'data-testid="undo-error"' in refused.content.decode()
        assert "Say why it is undone" in refused.content.decode()

        undone = post(
            client,
            personas["eddie"],
            "handoff-undo",
            live,
            {"item": "runbook_written", "reason": "Linked the wrong page."},
        )

        assert undone.status_code == 302
        mark = HandoffMark.objects.get(request=live)
        assert mark.undone_by == personas["eddie"] and mark.undo_reason == "Linked the wrong page."
        (event,) = events(live, "onboarding.handoff_undone")
        assert event.data == {
            "item": "runbook_written",
            "reason": "Linked the wrong page.",
            "comment": "Runbook entry written: Linked the wrong page.",
        }
        item = item_html(ticket(client, personas["erin"], live), "runbook_written")
        assert 'data-done="false"' in item and 'data-actionable="true"' in item
        assert "undone by eddie" in item and "Linked the wrong page." in item
        right = "https://wiki.example.com/runbooks/clicks"
        post(client, personas["erin"], "handoff-runbook", live, {"url": right})
        assert HandoffMark.objects.filter(request=live).count() == 2
        with pytest.raises(ApplicationError, match="not marked done"):
            services.handoff_undo(
                request=live, actor=personas["erin"], item="oncall_briefed", reason="Mistake."
            )

    def test_the_48_hour_item_counts_from_the_passing_prod_smoke_test(
        self, client, personas, environment_rows
    ):
        request = approved_request(personas)
        smoke = go_live(request, "prod", finished_at=timezone.now() - timedelta(hours=47))

        item = services.handoff_state(request).item("monitored_48h")
        assert not item.done and "to go" in item.why_not
        assert re.search(r": (59 min|1 h 0 min) to go$", item.why_not), item.why_not
        html = ticket(client, personas["erin"], request)
        assert "mark-monitored_48h" not in html  # never clicked
        assert 'data-item="monitored_48h" data-done="false"' in html

        Run.objects.filter(pk=smoke.pk).update(finished_at=timezone.now() - timedelta(hours=49))

        item = services.handoff_state(request).item("monitored_48h")
        assert item.done and f"smoke test run #{smoke.pk}" in item.detail
        assert 'data-item="monitored_48h" data-done="true"' in ticket(
            client, personas["erin"], request
        )

        rollout_run(request, "prod", PROVISION_KIND)  # provisioned again: not live any more
        assert not services.handoff_state(request).item("monitored_48h").done

    def test_the_draft_runbook_entry_says_where_errors_show_and_how_to_redrive(
        self, client, personas, live
    ):
        name = live.source_name
        draft = services.handoff_state(live).runbook_draft

        assert f"## Source `{name}` ({live.key}) — prod" in draft
        assert f"`etl-{name}-prod-validation-errors`" in draft
        assert "`etl-pipeline-prod`" in draft and f"Source {name}: files" in draft
        assert "`etl-metadata-prod`" in draft and f"SOURCE#{name}" in draft
        assert "`etl-workflow-prod`" in draft
        assert f"aws s3 cp s3://raw-data-{name}-prod/incoming/<file>" in draft
        assert "aws stepfunctions start-execution" in draft
        assert "- Source and data: web-analytics (requested by rita <rita@example.com>)" in draft
        assert 'data-testid="runbook-draft"' in ticket(client, personas["erin"], live)


class RecipientTests:
    def test_it_finds_addresses_in_free_text_once_each(self):
        text = "BI <bi@example.com>, reco@example.com; BI@example.com and the finance team"
        assert emails_in(text) == ["bi@example.com", "reco@example.com"]

    def test_it_parses_a_typed_list_and_returns_what_is_not_an_address(self):
        valid, invalid = parse_recipients("a@example.com, <b@example.com>\nA@example.com; x@ y")
        assert valid == ["a@example.com", "b@example.com"]
        assert invalid == ["x@", "y"]


class ConsumersNoticeTests:
    def test_the_form_is_prefilled_with_the_addresses_and_what_is_available(
        self, client, personas, live
    ):
        client.force_login(personas["erin"])
        html = client.get(reverse("onboarding:handoff-notify", args=[live.number])).content.decode()

        assert ">bi@example.com\nreco@example.com</textarea>" in html
        name = live.source_name
        assert f"Data available: {name} ({live.key})" in html
        assert f"s3://processed-data-prod/source={name}/" in html
        assert f"Schema: version 1, s3://etl-schemas-prod/schemas/{name}/v1.json" in html
        assert "Latency SLA: Hourly batch (p95 &lt; 30 s)" in html

    def test_invalid_recipients_are_shown_beside_the_field_and_nothing_is_sent(
        self, client, personas, live, mailoutbox, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = post(
                client,
                personas["erin"],
                "handoff-notify",
                live,
                {"recipients": "bi@example.com, not-an-address\nx@", "message": "Data is ready."},
            )

        html = response.content.decode()
        assert response.status_code == 200
        assert 'data-testid="recipients-error"' in html
        assert "Not an e-mail address: not-an-address, x@." in html
        assert "bi@example.com, not-an-address\nx@</textarea>" in html  # kept as typed
        assert mailoutbox == [] and not HandoffMark.objects.exists()
        empty = post(
            client, personas["erin"], "handoff-notify", live, {"recipients": " ", "message": "x"}
        )
        assert "Add at least one recipient" in empty.content.decode()

    def test_send_mails_each_recipient_and_records_the_evidence(
        self, client, personas, live, mailoutbox, django_capture_on_commit_callbacks
    ):
        client.force_login(personas["erin"])
        url = reverse("onboarding:handoff-notify", args=[live.number])
        message = "The clicks data is ready: see s3://processed-data-prod/source=clicks/."

        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                url, {"recipients": "bi@example.com\nRISK@example.com", "message": message}
            )

        assert response.status_code == 302
        assert sorted(m.to[0] for m in mailoutbox) == ["RISK@example.com", "bi@example.com"]
        assert all(len(m.to) == 1 for m in mailoutbox)
        assert mailoutbox[0].subject == f"Data available: {live.source_name} ({live.key})"
        assert mailoutbox[0].body.startswith(message)
        assert mailoutbox[0].body.endswith(f"/onboarding/DATA-{live.number}/")
        mark = HandoffMark.objects.get(request=live, item="consumers_notified")
        assert mark.done_by == personas["erin"]
        assert mark.evidence["recipients"] == ["bi@example.com", "RISK@example.com"]
        (event,) = events(live, "onboarding.handoff_done")
        assert event.data["recipients"] == ["bi@example.com", "RISK@example.com"]
        item = item_html(ticket(client, personas["rita"], live), "consumers_notified")
        assert "Sent to bi@example.com, RISK@example.com." in item

        client.force_login(personas["eddie"])
        with django_capture_on_commit_callbacks(execute=True):
            again = client.post(url, {"recipients": "bi@example.com", "message": message})
        assert again.status_code == 200 and "is already done" in again.content.decode()
        assert len(mailoutbox) == 2  # the double click sent nothing more


# --- who may do what ---------------------------------------------------------------------------


@dataclass
class Action:
    prepare: Callable[[Any, dict[str, Any]], None]
    perform: Callable[[Any, OnboardingRequest], Any]
    happened: Callable[[OnboardingRequest], bool]


def _nothing(request: OnboardingRequest, personas: dict[str, Any]) -> None:
    return None


def _marked_by_erin(request: OnboardingRequest, personas: dict[str, Any]) -> None:
    services.handoff_brief_oncall(request=request, actor=personas["erin"], note="Briefed.")


def _url(name: str, request: OnboardingRequest) -> str:
    return reverse(f"onboarding:{name}", args=[request.number])


def _marked(item: str) -> Callable[[OnboardingRequest], bool]:
    return lambda r: HandoffMark.objects.filter(
        request=r, item=item, undone_at__isnull=True
    ).exists()


ACTIONS: dict[str, Action] = {
    "brief on-call": Action(
        _nothing,
        lambda c, r: c.post(_url("handoff-oncall", r), {"note": "Briefed the rota."}),
        _marked("oncall_briefed"),
    ),
    "record runbook": Action(
        _nothing,
        lambda c, r: c.post(_url("handoff-runbook", r), {"url": "https://wiki.example.com/rb"}),
        _marked("runbook_written"),
    ),
    "notify consumers": Action(
        _nothing,
        lambda c, r: c.post(
            _url("handoff-notify", r), {"recipients": "bi@example.com", "message": "Ready."}
        ),
        _marked("consumers_notified"),
    ),
    "open the notice form": Action(
        _nothing,
        lambda c, r: c.get(_url("handoff-notify", r)),
        lambda r: False,  # reading; judged by the status code below
    ),
    "undo": Action(
        _marked_by_erin,
        lambda c, r: c.post(
            _url("handoff-undo", r), {"item": "oncall_briefed", "reason": "Not really."}
        ),
        lambda r: HandoffMark.objects.filter(request=r, undone_at__isnull=False).exists(),
    ),
    "record review": Action(
        _nothing,
        lambda c, r: c.post(_url("handoff-review", r), {"note": "Volume as expected."}),
        _marked("review_held"),
    ),
    "measure volume": Action(
        _nothing,
        lambda c, r: c.post(_url("volume-measure", r)),
        lambda r: Run.objects.filter(kind=VOLUME_KIND).exists(),
    ),
}
# Recording the review also needs a measurement after the due date: the engineer's side of
# it is in tests/onboarding/test_volume.py; here only the refusals count.
EXPECTED = {name: set(ENGINEERS) for name in ACTIONS} | {"record review": set()}


@pytest.mark.parametrize("action", list(ACTIONS))
class HandoffRoleTests:
    def test_only_engineers_may_act(self, client, personas, live, action):
        spec = ACTIONS[action]
        allowed, unexpected = set(), []
        for who in PERSONAS:
            HandoffMark.objects.filter(request=live).delete()
            Run.objects.filter(kind=VOLUME_KIND).delete()
            spec.prepare(live, personas)
            client.force_login(personas[who])
            response = spec.perform(client, live)
            did_it = spec.happened(live) or (
                action == "open the notice form" and response.status_code == 200
            )
            if did_it:
                allowed.add(who)
            elif who not in ENGINEERS and response.status_code != 403:
                unexpected.append(f"{who}: answered {response.status_code}")
            client.logout()
        assert allowed == EXPECTED[action]
        assert unexpected == []

    def test_the_services_check_the_role_too(self, personas, live, action):
        calls = {
            "brief on-call": lambda a: services.handoff_brief_oncall(
                request=live, actor=a, note="Briefed the rota."
            ),
            "record runbook": lambda a: services.handoff_record_runbook(
                request=live, actor=a, url="https://wiki.example.com/rb"
            ),
            "notify consumers": lambda a: services.handoff_notify_consumers(
                request=live, actor=a, recipients="bi@example.com", message="Ready now."
            ),
            "open the notice form": lambda a: services.handoff_brief_oncall(
                request=live, actor=a, note="Briefed the rota."
            ),
            "undo": lambda a: services.handoff_undo(
                request=live, actor=a, item="oncall_briefed", reason="Not really."
            ),
            "record review": lambda a: services.handoff_record_review(
                request=live, actor=a, note="Volume as expected."
            ),
            "measure volume": lambda a: services.volume_review_start(request=live, actor=a),
        }
        _marked_by_erin(live, personas)
        for who in ("rita", "sam", "gina", "fay", "ada", "nobody"):
            with pytest.raises(PermissionDenied):
                calls[action](personas[who])
        assert HandoffMark.objects.filter(request=live).count() == 1
        assert not Run.objects.filter(kind=VOLUME_KIND).exists()


# --- the 30-day review's due date and reminder ---------------------------------------------------


class ReviewReminderTests:
    def test_it_is_sent_once_to_the_engineers_and_the_requester_when_due(
        self, client, personas, environment_rows, mailoutbox, django_capture_on_commit_callbacks
    ):
        due_now = approved_request(personas)
        went_live = timezone.now() - timedelta(days=31)
        go_live(due_now, "prod", finished_at=went_live)
        not_yet = approved_request(personas)
        later_live = timezone.now() - timedelta(days=10)
        go_live(not_yet, "prod", finished_at=later_live)
        dev_only = approved_request(personas)
        go_live(dev_only, "dev", finished_at=went_live)

        with django_capture_on_commit_callbacks(execute=True):
            assert review_reminders() == 1
        with django_capture_on_commit_callbacks(execute=True):
            assert review_reminders() == 0  # the second day sends nothing again

        assert sorted(m.to[0] for m in mailoutbox) == [
            "eddie@example.com",
            "erin@example.com",
            "rita@example.com",
        ]
        due = went_live + timedelta(days=30)
        assert mailoutbox[0].subject == (
            f"{due_now.key}: 30-day review due {due:%Y-%m-%d} — {due_now.source_name}"
        )
        assert "288 files and about 144.0 MiB per day" in mailoutbox[0].body
        reminder = ReviewReminder.objects.get()
        assert reminder.request == due_now and reminder.due_at == due
        assert len(events(due_now, "onboarding.review_reminder_sent")) == 1
        html = ticket(client, personas["rita"], due_now)
        assert f"30-day review due {due:%Y-%m-%d}" in html
        assert "Reminder sent" in html
        later = ticket(client, personas["rita"], not_yet)
        due_later = later_live + timedelta(days=30)
        assert f"30-day review due {due_later:%Y-%m-%d}" in later

    def test_the_review_cannot_be_recorded_before_it_is_due(self, personas, live):
        state = services.handoff_state(live)
        due = state.review_due
        assert state.review.why_not == f"the review is due on {due:%Y-%m-%d}"
        with pytest.raises(ApplicationError, match="cannot be done yet: the review is due on"):
            services.handoff_record_review(
                request=live, actor=personas["erin"], note="Volume as expected."
            )
