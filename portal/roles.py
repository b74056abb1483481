"""Roles are Django groups. `require_role` is the one check every view and service uses."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied


class Role(StrEnum):
    REQUESTER = "requester"
    SECURITY_APPROVER = "security-approver"
    GOVERNANCE_APPROVER = "governance-approver"
    ENGINEER = "engineer"
    FINOPS = "finops"
    ADMIN = "admin"


ROLE_DESCRIPTIONS = {
    Role.REQUESTER: "Submits a source spec, schema and sample files; answers change requests.",
    Role.SECURITY_APPROVER: "Signs off IAM and encryption on the rendered plan.",
    Role.GOVERNANCE_APPROVER: "Signs off schema, retention and PII on the rendered plan.",
    Role.ENGINEER: "Provisions, smoke-tests and promotes; releases Lambdas; runs rotations.",
    Role.FINOPS: "Runs and presents the monthly cost review; owns optimisation actions.",
    Role.ADMIN: "Manages environments and users; exports the audit trail.",
}


def roles_of(user: Any) -> frozenset[str]:
    """The roles a user holds, cached on the user object for the request."""
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    cached = getattr(user, "_onramp_roles", None)
    if cached is None:
        cached = frozenset(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached |= {Role.ADMIN.value}
        user._onramp_roles = cached
    return cached


def has_role(user: Any, *roles: Role) -> bool:
    """True when the user holds at least one of `roles`."""
    return bool(roles_of(user) & {str(r) for r in roles})


def require_role(user: Any, *roles: Role) -> None:
    """Raise PermissionDenied unless the user holds one of `roles`."""
    if not has_role(user, *roles):
        names = ", ".join(str(r) for r in roles)
        raise PermissionDenied(f"This needs the role: {names}.")


def role_required(*roles: Role) -> Callable:
    """View decorator: 403 unless the signed-in user holds one of `roles`."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(request: Any, *args: Any, **kwargs: Any) -> Any:
            require_role(request.user, *roles)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


SCHEDULER_USERNAME = "onramp-scheduler"


def scheduler_user(*roles: Role) -> Any:
    """The service account that runs started by beat are started by, so the audit trail
    names it. It holds the roles the scheduled work needs (engineer unless told) and can
    never sign in."""
    # import here: roles is imported while apps load, before the auth models exist
    from django.contrib.auth.models import Group, User

    user, created = User.objects.get_or_create(
        username=SCHEDULER_USERNAME, defaults={"first_name": "Onramp", "last_name": "scheduler"}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    for role in roles or (Role.ENGINEER,):
        user.groups.add(Group.objects.get_or_create(name=str(role))[0])
    return user
