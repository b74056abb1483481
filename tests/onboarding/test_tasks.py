"""The scheduled drift scan: beat starts a drift check of every live source."""

from __future__ import annotations

from onboarding.tasks import drift_scan
from portal.roles import SCHEDULER_USERNAME, Role, has_role
from portal.runs.models import Run
from tests.onboarding.test_provisioning import (
    approved_request,
    engineer_fixture,  # noqa: F401 - fixture
    media_fixture,  # noqa: F401 - fixture
    provision,
)


class DriftScanTaskTests:
    def test_it_checks_only_provisioned_sources_as_the_scheduler(
        self, environments, personas, engineer
    ):
        request = approved_request(personas)
        assert drift_scan() == 0  # approved, but nothing provisioned yet
        assert provision(request, engineer).status == "succeeded"

        assert drift_scan() == 1

        run = Run.objects.filter(kind="onboarding.drift_check").get()
        assert run.created_by.username == SCHEDULER_USERNAME
        assert has_role(run.created_by, Role.ENGINEER)
        assert not run.created_by.has_usable_password()
