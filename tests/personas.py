"""Persona users, one per role (and the awkward combinations), for every test module."""

from __future__ import annotations

from django.contrib.auth.models import Group, User

from portal.roles import Role

PASSWORD = "correct-horse-battery-staple"

PERSONAS: dict[str, tuple[Role, ...]] = {
    "rita": (Role.REQUESTER,),
    "sam": (Role.SECURITY_APPROVER,),
    "gina": (Role.GOVERNANCE_APPROVER,),
    "erin": (Role.ENGINEER,),
    "eddie": (Role.ENGINEER,),
    "fay": (Role.FINOPS,),
    "ada": (Role.ADMIN,),
    # A requester who is also a security approver, and one person with both approver roles.
    "rex": (Role.REQUESTER, Role.SECURITY_APPROVER),
    "bo": (Role.SECURITY_APPROVER, Role.GOVERNANCE_APPROVER),
    "nobody": (),
}


def make_persona(username: str) -> User:
    user, _ = User.objects.get_or_create(
        username=username, defaults={"email": f"{username}@example.com"}
    )
    user.set_password(PASSWORD)
    user.save()
    for role in PERSONAS[username]:
        user.groups.add(Group.objects.get_or_create(name=str(role))[0])
    return user
