"""The 30-day review's measured volume: the pure counting, growth and comparison rules, and
the read-only run against the sandbox — objects and bytes per day in prod's raw bucket, the
smoke test's own uploads left out, the listing cap, where the figures came from, and the
review recorded with them as evidence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from onboarding import services
from onboarding.aws.volume import measure
from onboarding.kinds import smoke_test as SMOKE_KIND
from onboarding.kinds import volume_review as VOLUME_KIND
from onboarding.models import HandoffMark
from onboarding.volume import (
    SOURCE_LABELS,
    choose_figures,
    compare_figure,
    compare_volume,
    count_listing,
    storage_growth_per_day,
    window_days,
    window_start,
)
from portal import aws
from portal.errors import ApplicationError
from portal.models import AuditEvent
from portal.runs.models import Run
from tests.onboarding.test_provisioning import (
    approved_request,
    drive,
    engineer_fixture,  # noqa: F401 - fixture
    env_named,
    media_fixture,  # noqa: F401 - fixture
    plan_of,
    provision,
    start,
)
from tests.onboarding.test_requests import (
    environment_rows_fixture,  # noqa: F401 - fixture
    valid_ndjson,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class CompareVolumeTests:
    def test_it_flags_figures_more_than_twice_off_either_way(self):
        objects, size = compare_volume(
            files_per_day=100, average_file_size_kb=10, objects_per_day=250, bytes_per_day=400_000
        )

        assert objects.ratio == 2.5 and objects.flagged
        assert objects.verdict == "2.5× the estimate — more than 2× over"
        assert size.estimated == 1_024_000
        assert round(size.ratio, 2) == 0.39 and size.flagged
        assert "less than 1/2 of it" in size.verdict

    def test_it_does_not_flag_within_twice_including_the_edges(self):
        assert not compare_figure("Objects per day", 100, 200).flagged
        assert not compare_figure("Objects per day", 100, 50).flagged
        assert not compare_figure("Objects per day", 100, 130).flagged
        assert compare_figure("Objects per day", 100, 201).flagged
        assert compare_figure("Objects per day", 100, 49).flagged

    def test_it_says_when_there_is_nothing_to_compare(self):
        unmeasured, no_estimate = compare_volume(
            files_per_day=None, average_file_size_kb=None, objects_per_day=None, bytes_per_day=5
        )
        assert unmeasured.verdict == "not measured yet" and not unmeasured.flagged
        assert no_estimate.verdict == "the spec has no estimate" and not no_estimate.flagged
        zero = compare_figure("Objects per day", 0, 3)
        assert zero.flagged and zero.ratio is None and "the estimate is 0" in zero.verdict


class CountListingTests:
    def test_it_groups_by_day_and_leaves_out_smoke_uploads_and_older_objects(self):
        entries = [
            ("incoming/a.json", T0 + timedelta(hours=1), 100),
            ("incoming/b.json", T0 + timedelta(hours=2), 50),
            ("incoming/c.json", T0 + timedelta(days=1, hours=1), 7),
            ("incoming/smoke/9/sample.json", T0 + timedelta(hours=3), 1_000),
            ("incoming/old.json", T0 - timedelta(days=3), 5),
        ]

        found = count_listing(entries, since=T0, until=T0 + timedelta(days=2), cap=100)

        assert found.days == {"2026-03-01": [2, 150], "2026-03-02": [1, 7]}
        assert (found.objects, found.bytes) == (3, 157)
        assert (found.listed, found.excluded_smoke, found.before_window) == (5, 1, 1)
        assert not found.capped

    def test_it_stops_at_the_cap_and_says_so(self):
        entries = [(f"incoming/{i}.json", T0, 10) for i in range(5)]
        found = count_listing(entries, since=T0, until=T0, cap=3)
        assert found.capped and found.listed == 3 and found.objects == 3
        assert not count_listing(entries, since=T0, until=T0, cap=5).capped

    def test_the_window_is_whole_utc_days_from_going_live_or_the_last_30(self):
        assert window_days(T0, T0 + timedelta(minutes=5)) == 1
        assert window_days(T0, T0 + timedelta(days=2, seconds=1)) == 3
        midnight = datetime(2026, 3, 1, tzinfo=UTC)
        assert window_start(T0 + timedelta(days=3), live_since=T0) == midnight
        long_ago = T0 - timedelta(days=90)
        assert window_start(T0, live_since=long_ago) == midnight - timedelta(days=29)
        assert window_days(window_start(T0, live_since=long_ago), T0) == 30


class StorageGrowthTests:
    def test_it_is_the_average_daily_growth_and_needs_two_days(self):
        points = [(T0 + timedelta(days=2), 500.0), (T0, 100.0), (T0 + timedelta(days=1), 260.0)]
        assert storage_growth_per_day(points) == 200.0
        assert storage_growth_per_day(points[:1]) is None
        assert storage_growth_per_day([(T0, 900.0), (T0 + timedelta(days=3), 0.0)]) == 0.0

    def test_cloudwatch_growth_wins_over_the_listing_when_it_has_both_metrics(self):
        listing = count_listing([("incoming/a", T0, 10)], since=T0, until=T0, cap=10)
        assert choose_figures(listing, 1, 120.0, 4096.0) == {
            "source": "cloudwatch",
            "objects_per_day": 120.0,
            "bytes_per_day": 4096.0,
        }
        assert choose_figures(listing, 2, 120.0, None)["source"] == "listing"
        assert choose_figures(listing, 2, None, None)["objects_per_day"] == 0.5


@pytest.fixture(name="no_prod_gate")
def no_prod_gate_fixture(settings):
    """Provision prod without waiting for a second engineer (tests/onboarding/test_rollout.py
    covers the confirmation)."""
    settings.ONBOARDING_PROD_CONFIRMATION = False


class VolumeRunTests:
    def test_measuring_is_refused_until_prod_went_live(self, personas, environment_rows):
        request = approved_request(personas)
        with pytest.raises(ApplicationError, match="prod has not gone live yet"):
            services.volume_review_start(request=request, actor=personas["erin"])

    def test_it_measures_prod_from_the_listing_and_the_review_is_recorded_with_it(
        self, client, environments, personas, engineer, no_prod_gate
    ):
        request = approved_request(personas)
        assert provision(request, engineer, "prod").status == "succeeded"
        smoke = drive(start(SMOKE_KIND, request, engineer, "prod"))
        assert smoke.status == "succeeded", smoke.error
        prod = env_named(environments, "prod")
        bucket = plan_of(request, prod)["bucket"]["name"]
        s3 = aws.client("s3", prod)
        bodies = [valid_ndjson(100 + i, records=1 + 3 * i) for i in range(4)]
        for i, body in enumerate(bodies):
            s3.put_object(Bucket=bucket, Key=f"incoming/2026/03/batch-{i}.ndjson", Body=body)

        client.force_login(engineer)
        ticket = reverse("onboarding:request-detail", args=[request.number])
        response = client.post(reverse("onboarding:volume-measure", args=[request.number]))
        assert response.status_code == 302 and response["Location"] == f"{ticket}#review"
        run = Run.objects.get(kind=VOLUME_KIND)
        result_url = reverse("onboarding:volume-result", args=[request.number])
        html = client.get(ticket).content.decode()
        assert 'data-testid="volume-run"' in html and f'hx-get="{result_url}"' in html
        assert 'data-testid="measure-volume" disabled' in html  # one measurement at a time

        assert drive(run).status == "succeeded", run.error

        out = run.steps.get().output
        total = sum(len(b) for b in bodies)
        assert out["environment"] == "prod" and out["bucket"] == bucket
        assert out["listing"]["objects"] == 4 and out["listing"]["bytes"] == total
        assert out["listing"]["excluded_smoke"] == 5  # the prod smoke test's uploads
        assert not out["listing"]["capped"]
        # moto reports at most today's AWS/S3 storage figure: no daily growth to measure.
        assert out["source"] == "listing"
        assert out["cloudwatch"]["objects_datapoints"] <= 1
        assert out["cloudwatch"]["objects_per_day"] is None
        assert "fewer than two days of AWS/S3 storage metrics" in out["notes"][0]
        days = out["window_days"]  # from the day prod went live, today included
        assert days in (1, 2)  # 2 only when the test runs across midnight UTC
        assert (out["objects_per_day"], out["bytes_per_day"]) == (4 / days, total / days)
        today = timezone.now().astimezone(UTC).date().isoformat()
        assert out["days"] == [{"day": today, "objects": 4, "bytes": total}]
        fragment = client.get(result_url, HTTP_HX_REQUEST="true")
        assert fragment.status_code == 286  # finished: the fragment stops polling
        body = fragment.content.decode()
        assert SOURCE_LABELS["listing"] in body
        assert "5 smoke-test uploads under <code>incoming/smoke/</code> left out" in body
        assert '<tr data-figure="objects" data-flagged="true">' in body  # 4 against 288
        assert f"{4 / days:.1f} objects" in body and "288 files" in body

        state = services.handoff_state(request)
        assert state.review.why_not == f"the review is due on {state.review_due:%Y-%m-%d}"
        Run.objects.filter(pk=smoke.pk).update(finished_at=timezone.now() - timedelta(days=31))
        response = client.post(
            reverse("onboarding:handoff-review", args=[request.number]),
            {"note": "Volume far below the estimate; the producer ramps up in April."},
        )

        assert response.status_code == 302
        mark = HandoffMark.objects.get(request=request, item="review_held")
        assert mark.done_by == engineer and mark.evidence["volume_run"] == run.pk
        assert mark.evidence["source"] == "listing"
        objects = mark.evidence["figures"][0]
        assert (objects["estimated"], objects["measured"], objects["flagged"]) == (288, 4, True)
        assert 'data-testid="review-held"' in client.get(ticket).content.decode()
        audited = AuditEvent.objects.filter(
            object_id=str(request.pk), action="onboarding.handoff_done"
        )
        assert [e.data["item"] for e in audited] == ["review_held"]
        started = AuditEvent.objects.filter(
            object_type="runs.run", object_id=str(run.pk), action="run.started"
        )
        assert started.count() == 1  # measuring is one action: the run's start

    def test_the_listing_stops_at_the_cap_and_the_output_says_so(
        self, environments, personas, engineer, no_prod_gate
    ):
        request = approved_request(personas)
        assert provision(request, engineer, "prod").status == "succeeded"
        prod = env_named(environments, "prod")
        bucket = plan_of(request, prod)["bucket"]["name"]
        s3 = aws.client("s3", prod)
        for i in range(5):
            s3.put_object(Bucket=bucket, Key=f"archive/{i}.ndjson", Body=valid_ndjson(i))
        logged = []
        now = timezone.now()

        out = measure(
            s3,
            aws.client("cloudwatch", prod),
            bucket,
            since=now - timedelta(days=1),
            until=now + timedelta(minutes=1),
            cap=3,
            log=lambda action, message: logged.append((action, message)),
        )

        assert out["listing"]["capped"] and out["listing"]["listed"] == 3
        assert out["listing"]["objects"] == 3
        assert any("stopped after 3 objects" in note for note in out["notes"])
        assert ("warning", "listing stopped at the cap of 3 objects") in logged
