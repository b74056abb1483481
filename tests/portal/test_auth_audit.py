"""Signing in and out are audited: one event each, never a password."""

from __future__ import annotations

from django.urls import reverse

from portal.models import AuditEvent
from tests.personas import PASSWORD


class AuthAuditTests:
    def test_a_login_and_a_logout_write_one_event_each(self, client, personas):
        client.post(reverse("login"), {"username": "erin", "password": PASSWORD})
        client.post(reverse("logout"))
        actions = list(AuditEvent.objects.order_by("seq").values_list("action", "actor_label"))
        assert actions == [("auth.login", "erin"), ("auth.logout", "erin")]

    def test_a_failed_login_is_recorded_without_the_password(self, client, personas):
        client.post(reverse("login"), {"username": "erin", "password": "hunter2-wrong"})
        event = AuditEvent.objects.get()
        assert event.action == "auth.login_failed" and event.data == {"username": "erin"}
        assert "hunter2" not in str(AuditEvent.objects.values_list())
