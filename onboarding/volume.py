"""The 30-day review's measured volume (SOP-001 step 10): objects and bytes per day that
reached a source's raw bucket in prod, set against the spec's estimate.

- ``onboarding.volume_review`` is a read-only run kind (an engineer starts it from the
  ticket): its one step lists the raw bucket (ListObjectsV2, at most
  ONBOARDING_VOLUME_MAX_OBJECTS objects), leaving out the smoke test's own uploads under
  ``incoming/smoke/``, and groups what arrived by LastModified day (UTC), from the day prod
  went live or over the last 30 days, whichever is shorter; per day means per calendar day
  of that window, today's included. It also asks CloudWatch for the bucket's daily storage metrics
  (``AWS/S3`` NumberOfObjects and BucketSizeBytes); when they have at least two days, their
  daily growth is the measured figure, otherwise the listing is — the output says which.
- The rest are pure functions: counting a listing, growth from storage metrics, and the
  comparison with the estimate (flagged when more than 2× off either way).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.utils import timezone

from onboarding.plan import PRODUCER_PREFIX
from onboarding.provision_steps import step_plan, step_request
from portal.roles import Role
from portal.runs.engine import StepContext
from portal.runs.registry import Done, PermanentStepError, PlannedStep, run_kind, step

VOLUME_KIND = "onboarding.volume_review"
VOLUME_STEP = "onboarding.volume_measure"
SMOKE_PREFIX = f"{PRODUCER_PREFIX}smoke/"  # where smoke tests upload (provision_steps)
WINDOW = timedelta(days=30)
FLAG_FACTOR = 2.0
DAY = timedelta(days=1)
# BucketSizeBytes is reported per storage class; these are the ones the lifecycle uses.
STORAGE_TYPES = ("StandardStorage", "StandardIAStorage", "GlacierInstantRetrievalStorage")
SOURCE_LABELS = {
    "listing": "S3 listing (ListObjectsV2 of the raw bucket, by LastModified day)",
    "cloudwatch": "CloudWatch AWS/S3 daily storage metrics (NumberOfObjects, BucketSizeBytes)",
}


# --- pure -----------------------------------------------------------------------------------------


def day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def window_start(until: datetime, live_since: datetime | None = None) -> datetime:
    """The first UTC day measured: the day prod went live, or 30 days back at most."""
    start = day_start(until) - (WINDOW - DAY)
    return max(start, day_start(live_since)) if live_since else start


def window_days(since: datetime, until: datetime) -> int:
    """UTC calendar days from `since` to `until`, both counted (today's partial day too)."""
    return max(1, (until.astimezone(UTC).date() - since.astimezone(UTC).date()).days + 1)


@dataclass
class ListingCount:
    days: dict[str, list[int]] = field(default_factory=dict)  # "YYYY-MM-DD" -> [objects, bytes]
    objects: int = 0
    bytes: int = 0
    listed: int = 0
    excluded_smoke: int = 0
    before_window: int = 0
    capped: bool = False


def count_listing(
    entries: Iterable[tuple[str, datetime, int]],
    *,
    since: datetime,
    until: datetime,
    cap: int,
    exclude_prefix: str = SMOKE_PREFIX,
) -> ListingCount:
    """Objects and bytes per LastModified day (UTC) in [since, until], from (key,
    last_modified, size) entries; keys under `exclude_prefix` are left out. Stops after
    `cap` entries and says so."""
    found = ListingCount()
    for key, modified, size in entries:
        if found.listed >= cap:
            found.capped = True
            break
        found.listed += 1
        if key.startswith(exclude_prefix):
            found.excluded_smoke += 1
            continue
        if not since <= modified <= until:
            found.before_window += 1
            continue
        day = found.days.setdefault(modified.astimezone(UTC).date().isoformat(), [0, 0])
        day[0] += 1
        day[1] += size
        found.objects += 1
        found.bytes += size
    return found


def storage_growth_per_day(datapoints: Iterable[tuple[datetime, float]]) -> float | None:
    """Average daily growth from the first to the last daily datapoint, never below 0
    (expiring objects are not arrivals); None with fewer than two days."""
    points = sorted(datapoints)
    if len(points) < 2:
        return None
    (first_at, first), (last_at, last) = points[0], points[-1]
    days = (last_at - first_at) / DAY
    if days <= 0:
        return None
    return max(0.0, (last - first) / days)


@dataclass(frozen=True)
class VolumeFigure:
    label: str
    estimated: float | None
    measured: float | None
    ratio: float | None  # measured / estimated
    flagged: bool
    verdict: str


def compare_figure(label: str, estimated: float | None, measured: float | None) -> VolumeFigure:
    """Measured against estimated; flagged when off by more than FLAG_FACTOR either way."""
    if measured is None:
        return VolumeFigure(label, estimated, None, None, False, "not measured yet")
    if estimated is None:
        return VolumeFigure(label, None, measured, None, False, "the spec has no estimate")
    if estimated == 0:
        flagged = measured > 0
        verdict = "the estimate is 0" + (" but data arrives" if flagged else " and none arrives")
        return VolumeFigure(label, estimated, measured, None, flagged, verdict)
    ratio = measured / estimated
    if ratio > FLAG_FACTOR:
        verdict = f"{ratio:.1f}× the estimate — more than {FLAG_FACTOR:g}× over"
    elif ratio < 1 / FLAG_FACTOR:
        verdict = f"{ratio:.2f}× the estimate — less than 1/{FLAG_FACTOR:g} of it"
    else:
        verdict = f"{ratio:.2f}× the estimate — within {FLAG_FACTOR:g}×"
    flagged = not 1 / FLAG_FACTOR <= ratio <= FLAG_FACTOR
    return VolumeFigure(label, estimated, measured, ratio, flagged, verdict)


def compare_volume(
    *,
    files_per_day: int | None,
    average_file_size_kb: int | None,
    objects_per_day: float | None,
    bytes_per_day: float | None,
) -> list[VolumeFigure]:
    """The review's two rows: objects per day and bytes per day, estimated vs measured."""
    estimated_bytes = (
        files_per_day * average_file_size_kb * 1024
        if files_per_day is not None and average_file_size_kb is not None
        else None
    )
    return [
        compare_figure("Objects per day", files_per_day, objects_per_day),
        compare_figure("Bytes per day", estimated_bytes, bytes_per_day),
    ]


def choose_figures(
    listing: ListingCount,
    days: int,
    objects_growth: float | None,
    bytes_growth: float | None,
) -> dict[str, Any]:
    """The measured figures and where they came from: CloudWatch's storage growth when it
    has both metrics, else the listing's totals over the window."""
    if objects_growth is not None and bytes_growth is not None:
        return {
            "source": "cloudwatch",
            "objects_per_day": objects_growth,
            "bytes_per_day": bytes_growth,
        }
    return {
        "source": "listing",
        "objects_per_day": listing.objects / days,
        "bytes_per_day": listing.bytes / days,
    }


# --- AWS reads ------------------------------------------------------------------------------------


def list_objects(s3: Any, bucket: str) -> Iterable[tuple[str, datetime, int]]:
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 1000}
    ):
        for entry in page.get("Contents", []):
            yield entry["Key"], entry["LastModified"], int(entry.get("Size", 0))


