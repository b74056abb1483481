"""Journey: a requester files a source with 10 samples, validation passes, security and
governance approve in their own sessions, and the ticket shows approved."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.onboarding.test_requests import SCHEMA, complete_spec, malformed_ndjson, valid_ndjson
from tests.personas import PASSWORD, make_persona

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def fill_spec(page, spec: dict) -> None:
    import json

    for name, value in spec.items():
        if name == "sensitivity":
            for choice in value:
                page.check(f'input[name="sensitivity"][value="{choice}"]')
            continue
        field = page.locator(f"#id_{name}")
        if field.evaluate("el => el.tagName") == "SELECT":
            field.select_option(str(value))
        elif name == "schema_text":
            field.fill(json.dumps(SCHEMA, indent=2))
        else:
            field.fill(str(value))


class OnboardingJourneyTests:
    def test_a_request_is_filed_validated_and_approved_by_both_approvers(
        self, new_page, cluster, environments, tmp_path: Path
    ):
        for name in ("rita", "sam", "gina"):
            make_persona(name)
        cluster.worker(concurrency=2)
        files = []
        for i in range(9):
            path = tmp_path / f"valid-{i:02}.ndjson"
            path.write_bytes(valid_ndjson(i))
            files.append(str(path))
        bad = tmp_path / "malformed-00.ndjson"
        bad.write_bytes(malformed_ndjson(0))
        files.append(str(bad))

        # The requester files the request and its samples.
        rita = new_page()
        login(rita, "rita", PASSWORD)
        rita.goto("/onboarding/new/")
        fill_spec(rita, complete_spec())
        rita.get_by_test_id("save-request").click()
        rita.wait_for_url(re.compile(r"/onboarding/DATA-\d+/$"))
        ticket = rita.url
        expect(rita.get_by_test_id("request-title")).to_contain_text(
            "[DATA-ONBOARD] Add source: clickstream"
        )
        rita.set_input_files('input[type="file"][name="files"]', files)
        rita.get_by_test_id("upload-samples").click()
        expect(rita.locator("tr[data-sample]")).to_have_count(10)
        rita.locator(
            'tr[data-sample="malformed-00.ndjson"] button', has_text="mark expected malformed"
        ).click()
        expect(rita.locator('tr[data-sample="malformed-00.ndjson"]')).to_contain_text("malformed")

        # Validation runs on a worker; the page follows it without a reload.
        rita.get_by_test_id("validate").click()
        expect(rita.locator("#validation")).to_have_attribute("data-passed", "true", timeout=90_000)
        expect(rita.locator('tr[data-sample][data-state="passes"]')).to_have_count(10)
        submit = rita.get_by_test_id("submit-request")
        expect(submit).to_be_enabled()
        submit.click()
        expect(rita.get_by_test_id("request-status")).to_have_text("Waiting for approval")

        # Each approver signs off in their own session.
        for username, role in (("sam", "security"), ("gina", "governance")):
            approver = new_page()
            login(approver, username, PASSWORD)
            approver.goto(ticket)
            expect(approver.get_by_test_id(f"approve-{role}")).to_be_visible()
            approver.get_by_test_id(f"approve-{role}").click()
            expect(approver.locator(f'tr[data-approval-role="{role}"]')).to_contain_text(
                f"approved by {username}"
            )

        rita.goto(ticket)
        expect(rita.get_by_test_id("request-status")).to_have_text("Approved")
