"""Reads of onboarding requests that pages and services share, and who may do what: the
approvals a user may give or decide on (the separation of duties itself is a rule,
`onboarding.rules.separation_of_duties_problem`) and the buttons a user may press on a
ticket (`request_permissions`).

List reads run a constant number of queries however many rows there are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Count, Prefetch, Q, QuerySet, Value
from django.db.models.functions import Concat

from onboarding.models import (
    APPROVER_ROLE,
    EDITABLE_STATUSES,
    TITLE_PREFIX,
    Approval,
    ApprovalRole,
    DataFormat,
    Decision,
    OnboardingRequest,
    RequestRevision,
    RequestStatus,
    Sensitivity,
)
from onboarding.rules import separation_of_duties_problem
from portal.models import AuditEvent
from portal.roles import Role, has_role, roles_of
from portal.runs.api import Run, RunKind, runs_of

_KEY_RE = re.compile(r"^\s*(?:data-)?(\d+)\s*$", re.IGNORECASE)
_RUN_ACTIONS = ("run.started", "run.succeeded", "run.failed", "run.cancelled")


# --- Who may do what -------------------------------------------------------------------------


def may_view(user: Any) -> bool:
    """Anyone holding a role sees the requests board and tickets."""
    return bool(roles_of(user))


def may_edit(user: Any, request: OnboardingRequest) -> bool:
    """The requester who owns it, or an engineer (who documents it with them)."""
    owner = request.requested_by_id == getattr(user, "pk", None) and has_role(user, Role.REQUESTER)
    return owner or has_role(user, Role.ENGINEER)


def may_submit(user: Any, request: OnboardingRequest) -> bool:
    return request.requested_by_id == getattr(user, "pk", None) and has_role(user, Role.REQUESTER)


def may_compare(user: Any) -> bool:
    """Comparing the plan with AWS reads the accounts: engineers and approvers."""
    return has_role(user, Role.ENGINEER, Role.SECURITY_APPROVER, Role.GOVERNANCE_APPROVER)


def approver_roles(user: Any) -> list[ApprovalRole]:
    return [role for role, group in APPROVER_ROLE.items() if has_role(user, group)]


def grantable_roles(
    *,
    user: Any,
    request: OnboardingRequest,
    editor_ids: Iterable[int],
    live_approvals: Iterable[Approval],
) -> list[ApprovalRole]:
    """The approvals `user` may give now: roles they hold that are not approved yet, and
    never both approvals from one person."""
    if request.status != RequestStatus.SUBMITTED:
        return []
    if separation_of_duties_problem(user=user, request=request, editor_ids=editor_ids):
        return []
    live = list(live_approvals)
    if any(a.decided_by_id == user.pk for a in live):
        return []
    approved = {a.role for a in live}
    return [role for role in approver_roles(user) if role not in approved]


def decidable_roles(
    *, user: Any, request: OnboardingRequest, editor_ids: Iterable[int]
) -> list[ApprovalRole]:
    """The roles in which `user` may reject or request changes now."""
    if request.status != RequestStatus.SUBMITTED:
        return []
    if separation_of_duties_problem(user=user, request=request, editor_ids=editor_ids):
        return []
    return approver_roles(user)


def request_permissions(
    *,
    user: Any,
    request: OnboardingRequest,
    editor_ids: Iterable[int],
    live_approvals: Iterable[Approval],
) -> dict[str, Any]:
    """The buttons `user` may press on the ticket right now."""
    editor_ids = set(editor_ids)
    editable = request.status in EDITABLE_STATUSES
    edit = editable and may_edit(user, request)
    return {
        "edit": edit,
        "samples": edit,
        "validate": edit,
        "infer_schema": edit and not request.schema_text.strip(),
        "submit": editable and may_submit(user, request),
        "approve": grantable_roles(
            user=user, request=request, editor_ids=editor_ids, live_approvals=live_approvals
        ),
        "decide": decidable_roles(user=user, request=request, editor_ids=editor_ids),
        "compare": may_compare(user),
    }


# --- Reads -------------------------------------------------------------------------------------


def request_editor_ids(request: OnboardingRequest) -> set[int]:
    """Everyone who made a revision of the request."""
    return set(request.revisions.exclude(edited_by=None).values_list("edited_by_id", flat=True))


def request_live_approvals(request: OnboardingRequest) -> list[Approval]:
    return list(
        request.approvals.filter(decision=Decision.APPROVED, voided_at__isnull=True)
        .select_related("decided_by")
        .order_by("role")
    )


def request_runs(request: OnboardingRequest) -> QuerySet[Run]:
    return runs_of(request).order_by("-created_at", "-id")


def latest_run(request: OnboardingRequest, kind: RunKind | str) -> Run | None:
    """The request's newest run of `kind` (an `onboarding.kinds` kind), if any."""
    return runs_of(request, kind).order_by("-created_at", "-id").first()


