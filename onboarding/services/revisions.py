"""The guards every service uses, and revisions: any change makes a new revision and voids
the approvals of the old one (`revise` records it with its one audit event). The request's
current state (validation, blockers, digest) is read in `onboarding.request_state`.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from onboarding import notifications
from onboarding.models import (
    EDITABLE_STATUSES,
    Approval,
    OnboardingRequest,
    RequestRevision,
)
from onboarding.request_state import request_current_digest
from onboarding.selectors import may_edit, request_live_approvals
from portal.audit import audit_record
from portal.errors import ApplicationError

# --- Guards ----------------------------------------------------------------------------------


def require_editor(actor: Any, request: OnboardingRequest) -> None:
    if not may_edit(actor, request):
        raise PermissionDenied("Only the requester or an engineer can change this request.")


def require_editable(request: OnboardingRequest) -> None:
    if request.status not in EDITABLE_STATUSES:
        raise ApplicationError(
            f"This request is {request.get_status_display().lower()}; it can be changed only "
            "as a draft or after an approver asks for changes."
        )


def locked_request(request: OnboardingRequest) -> OnboardingRequest:
    return OnboardingRequest.objects.select_for_update().get(pk=request.pk)


# --- Revisions -------------------------------------------------------------------------------


def new_revision(
    request: OnboardingRequest, *, actor: Any, summary: str
) -> tuple[RequestRevision, list[Approval]]:
    """Record the request's new state as a revision and void the approvals of the old one.
    Call inside the transaction that made the change, with the request row locked."""
    number = request.revision + 1
    revision = RequestRevision.objects.create(
        request=request,
        number=number,
        digest=request_current_digest(request),
        edited_by=actor if getattr(actor, "is_authenticated", False) else None,
        summary=summary[:2000],
    )
    request.revision = number
    request.save(update_fields=["revision", "updated_at"])
    voided = request_live_approvals(request)
    if voided:
        now = timezone.now()
        reason = f"Revision {number}: {summary}"[:2000]
        Approval.objects.filter(pk__in=[a.pk for a in voided]).update(
            voided_at=now, void_reason=reason
        )
        transaction.on_commit(
            lambda: notifications.approvals_voided(request, [a.decided_by for a in voided], reason)
        )
    return revision, voided


def revise(
    request: OnboardingRequest, *, actor: Any, summary: str, action: str, data: dict[str, Any]
) -> RequestRevision:
    """A change a person made: a new revision (voiding the old one's approvals, see
    `new_revision`) and the change's one audit event, which names the new revision."""
    revision, _ = new_revision(request, actor=actor, summary=summary)
    audit_record(
        action=action, actor=actor, obj=request, data={"revision": revision.number, **data}
    )
    return revision


def sync_plan_revision(request: OnboardingRequest) -> None:
    """When the plan changed under a revision (an admin edited an environment), what the
    approvers see now is not what the revision's digest says: record a new revision."""
    current = request.revisions.order_by("-number").first()
    if current is not None and current.digest != request_current_digest(request):
        new_revision(
            request, actor=None, summary="The plan changed: an environment's settings were edited."
        )
