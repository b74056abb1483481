"""Approvals: both roles, reject, request changes, separation of duties, the digest an
approval binds to, and who is told to act next."""

from __future__ import annotations

import json
import logging

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from onboarding import services
from onboarding.models import Approval, Decision, RequestStatus
from onboarding.selectors import request_live_approvals, request_timeline
from portal.errors import ApplicationError
from portal.models import AuditEvent, Environment
from portal.roles import Role
from tests.onboarding.test_requests import (
    SCHEMA,
    add_samples,
    environment_rows_fixture,  # noqa: F401 - fixture
    make_request,
    media_fixture,  # noqa: F401 - fixture
    ready_request,
    rita_fixture,  # noqa: F401 - fixture
    submitted_request,
    upload,
    valid_ndjson,
    validate,
)
from tests.personas import PASSWORD

SECURITY, GOVERNANCE = "security", "governance"


def grant(request, user, role):
    return services.approval_grant(request=request, actor=user, role=role)


def actions_since(seq: int) -> list[str]:
    return list(
        AuditEvent.objects.filter(seq__gt=seq).order_by("seq").values_list("action", flat=True)
    )


def last_seq() -> int:
    event = AuditEvent.objects.order_by("-seq").first()
    return event.seq if event else 0


def recipients(outbox) -> set[str]:
    return {address for message in outbox for address in message.to}


@pytest.fixture
def submitted(rita, personas, environment_rows):
    return submitted_request(rita)


class ApprovalTests:
    def test_both_approvals_are_needed(self, submitted, personas):
        grant(submitted, personas["sam"], SECURITY)
        submitted.refresh_from_db()
        assert submitted.status == RequestStatus.SUBMITTED
        grant(submitted, personas["gina"], GOVERNANCE)
        submitted.refresh_from_db()
        assert submitted.status == RequestStatus.APPROVED

    def test_an_approval_binds_to_the_current_revision_and_digest(self, submitted, personas):
        approval = grant(submitted, personas["sam"], SECURITY)
        revision = submitted.revisions.get(number=submitted.revision)
        assert (approval.revision, approval.digest) == (revision.number, revision.digest)
        assert approval.digest == services.request_current_digest(submitted)

    def test_the_digest_covers_every_environment_plan(self, rita, environment_rows):
        request = make_request(rita)
        with_envs = services.request_current_digest(request)
        Environment.objects.filter(name="prod").update(region="eu-west-1")
        assert services.request_current_digest(request) != with_envs

    def test_each_decision_writes_exactly_one_audit_event(self, submitted, personas):
        seq = last_seq()
        grant(submitted, personas["sam"], SECURITY)
        assert actions_since(seq) == ["onboarding.approval_granted"]
        seq = last_seq()
        grant(submitted, personas["gina"], GOVERNANCE)
        assert actions_since(seq) == ["onboarding.approval_granted"]

    def test_reject_needs_a_reason_and_closes_the_request(self, submitted, personas):
        with pytest.raises(ApplicationError) as exc:
            services.approval_reject(
                request=submitted, actor=personas["gina"], role=GOVERNANCE, reason="no"
            )
        assert exc.value.field == "comment"
        seq = last_seq()
        services.approval_reject(
            request=submitted, actor=personas["gina"], role=GOVERNANCE, reason="PHI without a DPA."
        )
        submitted.refresh_from_db()
        assert submitted.status == RequestStatus.REJECTED
        assert actions_since(seq) == ["onboarding.request_rejected"]
        with pytest.raises(ApplicationError):
            grant(submitted, personas["sam"], SECURITY)

    def test_request_changes_sends_it_back_with_comments(self, submitted, personas, rita):
        seq = last_seq()
        services.approval_request_changes(
            request=submitted, actor=personas["sam"], role=SECURITY, comments="Use a narrower role."
        )
        submitted.refresh_from_db()
        assert submitted.status == RequestStatus.CHANGES_REQUESTED
        assert actions_since(seq) == ["onboarding.changes_requested"]
        decision = Approval.objects.get(decision=Decision.CHANGES_REQUESTED)
        assert decision.comment == "Use a narrower role."
        services.request_update(
            request=submitted,
            actor=rita,
            data={"producer_role_arn": "arn:aws:iam::123456789012:role/web/narrow"},
        )
        validate(submitted, rita)
        services.request_submit(request=submitted, actor=rita)
        submitted.refresh_from_db()
        assert submitted.status == RequestStatus.SUBMITTED

    def test_a_draft_cannot_be_approved(self, rita, personas, environment_rows):
        request = make_request(rita)
        with pytest.raises(ApplicationError, match="only a submitted"):
            grant(request, personas["sam"], SECURITY)

    def test_the_same_role_is_not_approved_twice(self, submitted, personas):
        grant(submitted, personas["sam"], SECURITY)
        with pytest.raises(ApplicationError, match="already given"):
            grant(submitted, personas["bo"], SECURITY)