def users_with_role(*roles: Role) -> list[Any]:
    """Active users holding any of `roles` (for notifications)."""
    return list(
        get_user_model()
        .objects.filter(is_active=True, groups__name__in=[str(r) for r in roles])
        .distinct()
        .order_by("pk")
    )


def _listing() -> QuerySet[OnboardingRequest]:
    return (
        OnboardingRequest.objects.select_related("requested_by")
        .annotate(
            sample_count=Count("samples", distinct=True),
            title_text=Concat(Value(TITLE_PREFIX), "source_name"),
        )
        .order_by("-number")
    )


def request_list(
    *,
    status: str = "",
    data_format: str = "",
    sensitivity: str = "",
    owner_team: str = "",
    q: str = "",
) -> QuerySet[OnboardingRequest]:
    """Requests matching the board's filters, newest first. `q` finds a key (DATA-12 or
    12), or text in the source name or title."""
    requests = _listing()
    if status in RequestStatus.values:
        requests = requests.filter(status=status)
    if data_format in DataFormat.values:
        requests = requests.filter(data_format=data_format)
    if sensitivity in Sensitivity.values:
        requests = requests.filter(**{f"sensitivity_{sensitivity}": True})
    if owner_team:
        requests = requests.filter(owner_team=owner_team)
    q = q.strip()
    if q:
        match = Q(source_name__icontains=q) | Q(title_text__icontains=q)
        key = _KEY_RE.match(q)
        if key:
            match |= Q(number=int(key.group(1)))
        requests = requests.filter(match)
    return requests


@dataclass(frozen=True)
class BoardColumn:
    status: str
    label: str
    requests: list[OnboardingRequest]


def request_board(requests: Iterable[OnboardingRequest]) -> list[BoardColumn]:
    """The requests in one column per status, in the order a request moves through them."""
    columns = {value: BoardColumn(value, label, []) for value, label in RequestStatus.choices}
    for request in requests:
        columns[request.status].requests.append(request)
    return list(columns.values())


def owner_team_choices() -> list[str]:
    return list(
        OnboardingRequest.objects.exclude(owner_team="")
        .order_by("owner_team")
        .values_list("owner_team", flat=True)
        .distinct()
    )


def request_list_for_user(user: Any) -> QuerySet[OnboardingRequest]:
    """The requests `user` asked for."""
    return _listing().filter(requested_by=user)


@dataclass(frozen=True)
class QueueItem:
    request: OnboardingRequest
    roles: list[ApprovalRole]
    revision: RequestRevision | None
    voided: list[Approval]


