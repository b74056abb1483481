"""The 30-day review's AWS reads: a raw bucket's listing and its daily storage metrics,
and the measured figures of one bucket (`measure`), decided by `onboarding.volume`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from onboarding.volume import (
    DAY,
    SOURCE_LABELS,
    choose_figures,
    count_listing,
    storage_growth_per_day,
    window_days,
)
from portal.aws import error_code
from portal.errors import ApplicationError

# BucketSizeBytes is reported per storage class; these are the ones the lifecycle uses.
STORAGE_TYPES = ("StandardStorage", "StandardIAStorage", "GlacierInstantRetrievalStorage")


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
        if error_code(exc) == "NoSuchBucket":
            raise ApplicationError(f"The raw bucket {bucket} does not exist.") from None
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
