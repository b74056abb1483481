"""The Django admin: every model registered, the audit trail and runs read-only."""

from __future__ import annotations

import json

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from portal.audit import audit_record, audit_verify
from portal.models import AuditChainHead, AuditEvent, Environment
from portal.runs.models import Decision, Run, Step

APP_LABELS = ("portal", "runs")
MODELS = [model for label in APP_LABELS for model in apps.get_app_config(label).get_models()]


def _url(model: type, view: str, *args: object) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.fixture
def superuser_client(client: Client, db) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "x-long-password-1")
    client.force_login(user)
    return client


@pytest.fixture
def rows(personas) -> dict[str, object]:
    """One row of every model, so changelists render real data."""
    environment = Environment.objects.create(
        name="dev", account_id="123456789012", lambda_functions=["ingest"]
    )
    run = Run.objects.create(
        kind="environment.check", title="Check dev", created_by=personas["erin"], plan=["a"]
    )
    step = Step.objects.create(run=run, position=0, key="a", title="Step A")
    event = audit_record(action="run.started", actor=personas["erin"], obj=run)
    decision = Decision.objects.create(step=step, choice="confirm", chosen_by=personas["eddie"])
    return {
        "environment": environment,
        "run": run,
        "step": step,
        "event": event,
        "decision": decision,
    }


class AdminRegistryTests:
    def test_it_registers_every_portal_and_runs_model(self) -> None:
        assert {m._meta.label for m in MODELS} >= {
            "portal.AuditEvent",
            "portal.AuditChainHead",
            "portal.Environment",
            "runs.Run",
            "runs.Step",
        }
        missing = [m._meta.label for m in MODELS if not admin.site.is_registered(m)]
        assert missing == []


@pytest.mark.django_db
class AdminChangelistTests:
    @pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
    def test_it_renders_the_changelist(self, superuser_client, rows, model) -> None:
        response = superuser_client.get(_url(model, "changelist"))
        assert response.status_code == 200
        assert response.context["cl"].result_count >= 1

    @pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
    def test_it_renders_a_searched_and_filtered_changelist(
        self, superuser_client, rows, model
    ) -> None:
        response = superuser_client.get(_url(model, "changelist"), {"q": "dev"})
        assert response.status_code == 200

    def test_it_shows_a_run_with_its_steps(self, superuser_client, rows) -> None:
        response = superuser_client.get(_url(Run, "change", rows["run"].pk))
        assert response.status_code == 200
        assert "Step A" in response.content.decode()


@pytest.mark.django_db
class AuditAdminTests:
    @pytest.mark.parametrize("model", [AuditEvent, AuditChainHead, Run, Step])
    def test_it_allows_no_add_change_or_delete(self, rf, model) -> None:
        request = rf.get("/")
        request.user = User(is_superuser=True, is_staff=True, is_active=True)
        model_admin = admin.site._registry[model]
        assert not model_admin.has_add_permission(request)
        assert not model_admin.has_change_permission(request)
        assert not model_admin.has_delete_permission(request)
        assert "delete_selected" not in model_admin.get_actions(request)

    def test_it_refuses_the_delete_page_and_keeps_the_event(self, superuser_client, rows) -> None:
        event = rows["event"]
        url = _url(AuditEvent, "delete", event.pk)
        assert superuser_client.get(url).status_code == 403
        assert superuser_client.post(url, {"post": "yes"}).status_code == 403
        assert AuditEvent.objects.filter(pk=event.pk).exists()

    def test_it_ignores_a_bulk_delete_action(self, superuser_client, rows) -> None:
        event = rows["event"]
        superuser_client.post(
            _url(AuditEvent, "changelist"),
            {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
        )
        assert AuditEvent.objects.filter(pk=event.pk).exists()

    def test_it_shows_an_event_read_only(self, superuser_client, rows) -> None:
        event = rows["event"]
        response = superuser_client.get(_url(AuditEvent, "change", event.pk))
        assert response.status_code == 200
        assert not response.context["has_change_permission"]
        assert superuser_client.post(_url(AuditEvent, "change", event.pk), {}).status_code == 403
        assert superuser_client.get(_url(AuditEvent, "add")).status_code == 403


@pytest.mark.django_db
class EnvironmentAdminTests:
    def test_it_lists_the_useful_columns(self, superuser_client, rows) -> None:
        response = superuser_client.get(_url(Environment, "changelist"))
        body = response.content.decode()
        for column in ("Name", "Order", "Account id", "Region", "Role arn", "Is production"):
            assert column in body
        assert "123456789012" in body

    def test_it_records_an_edit_in_the_audit_trail(self, superuser_client, rows) -> None:
        environment = rows["environment"]
        url = _url(Environment, "change", environment.pk)
        form = superuser_client.get(url).context["adminform"].form
        data = {k: v for k, v in form.initial.items() if v is not None and k != "lambda_functions"}
        functions = json.dumps(form.initial["lambda_functions"])
        # The browser also posts the hidden initial value Django adds for callable defaults.
        data.update({"lambda_functions": functions, "initial-lambda_functions": functions})
        data["region"] = "eu-west-1"
        response = superuser_client.post(url, data)
        assert response.status_code == 302, response.context["adminform"].form.errors
        environment.refresh_from_db()
        assert environment.region == "eu-west-1"
        event = AuditEvent.objects.get(action="environment.changed")
        assert event.actor_label == "root"
        assert event.object_id == str(environment.pk)
        assert event.data == {"fields": {"region": "eu-west-1"}}
        assert audit_verify() == []