def request_queue_for_user(user: Any) -> list[QueueItem]:
    """Submitted requests missing an approval `user` holds the role for and may give:
    not their own, not edited by them, and not already approved by them in the other role."""
    if not approver_roles(user):
        return []
    requests = (
        _listing()
        .filter(status=RequestStatus.SUBMITTED)
        .exclude(requested_by=user)
        .prefetch_related(
            Prefetch(
                "approvals",
                queryset=Approval.objects.filter(decision=Decision.APPROVED).order_by(
                    "-created_at"
                ),
                to_attr="approved_rows",
            ),
            Prefetch(
                "revisions",
                queryset=RequestRevision.objects.order_by("-number"),
                to_attr="revision_rows",
            ),
        )
        .order_by("submitted_at", "number")
    )
    items = []
    for request in requests:
        live = [a for a in request.approved_rows if a.voided_at is None]
        editors = {r.edited_by_id for r in request.revision_rows if r.edited_by_id}
        roles = grantable_roles(user=user, request=request, editor_ids=editors, live_approvals=live)
        if roles:
            voided = [
                a for a in request.approved_rows if a.voided_at and a.decided_by_id == user.pk
            ]
            current = request.revision_rows[0] if request.revision_rows else None
            items.append(QueueItem(request, roles, current, voided[:1]))
    return items


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    kind: str  # "event" | "revision" | "approval"
    actor: str
    text: str
    detail: str = ""
    badge: str = ""


ACTION_TEXT = {
    "onboarding.request_created": "created the request",
    "onboarding.request_updated": "edited the spec",
    "onboarding.schema_inferred": "inferred the schema from the samples",
    "onboarding.samples_uploaded": "uploaded samples",
    "onboarding.sample_deleted": "removed a sample",
    "onboarding.sample_marked": "changed a sample's expected-malformed mark",
    "onboarding.request_submitted": "submitted the request",
    "onboarding.approval_granted": "approved",
    "onboarding.changes_requested": "requested changes",
    "onboarding.request_rejected": "rejected the request",
    "onboarding.handoff_done": "completed a handoff item",
    "onboarding.handoff_undone": "undid a handoff item",
    "onboarding.review_reminder_sent": "sent the 30-day review reminder",
    "run.started": "started a run",
    "run.succeeded": "run succeeded",
    "run.failed": "run failed",
    "run.cancelled": "run cancelled",
}


def request_timeline(request: OnboardingRequest) -> list[TimelineEntry]:
    """Newest first: the audit events of the request and of its runs (who did what),
    its revisions (what changed, and the digest approvals bind to) and the approvals
    those revisions voided."""
    run_titles = dict(request_runs(request).values_list("pk", "title"))
    events = AuditEvent.objects.filter(
        Q(object_type=OnboardingRequest._meta.label_lower, object_id=str(request.pk))
        | Q(
            object_type=Run._meta.label_lower,
            object_id__in=[str(pk) for pk in run_titles],
            action__in=_RUN_ACTIONS,
        )
    ).order_by("-seq")[:500]
    entries = []
    for event in events:
        text = ACTION_TEXT.get(event.action, event.action)
        detail = ""
        if event.object_type == Run._meta.label_lower:
            detail = run_titles.get(int(event.object_id), "")
        elif "role" in event.data:
            text = f"{text} ({event.data['role']})"
        data = event.data
        if data.get("comment"):
            detail = data["comment"]
        elif data.get("changed"):
            detail = "Changed " + ", ".join(data["changed"])
        elif data.get("sample"):
            detail = data["sample"]
        elif isinstance(data.get("samples"), list) and data["samples"]:
            detail = ", ".join(
                str(s.get("name", s)) for s in data["samples"] if isinstance(s, dict)
            )
        entries.append(
            TimelineEntry(event.created_at, "event", event.actor_label, text, detail, event.action)
        )
    for revision in request.revisions.select_related("edited_by"):
        who = revision.edited_by.get_username() if revision.edited_by else "system"
        entries.append(
            TimelineEntry(
                revision.created_at,
                "revision",
                who,
                f"revision {revision.number}",
                f"{revision.summary} Digest {revision.digest[:12]}…",
                "revision",
            )
        )
    voided = request.approvals.exclude(voided_at=None).select_related("decided_by")
    for approval in voided:
        if approval.voided_at is None:  # excluded above; tells the type checker
            continue
        entries.append(
            TimelineEntry(
                approval.voided_at,
                "approval",
                approval.decided_by.get_username(),
                f"{approval.role} approval of revision {approval.revision} voided",
                approval.void_reason,
                "voided",
            )
        )
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries
