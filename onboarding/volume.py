"""The 30-day review's volume rules (SOP-001 step 10), pure: the window measured, counting
a listing of the raw bucket, growth from storage metrics, which figure counts, and the
comparison with the spec's estimate (flagged when more than 2× off either way).

The measuring itself (the ``onboarding.volume_review`` run) reads AWS in
`onboarding.aws.volume` from its step in `onboarding.steps.volume`: the listing leaves out
the smoke test's own uploads under ``incoming/smoke/`` and groups what arrived by
LastModified day (UTC), from the day prod went live or over the last 30 days, whichever is
shorter; per day means per calendar day of that window, today's included. CloudWatch's
daily storage metrics (``AWS/S3`` NumberOfObjects and BucketSizeBytes) win when they have at
least two days; otherwise the listing is the figure — the output says which.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from onboarding.plan import PRODUCER_PREFIX

SMOKE_PREFIX = f"{PRODUCER_PREFIX}smoke/"  # where smoke tests upload (onboarding.steps.smoke)
WINDOW = timedelta(days=30)
FLAG_FACTOR = 2.0
DAY = timedelta(days=1)
SOURCE_LABELS = {
    "listing": "S3 listing (ListObjectsV2 of the raw bucket, by LastModified day)",
    "cloudwatch": "CloudWatch AWS/S3 daily storage metrics (NumberOfObjects, BucketSizeBytes)",
}


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
