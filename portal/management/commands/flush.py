"""Django's flush, with the audit table's append-only triggers lifted while it wipes.

The triggers (migration 0003) refuse DELETE and TRUNCATE on the audit table, which is what
flush does; the test suite runs flush after every transactional test.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush

from portal.audit import audit_triggers_lifted


class Command(flush.Command):
    def handle(self, **options: Any) -> None:
        with audit_triggers_lifted(using=options["database"]):
            super().handle(**options)
