"""The catalog of live sources and its DATA_CATALOG.md export: exactly the sources whose
smoke test passed somewhere, their fields, search, the empty state, a constant number of
queries, and the Markdown download.

Which environments are live comes from the request's rollout runs; these tests record the
runs' outcomes as rows (`rollout_run`) instead of driving AWS, which tests/onboarding/
test_rollout.py does.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone

from onboarding.catalog import catalog_markdown
from onboarding.kinds import provision as PROVISION_KIND
from onboarding.kinds import smoke_test as SMOKE_KIND
from onboarding.kinds import teardown as TEARDOWN_KIND
from onboarding.models import OnboardingRequest
from onboarding.selectors import CatalogEntry, EnvironmentState, catalog_entries
from portal.runs.models import Run, RunStatus
from tests.onboarding.test_provisioning import approved_request
from tests.onboarding.test_requests import (
    environment_rows_fixture,  # noqa: F401 - fixture
    media_fixture,  # noqa: F401 - fixture
)


def rollout_run(
    request: OnboardingRequest,
    environment: str,
    kind: str = SMOKE_KIND,
    status: str = RunStatus.SUCCEEDED,
    finished_at: datetime | None = None,
) -> Run:
    """A finished rollout run of `request` in `environment`, as the engine leaves it."""
    finished = finished_at or timezone.now()
    return Run.objects.create(
        kind=kind,
        title=f"{kind} {request.key} in {environment}",
        status=status,
        params={"request_id": request.pk, "environment": environment},
        plan=[],
        subject_type=ContentType.objects.get_for_model(OnboardingRequest),
        subject_id=str(request.pk),
        started_at=finished - timedelta(minutes=1),
        finished_at=finished,
    )


def go_live(request: OnboardingRequest, environment: str, **kwargs: Any) -> Run:
    rollout_run(request, environment, PROVISION_KIND, **kwargs)
    return rollout_run(request, environment, SMOKE_KIND, **kwargs)


def catalog_page(client, user, **params) -> str:
    client.force_login(user)
    response = client.get(reverse("onboarding:catalog-list"), params)
    assert response.status_code == 200
    return response.content.decode()


def row(html: str, source: str) -> str:
    start = html.index(f'<tr data-source="{source}">')
    return html[start : html.index("</tr>", start)]


class CatalogTests:
    def test_it_lists_exactly_the_live_sources_with_their_fields(
        self, client, personas, environment_rows
    ):
        live = approved_request(
            personas,
            source_name="clicks",
            downstream_consumers="BI dashboards\nreco-team@example.com",
        )
        go_live(live, "dev")
        go_live(live, "staging")
        provisioned = approved_request(personas, source_name="orders")
        rollout_run(provisioned, "dev", PROVISION_KIND)
        failed = approved_request(personas, source_name="payments")
        rollout_run(failed, "dev", PROVISION_KIND)
        rollout_run(failed, "dev", SMOKE_KIND, status=RunStatus.FAILED)
        gone = approved_request(personas, source_name="legacy")
        go_live(gone, "dev")
        rollout_run(gone, "dev", TEARDOWN_KIND)
        approved_request(personas, source_name="untouched")

        html = catalog_page(client, personas["nobody"])  # any signed-in user may read it

        assert 'data-count="1"' in html
        assert [e.request.source_name for e in catalog_entries().entries] == ["clicks"]
        clicks = row(html, "clicks")
        assert reverse("onboarding:request-detail", args=[live.number]) in clicks
        assert "Click events from the web shop." in clicks
        assert "version 1" in clicks
        assert "s3://etl-schemas-dev/schemas/clicks/v1.json</code> (dev)" in clicks
        assert "s3://etl-schemas-staging/schemas/clicks/v1.json</code> (staging)" in clicks
        assert "etl-schemas-prod" not in clicks  # prod is not live
        assert '<td data-field="owner">web-analytics</td>' in clicks
        assert "Hourly batch (p95 &lt; 30 s)" in clicks
        assert "400 days" in clicks and "GDPR Art. 6(1)(f), legitimate interest" in clicks
        assert '<td data-field="sensitivity">PII</td>' in clicks
        assert "BI dashboards<br>reco-team@example.com" in clicks
        assert 'data-environment="dev" data-state="live"' in clicks
        assert 'data-environment="staging" data-state="live"' in clicks
        assert 'data-environment="prod" data-state="not started"' in clicks
        assert "<code>Source=clicks</code>" in clicks
        for absent in ("orders", "payments", "legacy", "untouched"):
            assert f'data-source="{absent}"' not in html

    def test_it_finds_sources_by_name_team_consumer_or_key(
        self, client, personas, environment_rows
    ):
        clicks = approved_request(personas, source_name="clicks")
        orders = approved_request(
            personas, source_name="orders", owner_team="commerce", downstream_consumers="finance"
        )
        go_live(clicks, "dev")
        go_live(orders, "dev")

        assert 'data-source="orders"' in catalog_page(client, personas["rita"], q="commerce")
        assert 'data-source="clicks"' not in catalog_page(client, personas["rita"], q="finance")
        by_key = catalog_page(client, personas["rita"], q=clicks.key)
        assert 'data-source="clicks"' in by_key and 'data-source="orders"' not in by_key
        none = catalog_page(client, personas["rita"], q="nothing-like-this")
        assert "No live source matches “nothing-like-this”." in none
        assert "Show all 2" in none
        url = reverse("onboarding:catalog-list")
        fragment = client.get(url, {"q": "orders"}, HTTP_HX_REQUEST="true").content.decode()
        assert '<div id="results"' in fragment and "<html" not in fragment
        assert 'data-source="orders"' in fragment

    def test_it_says_no_source_is_live_yet(self, client, personas, environment_rows):
        rollout_run(approved_request(personas), "dev", PROVISION_KIND)

        html = catalog_page(client, personas["erin"])

        assert (
            "No source is live yet — sources appear here once their smoke test passes in an "
            "environment." in html
        )
        assert reverse("onboarding:catalog-list") in html  # in the main nav

    def test_it_runs_the_same_number_of_queries_for_three_sources_as_for_one(
        self, client, personas, environment_rows, django_assert_max_num_queries
    ):
        go_live(approved_request(personas, source_name="first"), "dev")
        client.force_login(personas["erin"])
        url = reverse("onboarding:catalog-list")
        client.get(url)  # warm the content-type cache
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as one:
            assert client.get(url).status_code == 200
        for name in ("second", "third"):
            request = approved_request(personas, source_name=name)
            go_live(request, "dev")
            go_live(request, "staging")

        with django_assert_max_num_queries(len(one)):
            html = client.get(url).content.decode()
        assert 'data-count="3"' in html

    def test_it_needs_a_sign_in(self, client, environment_rows):
        response = client.get(reverse("onboarding:catalog-list"))
        assert response.status_code == 302 and "login" in response["Location"]
        export = client.get(reverse("onboarding:catalog-export"))
        assert export.status_code == 302 and "login" in export["Location"]


class CatalogExportTests:
    def test_it_downloads_one_section_per_live_source_in_name_order(
        self, client, personas, environment_rows
    ):
        zeta = approved_request(personas, source_name="zeta-events", owner_team="zeta-team")
        alpha = approved_request(
            personas,
            source_name="alpha-events",
            retention_legal_basis="SOX",
            downstream_consumers="Finance reporting\nrisk@example.com",
        )
        go_live(zeta, "dev")
        go_live(alpha, "dev")
        go_live(alpha, "staging", finished_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
        hidden = approved_request(personas, source_name="not-live")
        rollout_run(hidden, "dev", PROVISION_KIND)
        client.force_login(personas["fay"])

        response = client.get(reverse("onboarding:catalog-export"))

        assert response.status_code == 200
        assert response["Content-Type"] == "text/markdown; charset=utf-8"
        assert response["Content-Disposition"] == 'attachment; filename="DATA_CATALOG.md"'
        text = response.content.decode()
        assert text.startswith("# Data catalog\n")
        assert "Sources live in at least one environment: 2." in text
        assert text.index("## alpha-events") < text.index("## zeta-events")
        assert "not-live" not in text
        alpha_section = text[text.index("## alpha-events") : text.index("## zeta-events")]
        ticket = f"[{alpha.key}](http://127.0.0.1:8000/onboarding/DATA-{alpha.number}/)"
        assert f"- **Ticket:** {ticket}" in alpha_section
        assert "- **Owner:** web-analytics" in alpha_section
        assert "- **Latency SLA:** Hourly batch (p95 < 30 s)" in alpha_section
        assert "- **Retention:** 400 days (SOX)" in alpha_section
        assert "- **Sensitivity:** PII" in alpha_section
        assert "- **Downstream consumers:** Finance reporting\n  risk@example.com" in alpha_section
        assert "staging: live since 2026-01-02 03:04 UTC" in alpha_section
        assert "prod: not started" in alpha_section
        assert "- **Cost tag:** `Source=alpha-events`" in alpha_section
        assert "### Schema (version 1)" in alpha_section
        assert "`s3://etl-schemas-dev/schemas/alpha-events/v1.json` (dev)" in alpha_section
        fenced = alpha_section.split("```json\n", 1)[1].split("\n```", 1)[0]
        assert json.loads(fenced) == json.loads(alpha.schema_text)
        assert "- **Owner:** zeta-team" in text

    def test_it_fences_a_schema_that_itself_holds_backticks(self, environment_rows, personas):
        request = approved_request(personas, source_name="ticks")
        request.schema_text = '{"description": "use ```code``` here"}'
        env = environment_rows[0]
        entry = CatalogEntry(request, [EnvironmentState(env, "live")], [], "Source=ticks")

        text = catalog_markdown([entry], generated_at=timezone.now())

        assert "````json\n" in text and "\n````\n" in text

    def test_an_empty_catalog_still_has_its_header(self):
        text = catalog_markdown([], generated_at=datetime(2026, 2, 1, tzinfo=UTC))
        assert text.startswith("# Data catalog\n")
        assert "Sources live in at least one environment: 0." in text
        assert "Generated by Onramp on 2026-02-01 00:00 UTC" in text
