"""Who must act next on an onboarding request, told by e-mail (and Slack when configured).

Services call these once their transaction commits; portal.notify never raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.urls import reverse

from onboarding.models import APPROVER_ROLE
from onboarding.selectors import request_editor_ids, users_with_role
from portal.notify import Notification, absolute_url, notify
from portal.roles import Role


def _link(request: Any) -> str:
    return absolute_url(reverse("onboarding:request-detail", args=[request.number]))


def submitted(request: Any, missing_roles: Sequence[Any]) -> int:
    """On submit: the approver groups whose approval is still missing (minus anyone the
    separation of duties keeps from deciding)."""
    if not missing_roles:
        return 0
    excluded = request_editor_ids(request) | {request.requested_by_id}
    groups = [APPROVER_ROLE[role] for role in missing_roles]
    users = [u for u in users_with_role(*groups) if u.pk not in excluded]
    roles = " and ".join(str(role.label) for role in missing_roles)
    return notify(
        users=users,
        notification=Notification(
            subject=f"{request.key} waits for your approval: {request.title}",
            body=(
                f"{request.requested_by.get_username()} submitted revision {request.revision} "
                f"of {request.key}. Approval needed: {roles}."
            ),
            url=_link(request),
        ),
    )


def approved(request: Any) -> int:
    """Both approvals given: the engineers provision it, the requester hears it is approved."""
    users = [*users_with_role(Role.ENGINEER), request.requested_by]
    return notify(
        users=users,
        notification=Notification(
            subject=f"{request.key} is approved: {request.title}",
            body=(
                f"Security and governance approved revision {request.revision} of "
                f"{request.key}. It is ready to provision."
            ),
            url=_link(request),
        ),
    )


def decided(request: Any, approval: Any) -> int:
    """Changes requested or rejected: the requester must answer."""
    verb = approval.get_decision_display().lower()
    return notify(
        users=[request.requested_by],
        notification=Notification(
            subject=f"{request.key}: {verb} — {request.title}",
            body=(
                f"{approval.decided_by.get_username()} ({approval.get_role_display()}) "
                f"{verb} on revision {approval.revision}:\n\n{approval.comment}"
            ),
            url=_link(request),
        ),
    )


def approvals_voided(request: Any, approvers: Iterable[Any], reason: str) -> int:
    """A new revision voided approvals: those who had approved must look again."""
    return notify(
        users=approvers,
        notification=Notification(
            subject=f"{request.key} changed; your approval was voided — {request.title}",
            body=f"{reason}\nPlease review revision {request.revision} again.",
            url=_link(request),
        ),
    )


def confirmation_needed(request: Any, run: Any, actor: Any, environment: str) -> int:
    """A change to a production environment waits for a second engineer: every engineer
    but the one who started it."""
    users = [u for u in users_with_role(Role.ENGINEER) if u.pk != actor.pk]
    return notify(
        users=users,
        notification=Notification(
            subject=f"{request.key}: confirm {run.title}",
            body=(
                f'{actor.get_username()} started "{run.title}". It changes {environment}, a '
                "production environment, so it waits until a second engineer confirms it on "
                "the run page."
            ),
            url=absolute_url(reverse("runs:detail", args=[run.pk])),
        ),
    )
