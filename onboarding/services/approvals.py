"""Approvals: grant, reject, request changes — with the separation of duties."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from onboarding import notifications
from onboarding.models import (
    APPROVER_ROLE,
    Approval,
    ApprovalRole,
    Decision,
    OnboardingRequest,
    RequestStatus,
)
from onboarding.request_state import request_blockers
from onboarding.rules import separation_of_duties_problem
from onboarding.selectors import request_editor_ids, request_live_approvals
from onboarding.services.revisions import locked_request, sync_plan_revision
from portal.audit import audit_record
from portal.errors import ApplicationError
from portal.roles import require_role

MIN_REASON = 5  # characters of a reason for rejecting or requesting changes


def _require_approver(actor: Any, request: OnboardingRequest, role: ApprovalRole) -> None:
    require_role(actor, APPROVER_ROLE[ApprovalRole(role)])
    problem = separation_of_duties_problem(
        user=actor, request=request, editor_ids=request_editor_ids(request)
    )
    if problem:
        raise PermissionDenied(problem)


def _require_submitted(request: OnboardingRequest) -> None:
    if request.status != RequestStatus.SUBMITTED:
        raise ApplicationError(
            f"This request is {request.get_status_display().lower()}; only a submitted "
            "request can be decided on."
        )


def _decided(request: OnboardingRequest, status: RequestStatus) -> None:
    request.status = status
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "decided_at", "updated_at"])


def approval_grant(*, request: OnboardingRequest, actor: Any, role: ApprovalRole) -> Approval:
    """Approve the current revision's rendered plan in one role. With both roles approved
    the request is approved."""
    role = ApprovalRole(role)
    _require_approver(actor, request, role)
    with transaction.atomic():
        request = locked_request(request)
        _require_submitted(request)
        sync_plan_revision(request)
        live = request_live_approvals(request)
        if any(a.decided_by_id == actor.pk for a in live):
            raise PermissionDenied(
                "You already gave one of this revision's approvals; the other must come "
                "from someone else."
            )
        if any(a.role == role for a in live):
            raise ApplicationError(f"The {role.label} approval was already given.")
        blockers = request_blockers(request)
        if blockers:
            raise ApplicationError("This revision cannot be approved: " + " ".join(blockers))
        revision = request.revisions.get(number=request.revision)
        approval = Approval.objects.create(
            request=request,
            role=role,
            decision=Decision.APPROVED,
            decided_by=actor,
            revision=revision.number,
            digest=revision.digest,
        )
        if {a.role for a in live} | {role} == set(ApprovalRole):
            _decided(request, RequestStatus.APPROVED)
            transaction.on_commit(lambda: notifications.approved(request))
        audit_record(
            action="onboarding.approval_granted",
            actor=actor,
            obj=request,
            data={
                "role": role.value,
                "revision": revision.number,
                "digest": revision.digest,
                "status": request.status,
            },
        )
    return approval


# What a decision other than approval does to the request, and the audit event it writes.
_DECIDED = {
    Decision.REJECTED: (RequestStatus.REJECTED, "onboarding.request_rejected"),
    Decision.CHANGES_REQUESTED: (RequestStatus.CHANGES_REQUESTED, "onboarding.changes_requested"),
}


def _decide(
    request: OnboardingRequest, actor: Any, role: ApprovalRole, decision: Decision, comment: str
) -> Approval:
    role = ApprovalRole(role)
    status, action = _DECIDED[decision]
    _require_approver(actor, request, role)
    comment = (comment or "").strip()
    if len(comment) < MIN_REASON:
        raise ApplicationError(
            f"Say why (at least {MIN_REASON} characters); the requester reads this.",
            field="comment",
        )
    with transaction.atomic():
        request = locked_request(request)
        _require_submitted(request)
        approval = Approval.objects.create(
            request=request,
            role=role,
            decision=decision,
            decided_by=actor,
            revision=request.revision,
            digest=request.revisions.get(number=request.revision).digest,
            comment=comment,
        )
        _decided(request, status)
        audit_record(
            action=action,
            actor=actor,
            obj=request,
            data={"role": role.value, "revision": request.revision, "comment": comment},
        )
        transaction.on_commit(lambda: notifications.decided(request, approval))
    return approval


def approval_reject(
    *, request: OnboardingRequest, actor: Any, role: ApprovalRole, reason: str
) -> Approval:
    """Reject the request, with the reason. A rejected request is closed."""
    return _decide(request, actor, role, Decision.REJECTED, reason)


def approval_request_changes(
    *, request: OnboardingRequest, actor: Any, role: ApprovalRole, comments: str
) -> Approval:
    """Send the request back to the requester with comments. Approvals already given stay
    until the requester changes something."""
    return _decide(request, actor, role, Decision.CHANGES_REQUESTED, comments)
