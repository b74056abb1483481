"""Staged rollout from the ticket: dev first, each next environment once the one before it is
live (smoke test passed), one run at a time per environment, engineers only."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from onboarding import services
from portal.errors import ApplicationError
from portal.runs.models import Run
from tests.onboarding.test_provisioning import (
    approved_request,
    drive,
    engineer_fixture,  # noqa: F401 - fixture
    media_fixture,  # noqa: F401 - fixture
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
        from onboarding.provisioning import plan_for
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
        from onboarding.provisioning import drift, plan_for
        from portal import aws

        request = approved_request(personas)
        assert step(request, engineer, "dev", "provision").status == "succeeded"
        (clean,) = drift.drift_scan_all(actor=engineer)
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
        (found,) = drift.drift_scan_all(actor=engineer)
        drive(found)

        body = client.get(ticket).content.decode()
        assert 'data-drift="dev" data-drifted="true"' in body
        assert "<code>bucket.versioning</code>" in body
        summary = client.get(reverse("onboarding:drift-summary")).content.decode()
        assert f'data-drifted-request="{request.key}"' in summary and "differs in dev" in summary
        home = client.get(reverse("home")).content.decode()
        assert reverse("onboarding:drift-summary") in home
