"""Create one demo user per role, plus an admin superuser. Safe to run again.

In the sandbox the passwords are fixed and printed, so anyone running the embedded set-up
can sign in as every role. Outside the sandbox the command refuses unless --force; then each
new user gets a random password, printed once, and existing users keep theirs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from portal.roles import Role


@dataclass(frozen=True)
class DemoUser:
    username: str
    roles: tuple[Role, ...]
    superuser: bool = False


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("requester", (Role.REQUESTER,)),
    DemoUser("security", (Role.SECURITY_APPROVER,)),
    DemoUser("governance", (Role.GOVERNANCE_APPROVER,)),
    DemoUser("engineer", (Role.ENGINEER,)),
    DemoUser("finops", (Role.FINOPS,)),
    DemoUser("admin", (Role.ADMIN,), superuser=True),
)


# Printed instead of a password for an existing user outside the sandbox.
UNCHANGED = "(unchanged)"


def sandbox_password(username: str) -> str:
    """The fixed sandbox password for a demo user (printed; never used outside the sandbox)."""
    return f"onramp-{username}"


class Command(BaseCommand):
    help = "Create one demo user per role plus an admin superuser (sandbox only unless --force)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force",
            action="store_true",
            help="Run even though ONRAMP_SANDBOX is off; new users get random passwords.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SANDBOX and not options["force"]:
            raise CommandError(
                "Refusing to create demo users: ONRAMP_SANDBOX is off, so this looks like a "
                "real deployment. Pass --force to create them anyway (random passwords)."
            )
        rows = []
        with transaction.atomic():
            for demo in DEMO_USERS:
                rows.append(self._ensure(demo, sandbox=settings.SANDBOX))
        self.stdout.write("Demo logins:")
        self.stdout.write(f"  {'username':<12} {'password':<26} roles")
        for username, password, roles in rows:
            self.stdout.write(f"  {username:<12} {password:<26} {roles}")

    def _ensure(self, demo: DemoUser, *, sandbox: bool) -> tuple[str, str, str]:
        user, created = User.objects.get_or_create(
            username=demo.username,
            defaults={"email": f"{demo.username}@example.com", "first_name": demo.username},
        )
        if sandbox:
            # Reset every time, so the printed password always works.
            password = sandbox_password(demo.username)
            user.set_password(password)
        elif created:
            password = secrets.token_urlsafe(15)
            user.set_password(password)
        else:
            password = UNCHANGED
        user.is_active = True
        user.is_staff = demo.superuser
        user.is_superuser = demo.superuser
        user.save()
        for role in demo.roles:
            user.groups.add(Group.objects.get_or_create(name=str(role))[0])
        roles = ", ".join(str(role) for role in demo.roles)
        if demo.superuser:
            roles += " (superuser)"
        return demo.username, password, roles
