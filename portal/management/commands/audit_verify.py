"""manage.py audit_verify: check the audit trail's hash chain; non-zero exit on tampering."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from portal.audit import audit_verify
from portal.models import AuditEvent


class Command(BaseCommand):
    help = (
        "Recompute every audit event's hash and check the chain: reports changed, inserted "
        "and deleted events, and exits non-zero if there are any."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        problems = audit_verify()
        for problem in problems:
            self.stdout.write(problem)
        if problems:
            raise CommandError(f"audit trail FAILED verification: {len(problems)} problem(s)")
        count = AuditEvent.objects.count()
        self.stdout.write(self.style.SUCCESS(f"audit trail OK: {count} events"))
