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