def _daily(
    cloudwatch: Any, bucket: str, metric: str, storage_type: str, since: datetime, until: datetime
) -> list[tuple[datetime, float]]:
    answer = cloudwatch.get_metric_statistics(
        Namespace="AWS/S3",
        MetricName=metric,
        Dimensions=[
            {"Name": "BucketName", "Value": bucket},
            {"Name": "StorageType", "Value": storage_type},
        ],
        StartTime=since - DAY,  # the day before live is the baseline
        EndTime=until,
        Period=86400,
        Statistics=["Average"],
    )
    return [(p["Timestamp"], float(p["Average"])) for p in answer.get("Datapoints", [])]


def storage_metrics(
    cloudwatch: Any, bucket: str, since: datetime, until: datetime
) -> tuple[list[tuple[datetime, float]], list[tuple[datetime, float]]]:
    """(NumberOfObjects, BucketSizeBytes summed over the storage classes) per day."""
    objects = _daily(cloudwatch, bucket, "NumberOfObjects", "AllStorageTypes", since, until)
    sizes: dict[datetime, float] = {}
    for storage_type in STORAGE_TYPES:
        for at, value in _daily(cloudwatch, bucket, "BucketSizeBytes", storage_type, since, until):
            sizes[at] = sizes.get(at, 0.0) + value
    return objects, sorted(sizes.items())


