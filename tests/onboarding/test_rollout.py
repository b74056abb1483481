"""Staged rollout from the ticket: dev first, each next environment once the one before it is
live (smoke test passed), one run at a time per environment, engineers only."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from onboarding import services
from onboarding.kinds import provision as PROVISION_KIND
from onboarding.kinds import teardown as TEARDOWN_KIND
from portal.errors import ApplicationError
from portal.models import AuditEvent
from portal.runs import dispatch
from portal.runs.gates import CONFIRM_STEP
from portal.runs.models import Run
from portal.runs.services import run_confirm_step
from tests.onboarding.test_provisioning import (
    approved_request,
    drive,
    engineer_fixture,  # noqa: F401 - fixture
    media_fixture,  # noqa: F401 - fixture
    start,
)


def states(request) -> dict[str, str]:
    return {r.environment.name: r.state for r in services.rollout_states(request)}


def step(request, engineer, environment: str, action: str) -> Run:
    run = services.rollout_start(
        request=request, actor=engineer, environment=environment, action=action
    )
    return drive(run)


class RolloutTests:
    def test_it_walks_dev_then_staging_only_after_dev_is_live(
        self, environments, personas, engineer
    ):
        request = approved_request(personas)
        assert states(request) == {
            "dev": "not started",
            "staging": "not started",
            "prod": "not started",
        }
        with pytest.raises(ApplicationError, match="before it must pass its smoke test"):
            services.rollout_start(
                request=request, actor=engineer, environment="staging", action="provision"
            )
        with pytest.raises(ApplicationError, match="provision it first"):
            services.rollout_start(
                request=request, actor=engineer, environment="dev", action="smoke"
            )

        assert step(request, engineer, "dev", "provision").status == "succeeded"
        assert states(request)["dev"] == "provisioned"
        with pytest.raises(ApplicationError, match="before it must pass its smoke test"):
            services.rollout_start(
                request=request, actor=engineer, environment="staging", action="provision"
            )

        assert step(request, engineer, "dev", "smoke").status == "succeeded"
        assert states(request)["dev"] == "live"
        staging = services.rollout_start(
            request=request, actor=engineer, environment="staging", action="provision"
        )
        assert states(request)["staging"] == "provisioning"
        # A second click while the first run is still going starts nothing.
        with pytest.raises(ApplicationError, match="a run is in progress"):
            services.rollout_start(
                request=request, actor=engineer, environment="staging", action="provision"
            )
        assert drive(staging).status == "succeeded"
        assert Run.objects.filter(kind="onboarding.provision").count() == 2

    def test_only_engineers_may_roll_out_and_only_approved_requests(
        self, environments, personas, engineer, client
    ):
        request = approved_request(personas)
        for name in ("rita", "sam", "ada"):
            with pytest.raises(PermissionDenied):
                services.rollout_start(
                    request=request, actor=personas[name], environment="dev", action="provision"
                )
        url = reverse("onboarding:rollout-start", args=[request.number])
        client.force_login(personas["rita"])
        assert client.post(url, {"environment": "dev", "action": "provision"}).status_code == 403
        assert not Run.objects.filter(kind="onboarding.provision").exists()

        client.force_login(engineer)
        response = client.post(url, {"environment": "dev", "action": "provision"})
        run = Run.objects.get(kind="onboarding.provision")
        assert response.status_code == 302 and response["Location"] == reverse(
            "runs:detail", args=[run.pk]
        )

    def test_the_ticket_shows_each_environment_and_refuses_beside_the_panel(
        self, environments, personas, engineer, client
    ):
        request = approved_request(personas)
        client.force_login(engineer)
        page = client.get(reverse("onboarding:request-detail", args=[request.number]))
        body = page.content.decode()
        assert 'data-environment="dev" data-state="not started"' in body
        assert 'data-testid="provision-dev"' in body
        assert 'data-testid="provision-staging" disabled' in body
        refused = client.post(
            reverse("onboarding:rollout-start", args=[request.number]),
            {"environment": "prod", "action": "provision"},
        )
        assert refused.status_code == 200
        assert 'data-testid="rollout-error"' in refused.content.decode()
        client.force_login(personas["rita"])
        body = client.get(reverse("onboarding:request-detail", args=[request.number])).content
        assert b'data-testid="provision-dev"' not in body  # requesters see states, no buttons


class SuccessCriteriaTests:
    def test_it_measures_each_criterion_with_its_evidence(
        self, environments, personas, engineer, client
    ):
        request = approved_request(personas)
        assert step(request, engineer, "dev", "provision").status == "succeeded"
        assert step(request, engineer, "dev", "smoke").status == "succeeded"

        run = step(request, engineer, "dev", "criteria")

        assert run.status == "succeeded", run.error
        (dev,) = [r for r in services.rollout_states(request) if r.environment.name == "dev"]
        assert dev.state == "live"  # measuring reads; it does not change the state
        measured = {c["key"]: c for c in dev.criteria["criteria"]}
        assert measured["files"]["passed"] is False  # 9 smoke files, the goal is 100
        assert measured["files"]["evidence"].startswith("9 succeeded, 0 failed")
        assert measured["malformed"]["passed"] is True
        assert measured["malformed"]["evidence"].startswith("1 of 1")
        assert measured["latency"]["passed"] is True and "p95" in measured["latency"]["evidence"]
        assert measured["security"]["passed"] is True
        assert measured["monitoring"]["passed"] is True
        assert "widget present" in measured["monitoring"]["evidence"]

        client.force_login(engineer)
        body = client.get(reverse("onboarding:request-detail", args=[request.number])).content
        assert b'data-criterion="files" data-passed="false"' in body
        assert b'data-criterion="security" data-passed="true"' in body

    def test_a_security_gap_made_by_hand_shows_as_not_met(self, environments, personas, engineer):
        from onboarding.request_state import plan_for
        from portal import aws

        request = approved_request(personas)
        assert step(request, engineer, "dev", "provision").status == "succeeded"
        dev = next(e for e in environments if e.name == "dev")
        bucket = plan_for(request, dev)["bucket"]["name"]
        aws.client("s3", dev).put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
        )

        assert step(request, engineer, "dev", "criteria").status == "succeeded"

        (row,) = [r for r in services.rollout_states(request) if r.environment.name == "dev"]
        security = next(c for c in row.criteria["criteria"] if c["key"] == "security")
        assert security["passed"] is False and "S3.14" in security["evidence"]


class DriftFlagTests:
    def test_a_change_by_hand_is_flagged_on_the_ticket_and_the_dashboard(
        self, environments, personas, engineer, client
    ):
        from onboarding.request_state import plan_for
        from portal import aws

        request = approved_request(personas)
        assert step(request, engineer, "dev", "provision").status == "succeeded"
        (clean,) = services.drift_scan_all(actor=engineer)
        drive(clean)
        client.force_login(engineer)
        ticket = reverse("onboarding:request-detail", args=[request.number])
        assert b'data-drift="dev" data-drifted="false"' in client.get(ticket).content
        summary = client.get(reverse("onboarding:drift-summary")).content.decode()
        assert "Every checked source matches its approved plan." in summary

        dev = next(e for e in environments if e.name == "dev")
        bucket = plan_for(request, dev)["bucket"]["name"]
        aws.client("s3", dev).put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}
        )
        (found,) = services.drift_scan_all(actor=engineer)
        drive(found)

        body = client.get(ticket).content.decode()
        assert 'data-drift="dev" data-drifted="true"' in body
        assert "<code>bucket.versioning</code>" in body
        summary = client.get(reverse("onboarding:drift-summary")).content.decode()
        assert f'data-drifted-request="{request.key}"' in summary and "differs in dev" in summary
        home = client.get(reverse("home")).content.decode()
        assert reverse("onboarding:drift-summary") in home


def park(run: Run, timeout: float = 30.0) -> Run:
    """Execute the run in-process until it waits for a person (or ends)."""
    deadline = time.monotonic() + timeout
    while True:
        dispatch.advance(run.pk)
        run.refresh_from_db()
        if run.is_terminal or (run.status == "waiting" and run.wake_at is None):
            return run
        assert time.monotonic() < deadline, f"run {run.pk} still {run.status}"
        time.sleep(0.1)


class ProdConfirmationTests:
    def test_a_prod_provision_waits_for_a_second_engineer(self, environments, personas):
        request = approved_request(personas)
        erin, eddie = personas["erin"], personas["eddie"]
        run = park(start(PROVISION_KIND, request, erin, "prod"))

        assert run.plan[:2] == [CONFIRM_STEP, "onboarding.check_approval"]
        assert run.status == "waiting"
        gate, *rest = run.steps.order_by("position")
        assert gate.status == "waiting" and {s.status for s in rest} == {"pending"}
        with pytest.raises(ApplicationError, match="someone else must confirm"):
            run_confirm_step(run=run, step_id=gate.pk, actor=erin)
        for name in ("rita", "sam", "ada"):
            with pytest.raises(PermissionDenied):
                run_confirm_step(run=run, step_id=gate.pk, actor=personas[name])
        assert not AuditEvent.objects.filter(action="step.decided").exists()

        run_confirm_step(run=run, step_id=gate.pk, actor=eddie)

        (event,) = AuditEvent.objects.filter(action="step.decided")
        assert event.actor == eddie
        with pytest.raises(ApplicationError, match="eddie already confirmed"):
            run_confirm_step(run=run, step_id=gate.pk, actor=eddie)
        run.refresh_from_db()
        assert run.wake_at is not None  # woken: a worker picks it up now
        assert drive(run).status == "succeeded", run.error
        gate.refresh_from_db()
        assert gate.output["confirmed_by"] == "eddie"

    def test_only_production_is_gated_and_the_setting_turns_it_off(
        self, environments, personas, settings
    ):
        request = approved_request(personas)
        erin = personas["erin"]
        assert start(PROVISION_KIND, request, erin, "dev").plan[0] == "onboarding.check_approval"
        assert start(PROVISION_KIND, request, erin, "staging").plan[0] != CONFIRM_STEP
        assert start(TEARDOWN_KIND, request, erin, "prod").plan[0] == CONFIRM_STEP
        settings.ONBOARDING_PROD_CONFIRMATION = False
        assert start(PROVISION_KIND, request, erin, "prod").plan[0] == "onboarding.check_approval"
        assert start(TEARDOWN_KIND, request, erin, "prod").plan[0] != CONFIRM_STEP

    def test_promoting_to_prod_tells_the_other_engineers_and_they_confirm_on_the_run_page(
        self, environments, personas, client, mailoutbox, django_capture_on_commit_callbacks
    ):
        request = approved_request(personas)
        erin, eddie = personas["erin"], personas["eddie"]
        ticket = reverse("onboarding:request-detail", args=[request.number])
        for env in ("dev", "staging"):
            assert step(request, erin, env, "provision").status == "succeeded"
            assert step(request, erin, env, "smoke").status == "succeeded"
        client.force_login(erin)
        assert ">Promote to prod</button>" in client.get(ticket).content.decode()

        with django_capture_on_commit_callbacks(execute=True):
            run = services.rollout_start(
                request=request, actor=erin, environment="prod", action="provision"
            )
        run = park(run)

        assert states(request)["prod"] == "awaiting confirmation"
        (mail,) = [m for m in mailoutbox if "confirm" in m.subject]
        assert mail.to == ["eddie@example.com"]  # every engineer but the one who started it
        assert f"/runs/{run.pk}/" in mail.body
        awaiting = client.get(ticket).content.decode()
        assert 'data-testid="awaiting-prod"' in awaiting
        assert 'hx-trigger="every 10.0s"' in awaiting  # a person may take hours: look less often
        page = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
        assert 'data-testid="decide-confirm"' not in page
        assert "You started this run" in page
        client.force_login(personas["rita"])
        page = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
        assert 'data-testid="decide-confirm"' not in page

        client.force_login(eddie)
        gate = run.steps.get(key=CONFIRM_STEP)
        assert (
            'data-testid="decide-confirm"'
            in client.get(reverse("runs:detail", args=[run.pk])).content.decode()
        )
        response = client.post(
            reverse("runs:step-decide", args=[run.pk, gate.pk]), {"choice": "confirm"}
        )
        assert response.status_code == 302

        assert drive(run).status == "succeeded", run.error
        assert states(request)["prod"] == "provisioned"
        assert ">Provision again</button>" in client.get(ticket).content.decode()


class RolloutPanelTests:
    def test_the_panel_follows_a_run_until_it_ends(self, environments, personas, client, settings):
        request = approved_request(personas)
        erin = personas["erin"]
        panel = reverse("onboarding:rollout-panel", args=[request.number])
        client.force_login(erin)
        idle = client.get(panel, headers={"HX-Request": "true"})
        assert idle.status_code == 286 and 'data-busy="false"' in idle.content.decode()

        run = services.rollout_start(
            request=request, actor=erin, environment="dev", action="provision"
        )
        ticket = client.get(reverse("onboarding:request-detail", args=[request.number]))
        assert f'hx-get="{panel}" hx-trigger="every {settings.RUNS_POLL_SECONDS}s"' in (
            ticket.content.decode()
        )
        busy = client.get(panel, headers={"HX-Request": "true"})
        assert busy.status_code == 200
        body = busy.content.decode()
        assert body.lstrip().startswith('<section class="card" id="rollout" data-busy="true"')
        assert 'data-environment="dev" data-state="provisioning"' in body

        drive(run)
        done = client.get(panel, headers={"HX-Request": "true"})
        assert done.status_code == 286
        assert 'data-environment="dev" data-state="provisioned"' in done.content.decode()
        client.force_login(User.objects.create_user("no-roles"))
        assert client.get(panel).status_code == 403