class SeparationOfDutiesTests:
    def test_the_requester_cannot_approve_their_own_request(self, personas, environment_rows):
        rex = personas["rex"]
        request = submitted_request(rex)
        with pytest.raises(PermissionDenied, match="You requested"):
            grant(request, rex, SECURITY)
        grant(request, personas["sam"], SECURITY)

    def test_an_editor_of_the_request_cannot_approve_it(self, rita, personas, environment_rows):
        eve = User.objects.create_user("eve", "eve@example.com", PASSWORD)
        for role in (Role.ENGINEER, Role.SECURITY_APPROVER):
            eve.groups.add(Group.objects.get_or_create(name=str(role))[0])
        request = make_request(rita)
        add_samples(request, rita)
        services.request_update(request=request, actor=eve, data={"owner_team": "data-platform"})
        validate(request, rita)
        services.request_submit(request=request, actor=rita)
        with pytest.raises(PermissionDenied, match="You edited"):
            grant(request, eve, SECURITY)
        grant(request, personas["sam"], SECURITY)

    def test_one_person_cannot_give_both_approvals(self, submitted, personas):
        bo = personas["bo"]
        grant(submitted, bo, SECURITY)
        with pytest.raises(PermissionDenied, match="other must come from someone else"):
            grant(submitted, bo, GOVERNANCE)
        grant(submitted, personas["gina"], GOVERNANCE)
        submitted.refresh_from_db()
        assert submitted.status == RequestStatus.APPROVED

    def test_an_approver_without_the_role_is_refused(self, submitted, personas):
        with pytest.raises(PermissionDenied):
            grant(submitted, personas["sam"], GOVERNANCE)
        with pytest.raises(PermissionDenied):
            grant(submitted, personas["erin"], SECURITY)


FIELD_EDITS = {
    "source_name": "clickstream-eu",
    "description": "Click events, now with the EU shop.",
    "owner_team": "checkout",
    "data_format": "json",
    "schema_text": json.dumps({**SCHEMA, "required": ["id"]}),
    "schema_version": 2,
    "files_per_day": 1000,
    "average_file_size_kb": 64,
    "frequency": "daily",
    "latency_sla": "daily",
    "sensitivity": ["pii", "financial"],
    "retention_days": 30,
    "retention_legal_basis": "SOX section 802",
    "business_justification": "Fraud detection as well.",
    "downstream_consumers": "The fraud team.",
    "producer_role_arn": "arn:aws:iam::123456789012:role/other-producer",
}


def _edit(kind: str, request, user) -> None:
    if kind in FIELD_EDITS:
        services.request_update(request=request, actor=user, data={kind: FIELD_EDITS[kind]})
    elif kind == "sample added":
        services.sample_upload(
            request=request, actor=user, files=[upload("new.ndjson", valid_ndjson(50))]
        )
    elif kind == "sample removed":
        services.sample_delete(sample=request.samples.order_by("pk").first(), actor=user)
    elif kind == "sample re-marked":
        sample = request.samples.filter(expected_malformed=True).get()
        services.sample_mark(sample=sample, actor=user, expected_malformed=False)
    else:  # pragma: no cover
        raise AssertionError(kind)


EDIT_KINDS = [*FIELD_EDITS, "sample added", "sample removed", "sample re-marked"]