# --- the run kind ---------------------------------------------------------------------------------


@run_kind(VOLUME_KIND, title="Measure volume", start_roles=[Role.ENGINEER])
def volume_plan(params: dict[str, Any]) -> list[PlannedStep]:
    env = params.get("environment", "")
    return [PlannedStep(VOLUME_STEP, f"{env}: objects and bytes per day")]


def measure(
    s3: Any,
    cloudwatch: Any,
    bucket: str,
    *,
    since: datetime,
    until: datetime,
    cap: int,
    log: Callable[[str, str], None],
) -> dict[str, Any]:
    """Read the bucket's listing and storage metrics; the figures the review shows."""
    try:
        listing = count_listing(list_objects(s3, bucket), since=since, until=until, cap=cap)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise PermanentStepError(f"The raw bucket {bucket} does not exist.") from None
        raise
    log(
        "read",
        f"s3://{bucket}: listed {listing.listed} object(s); {listing.objects} in the window, "
        f"{listing.excluded_smoke} smoke-test upload(s) left out",
    )
    if listing.capped:
        log("warning", f"listing stopped at the cap of {cap} objects")
    days = window_days(since, until)
    objects_points, bytes_points = storage_metrics(cloudwatch, bucket, since, until)
    objects_growth = storage_growth_per_day(objects_points)
    bytes_growth = storage_growth_per_day(bytes_points)
    log(
        "read",
        f"CloudWatch AWS/S3: {len(objects_points)} NumberOfObjects and {len(bytes_points)} "
        "BucketSizeBytes daily datapoint(s)",
    )
    figures = choose_figures(listing, days, objects_growth, bytes_growth)
    notes = []
    if figures["source"] == "listing":
        notes.append(
            "CloudWatch has fewer than two days of AWS/S3 storage metrics for this bucket "
            "(S3 publishes them once a day), so the figures come from the listing."
        )
    else:
        notes.append(
            "CloudWatch storage growth includes the smoke tests' uploads and overwritten "
            "versions; the listing below leaves the smoke uploads out."
        )
    if listing.capped:
        notes.append(
            f"The listing stopped after {cap} objects (ONBOARDING_VOLUME_MAX_OBJECTS): "
            "its figures count only the objects listed, so they are too low."
        )
    return {
        "bucket": bucket,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "window_days": days,
        **figures,
        "source_label": SOURCE_LABELS[figures["source"]],
        "days": [
            {"day": day, "objects": n, "bytes": size}
            for day, (n, size) in sorted(listing.days.items())
        ],
        "listing": {
            "objects": listing.objects,
            "bytes": listing.bytes,
            "listed": listing.listed,
            "excluded_smoke": listing.excluded_smoke,
            "before_window": listing.before_window,
            "capped": listing.capped,
            "cap": cap,
            "objects_per_day": listing.objects / days,
            "bytes_per_day": listing.bytes / days,
        },
        "cloudwatch": {
            "objects_datapoints": len(objects_points),
            "bytes_datapoints": len(bytes_points),
            "objects_per_day": objects_growth,
            "bytes_per_day": bytes_growth,
        },
        "notes": notes,
    }


@step(VOLUME_STEP, title="Measure objects and bytes per day")
def volume_measure_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    plan = step_plan(ctx, request)
    until = timezone.now()
    live = ctx.params.get("since")
    since = window_start(until, datetime.fromisoformat(live) if live else None)
    result = measure(
        ctx.aws("s3"),
        ctx.aws("cloudwatch"),
        plan["bucket"]["name"],
        since=since,
        until=until,
        cap=settings.ONBOARDING_VOLUME_MAX_OBJECTS,
        log=ctx.log,
    )
    return Done(
        {"environment": ctx.params["environment"], "measured_at": until.isoformat(), **result}
    )
