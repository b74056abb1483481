"""Journey: an engineer provisions an approved source in dev and watches the run, the smoke
test passes, the engineer promotes it to staging and then to prod — where a second engineer
confirms in their own session — and the catalog lists the source."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.onboarding.test_provisioning import approved_request
from tests.personas import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def run_to_success(page, button_test_id: str, *, timeout: float = 120_000) -> None:
    """Click a rollout button on the ticket and watch the run page reach 100%."""
    page.get_by_test_id(button_test_id).click()
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    progress = page.locator("#run-progress")
    expect(progress).to_have_attribute("data-status", "succeeded", timeout=timeout)
    expect(page.get_by_test_id("run-percent")).to_have_text("100%")
    steps = page.locator("[data-step-key]")
    for i in range(steps.count()):
        expect(steps.nth(i)).to_have_attribute("data-step-status", "succeeded")


class ProvisioningJourneyTests:
    def test_an_engineer_rolls_a_source_out_to_prod_and_the_catalog_lists_it(
        self, new_page, cluster, environments, personas
    ):
        cluster.worker(concurrency=2)
        request = approved_request(personas, source_name="journey-orders")
        ticket = f"/onboarding/{request.key}/"

        erin = new_page()
        login(erin, "erin", PASSWORD)
        erin.goto(ticket)
        expect(erin.locator('tr[data-environment="dev"]')).to_have_attribute(
            "data-state", "not started"
        )
        expect(erin.get_by_test_id("provision-staging")).to_be_disabled()

        # dev: provision, watching the steps go by, then the smoke test.
        erin.get_by_test_id("provision-dev").click()
        erin.wait_for_url(re.compile(r"/runs/\d+/$"))
        progress = erin.locator("#run-progress")
        expect(progress).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(erin.locator('[data-step-key="onboarding.provision_bucket"]')).to_have_attribute(
            "data-step-status", "succeeded"
        )
        expect(erin.get_by_test_id("run-percent")).to_have_text("100%")
        erin.goto(ticket)
        expect(erin.locator('tr[data-environment="dev"]')).to_have_attribute(
            "data-state", "provisioned"
        )
        run_to_success(erin, "smoke-dev")
        erin.goto(ticket)
        expect(erin.locator('tr[data-environment="dev"]')).to_have_attribute("data-state", "live")

        # staging: promote, smoke test.
        expect(erin.get_by_test_id("provision-staging")).to_have_text("Promote to staging")
        run_to_success(erin, "provision-staging")
        erin.goto(ticket)
        run_to_success(erin, "smoke-staging")
        erin.goto(ticket)
        expect(erin.locator('tr[data-environment="staging"]')).to_have_attribute(
            "data-state", "live"
        )

        # prod: promote; the run waits for a second engineer, who confirms in their session.
        expect(erin.get_by_test_id("provision-prod")).to_have_text("Promote to prod")
        erin.get_by_test_id("provision-prod").click()
        erin.wait_for_url(re.compile(r"/runs/\d+/$"))
        run_page = erin.url
        progress = erin.locator("#run-progress")
        expect(progress).to_have_attribute("data-status", "waiting", timeout=60_000)
        expect(erin.locator('[data-step-key="runs.confirm"]')).to_contain_text(
            "You started this run"
        )
        expect(erin.get_by_test_id("decide-confirm")).to_have_count(0)

        eddie = new_page()
        login(eddie, "eddie", PASSWORD)
        eddie.goto(ticket)
        expect(eddie.get_by_test_id("awaiting-prod")).to_be_visible()
        eddie.goto(run_page)
        eddie.once("dialog", lambda dialog: dialog.accept())
        eddie.get_by_test_id("decide-confirm").click()

        # Erin's page follows the run without a reload.
        expect(progress).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(erin.locator('[data-step-key="runs.confirm"]')).to_contain_text("confirmed by eddie")
        erin.goto(ticket)
        run_to_success(erin, "smoke-prod")
        erin.goto(ticket)
        for env in ("dev", "staging", "prod"):
            expect(erin.locator(f'tr[data-environment="{env}"]')).to_have_attribute(
                "data-state", "live"
            )

        # The catalog lists the source, live everywhere, from the main navigation.
        erin.get_by_role("link", name="Catalog").click()
        row = erin.locator('tr[data-source="journey-orders"]')
        expect(row).to_be_visible()
        for env in ("dev", "staging", "prod"):
            expect(row.locator(f'[data-environment="{env}"]')).to_have_attribute(
                "data-state", "live"
            )
        expect(row.locator('[data-field="cost-tag"]')).to_have_text("Source=journey-orders")
