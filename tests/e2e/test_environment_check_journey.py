"""Journey: an engineer checks the environments and watches the run complete."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.personas import PASSWORD, make_persona

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class EnvironmentCheckJourneyTests:
    def test_an_engineer_starts_a_check_and_sees_every_step_succeed(
        self, new_page, cluster, environments
    ):
        make_persona("erin")
        cluster.worker(concurrency=2)
        page = new_page()
        login(page, "erin", PASSWORD)

        expect(page.get_by_test_id("sandbox-banner")).to_be_visible()
        page.get_by_test_id("start-environment-check").click()
        page.wait_for_url(re.compile(r"/runs/\d+/$"))

        progress = page.locator("#run-progress")
        expect(progress).to_have_attribute("data-status", "succeeded", timeout=60_000)
        expect(progress).to_have_attribute("data-percent", "100")
        expect(page.get_by_test_id("run-percent")).to_have_text("100%")
        steps = page.locator("[data-step-key]")
        assert steps.count() == 5 * len(environments)
        for i in range(steps.count()):
            expect(steps.nth(i)).to_have_attribute("data-step-status", "succeeded")