class DigestBindingTests:
    def test_every_spec_field_has_an_edit_case(self):
        assert set(FIELD_EDITS) == set(services.SPEC_FIELDS)

    @pytest.fixture
    def half_approved(self, submitted, personas):
        """Security approved; governance asked for changes, so the requester can edit."""
        approval = grant(submitted, personas["sam"], SECURITY)
        services.approval_request_changes(
            request=submitted,
            actor=personas["gina"],
            role=GOVERNANCE,
            comments="Shorter retention.",
        )
        submitted.refresh_from_db()
        return submitted, approval

    @pytest.mark.parametrize("kind", EDIT_KINDS)
    def test_any_edit_voids_the_approval_visibly(
        self, half_approved, rita, kind, django_capture_on_commit_callbacks, mailoutbox
    ):
        request, approval = half_approved
        old_digest = request.revisions.get(number=request.revision).digest
        with django_capture_on_commit_callbacks(execute=True):
            _edit(kind, request, rita)
        request.refresh_from_db()
        approval.refresh_from_db()
        new_revision = request.revisions.get(number=request.revision)
        assert approval.voided_at is not None
        assert approval.void_reason.startswith(f"Revision {new_revision.number}:")
        assert new_revision.digest != old_digest
        assert new_revision.edited_by == rita
        assert request_live_approvals(request) == []
        assert recipients(mailoutbox) == {"sam@example.com"}
        timeline = timeline_texts(request)
        assert f"security approval of revision {approval.revision} voided" in timeline

    def test_re_approving_after_an_edit_is_one_click_from_the_queue(
        self, half_approved, rita, personas, client
    ):
        request, _ = half_approved
        services.request_update(request=request, actor=rita, data={"retention_days": 90})
        validate(request, rita)
        services.request_submit(request=request, actor=rita)
        client.login(username="sam", password=PASSWORD)
        queue = client.get(reverse("onboarding:request-queue")).content.decode()
        assert f'data-request="{request.key}"' in queue
        assert "Re-approve as security" in queue
        response = client.post(
            reverse("onboarding:approval-grant", args=[request.number]),
            {"role": SECURITY, "from": "queue"},
        )
        assert response.status_code == 302
        assert response.url == reverse("onboarding:request-queue")
        request.refresh_from_db()
        live = request_live_approvals(request)
        assert [(a.role, a.decided_by.username, a.revision) for a in live] == [
            (SECURITY, "sam", request.revision)
        ]
        assert (
            f'data-request="{request.key}"'
            not in client.get(reverse("onboarding:request-queue")).content.decode()
        )

    def test_an_environment_change_voids_approvals_of_the_old_plan(self, submitted, personas):
        approval = grant(submitted, personas["sam"], SECURITY)
        Environment.objects.filter(name="staging").update(account_id="999999999999")
        grant(submitted, personas["gina"], GOVERNANCE)
        approval.refresh_from_db()
        submitted.refresh_from_db()
        assert approval.voided_at is not None
        assert "environment" in approval.void_reason
        assert submitted.status == RequestStatus.SUBMITTED
        assert submitted.revisions.get(number=submitted.revision).edited_by is None


def timeline_texts(request) -> str:
    return "\n".join(e.text for e in request_timeline(request))


class NotificationTests:
    def test_submit_tells_both_approver_groups(
        self, rita, personas, environment_rows, django_capture_on_commit_callbacks, mailoutbox
    ):
        request = ready_request(rita)
        with django_capture_on_commit_callbacks(execute=True):
            services.request_submit(request=request, actor=rita)
        assert recipients(mailoutbox) == {
            "sam@example.com",
            "gina@example.com",
            "rex@example.com",
            "bo@example.com",
        }
        assert all(m.to and len(m.to) == 1 for m in mailoutbox)
        assert request.key in mailoutbox[0].subject

    def test_the_second_approval_tells_engineers_and_the_requester(
        self, submitted, personas, django_capture_on_commit_callbacks, mailoutbox
    ):
        with django_capture_on_commit_callbacks(execute=True):
            grant(submitted, personas["sam"], SECURITY)
        assert mailoutbox == []
        with django_capture_on_commit_callbacks(execute=True):
            grant(submitted, personas["gina"], GOVERNANCE)
        assert recipients(mailoutbox) == {
            "erin@example.com",
            "eddie@example.com",
            "rita@example.com",
        }

    @pytest.mark.parametrize("decide", ["reject", "changes"])
    def test_a_rejection_or_change_request_tells_the_requester(
        self, submitted, personas, decide, django_capture_on_commit_callbacks, mailoutbox
    ):
        with django_capture_on_commit_callbacks(execute=True):
            if decide == "reject":
                services.approval_reject(
                    request=submitted, actor=personas["sam"], role=SECURITY, reason="Wildcard role."
                )
            else:
                services.approval_request_changes(
                    request=submitted,
                    actor=personas["sam"],
                    role=SECURITY,
                    comments="Wildcard role.",
                )
        assert recipients(mailoutbox) == {"rita@example.com"}
        assert "Wildcard role." in mailoutbox[0].body

    def test_a_failing_slack_webhook_is_logged_without_its_url(
        self, submitted, personas, settings, caplog, django_capture_on_commit_callbacks, mailoutbox
    ):
        settings.SLACK_WEBHOOK_URL = "https://127.0.0.1:9/services/T000/B000/secret-token"
        with (
            caplog.at_level(logging.WARNING, logger="portal.notify"),
            django_capture_on_commit_callbacks(execute=True),
        ):
            grant(submitted, personas["sam"], SECURITY)
            grant(submitted, personas["gina"], GOVERNANCE)
        submitted.refresh_from_db()
        assert submitted.status == RequestStatus.APPROVED
        assert recipients(mailoutbox) == {
            "erin@example.com",
            "eddie@example.com",
            "rita@example.com",
        }
        assert "Slack post" in caplog.text
        assert "secret-token" not in caplog.text
