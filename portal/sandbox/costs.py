"""A Cost Explorer stand-in: GetCostAndUsage over generated, deterministic costs.

moto's CE only replays results queued through its API, so the sandbox answers
GetCostAndUsage itself. Its data: daily costs for the pipeline's services from the first
day of the month thirteen months ago up to yesterday, tagged Function, Source and
Environment the way the real pipeline is. Every amount is a pure function of the day and
the line item (a hash, not a random generator), so two calls always agree. The most
recent complete month has two planted drivers — transform-handler in prod and the
clickstream source's storage cost more — so a monthly review has something to find.

Supported: Granularity DAILY or MONTHLY; TimePeriod; cost metrics (UnblendedCost,
BlendedCost, AmortizedCost, NetUnblendedCost, NetAmortizedCost) and UsageQuantity;
GroupBy up to two of DIMENSION SERVICE / LINKED_ACCOUNT / REGION and TAG:<key>; Filter
with Dimensions, Tags, And, Or, Not. The response has the real shape.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

SERVICES = (
    "AWS Lambda",
    "AWS Step Functions",
    "Amazon Simple Storage Service",
    "Amazon DynamoDB",
    "AmazonCloudWatch",
    "AWS Key Management Service",
)
FUNCTIONS = ("ingest-handler", "validate-handler", "transform-handler", "output-handler")
SOURCES = ("orders", "clickstream", "inventory")
ENVIRONMENTS = ("dev", "staging", "prod")
ACCOUNTS = {"dev": "111111111111", "staging": "222222222222", "prod": "333333333333"}
REGION = "us-east-1"
TAG_KEYS = ("Function", "Source", "Environment")
MONTHS = 13

COST_METRICS = {
    "UnblendedCost",
    "BlendedCost",
    "AmortizedCost",
    "NetUnblendedCost",
    "NetAmortizedCost",
}
USAGE_METRICS = {"UsageQuantity", "NormalizedUsageAmount"}
GROUP_DIMENSIONS = {"SERVICE", "LINKED_ACCOUNT", "REGION"}

_ENV_SCALE = {"dev": 0.07, "staging": 0.15, "prod": 1.0}
_SOURCE_SCALE = {"orders": 1.0, "clickstream": 1.6, "inventory": 0.45}
_LAMBDA_DAILY = {
    "ingest-handler": 2.4,
    "validate-handler": 1.9,
    "transform-handler": 4.2,
    "output-handler": 1.3,
}
_CLOUDWATCH_DAILY = 0.55
_STEP_FUNCTIONS_DAILY = 1.1
_S3_DAILY = 1.7
_DYNAMODB_DAILY = 2.9
_KMS_DAILY = 0.14

Row = tuple[str, tuple[tuple[str, str], ...], float]


class CostExplorerError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by `parts`."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def data_window(today: date | None = None) -> tuple[date, date]:
    """[first day, last day + 1) of the generated data: 13 months back to yesterday."""
    today = today or date.today()
    return _month_start(today, MONTHS), today


def _trend(day: date) -> float:
    """Slow growth (about 1.5 % a month) plus a yearly swing, anchored on 2024-01."""
    months = (day.year - 2024) * 12 + day.month - 1 + day.day / 31
    seasonal = 1 + 0.06 * _unit("season", day.month)
    return (1.015**months) * seasonal


def _weekday(day: date) -> float:
    return 0.72 if day.weekday() >= 5 else 1.0


def _noise(day: date, *key: str) -> float:
    return 0.85 + 0.3 * _unit(day.isoformat(), *key)


def _tags(function: str = "", source: str = "", environment: str = "") -> tuple:
    return (("Function", function), ("Source", source), ("Environment", environment))


@lru_cache(maxsize=1024)
def _rows_for_day(day: date, spike_month: date) -> tuple[Row, ...]:
    base = _trend(day) * _weekday(day)
    spiking = _month_start(day) == spike_month
    rows: list[Row] = []
    for env in ENVIRONMENTS:
        scale = base * _ENV_SCALE[env]
        for function in FUNCTIONS:
            for source in SOURCES:
                amount = _LAMBDA_DAILY[function] * _SOURCE_SCALE[source] * scale
                if spiking and function == "transform-handler" and env == "prod":
                    amount *= 1.85
                amount *= _noise(day, "lambda", function, source, env)
                rows.append(("AWS Lambda", _tags(function, source, env), amount))
            amount = _CLOUDWATCH_DAILY * scale * _noise(day, "cw", function, env)
            rows.append(("AmazonCloudWatch", _tags(function, "", env), amount))
        for source in SOURCES:
            amount = _STEP_FUNCTIONS_DAILY * _SOURCE_SCALE[source] * scale
            amount *= _noise(day, "sfn", source, env)
            rows.append(("AWS Step Functions", _tags("", source, env), amount))
            amount = _S3_DAILY * _SOURCE_SCALE[source] * scale * _noise(day, "s3", source, env)
            if spiking and source == "clickstream":
                amount *= 1.45
            rows.append(("Amazon Simple Storage Service", _tags("", source, env), amount))
        amount = _DYNAMODB_DAILY * scale * _noise(day, "ddb", env)
        rows.append(("Amazon DynamoDB", _tags("", "", env), amount))
        # KMS is mostly the flat monthly key charge: no weekday dip, little noise.
        amount = _KMS_DAILY * _ENV_SCALE[env] ** 0.3 * (0.95 + 0.1 * _unit(day, "kms", env))
        rows.append(("AWS Key Management Service", _tags("", "", env), amount))
    return tuple(rows)


def daily_rows(day: date, today: date | None = None) -> tuple[Row, ...]:
    """The line items of one day: (service, tags, amount). Empty outside the data window."""
    start, end = data_window(today)
    if not start <= day < end:
        return ()
    spike_month = _month_start(today or date.today(), 1)
    return _rows_for_day(day, spike_month)


# --- The API --------------------------------------------------------------------------------


def _parse_day(value: Any, field: str) -> date:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        raise CostExplorerError(
            "ValidationException", f"{field} must be a date like 2024-01-31, not {value!r}."
        ) from None


def _dimension_value(key: str, service: str, tags: dict[str, str]) -> str:
    if key == "SERVICE":
        return service
    if key == "LINKED_ACCOUNT":
        return ACCOUNTS.get(tags.get("Environment", ""), "")
    if key == "REGION":
        return REGION
    raise CostExplorerError("ValidationException", f"Dimension {key} is not supported here.")


def _matches(expression: dict[str, Any], service: str, tags: dict[str, str]) -> bool:
    if not expression:
        return True
    if "And" in expression:
        return all(_matches(e, service, tags) for e in expression["And"])
    if "Or" in expression:
        return any(_matches(e, service, tags) for e in expression["Or"])
    if "Not" in expression:
        return not _matches(expression["Not"], service, tags)
    if "Dimensions" in expression:
        dim = expression["Dimensions"]
        value = _dimension_value(dim.get("Key", ""), service, tags)
        return value in dim.get("Values", [])
    if "Tags" in expression:
        tag = expression["Tags"]
        value = tags.get(tag.get("Key", ""), "")
        options = tag.get("MatchOptions") or ["EQUALS"]
        if "ABSENT" in options:
            return value == "" or value in tag.get("Values", [])
        return value in tag.get("Values", [])
    raise CostExplorerError("ValidationException", "Unsupported filter expression.")


def _group_key(group: dict[str, str], service: str, tags: dict[str, str]) -> str:
    kind, key = group.get("Type"), group.get("Key", "")
    if kind == "DIMENSION":
        if key not in GROUP_DIMENSIONS:
            raise CostExplorerError("ValidationException", f"Cannot group by dimension {key}.")
        return _dimension_value(key, service, tags)
    if kind == "TAG":
        return f"{key}${tags.get(key, '')}"
    raise CostExplorerError("ValidationException", f"GroupBy Type must be DIMENSION or TAG: {kind}")


def _periods(start: date, end: date, granularity: str) -> list[tuple[date, date]]:
    periods = []
    cursor = start
    while cursor < end:
        if granularity == "DAILY":
            nxt = cursor + timedelta(days=1)
        else:
            nxt = _month_start(_month_start(cursor) + timedelta(days=32))
        periods.append((cursor, min(nxt, end)))
        cursor = nxt
    return periods


def _metric_values(amount: float, metrics: list[str]) -> dict[str, dict[str, str]]:
    values = {}
    for metric in metrics:
        if metric in COST_METRICS:
            values[metric] = {"Amount": f"{amount:.10f}", "Unit": "USD"}
        else:
            values[metric] = {"Amount": f"{amount * 37.5:.4f}", "Unit": "N/A"}
    return values


def get_cost_and_usage(request: dict[str, Any], today: date | None = None) -> dict[str, Any]:
    """Answer a GetCostAndUsage request (botocore's JSON body) in the real response shape."""
    today = today or date.today()
    period = request.get("TimePeriod") or {}
    start = _parse_day(period.get("Start"), "TimePeriod.Start")
    end = _parse_day(period.get("End"), "TimePeriod.End")
    if start >= end:
        raise CostExplorerError(
            "ValidationException", "Start date (and hour) should be before end date (and hour)"
        )
    granularity = request.get("Granularity")
    if granularity not in ("DAILY", "MONTHLY"):
        raise CostExplorerError(
            "ValidationException", "Granularity must be DAILY or MONTHLY in the sandbox."
        )
    metrics = list(request.get("Metrics") or [])
    if not metrics:
        raise CostExplorerError("ValidationException", "Metrics is required.")
    unknown = [m for m in metrics if m not in COST_METRICS | USAGE_METRICS]
    if unknown:
        raise CostExplorerError("ValidationException", f"Unknown metrics: {', '.join(unknown)}")
    group_by = list(request.get("GroupBy") or [])
    if len(group_by) > 2:
        raise CostExplorerError("ValidationException", "GroupBy accepts at most two groups.")
    expression = request.get("Filter") or {}

    results = []
    for period_start, period_end in _periods(start, end, granularity):
        totals: dict[tuple[str, ...], float] = {}
        day = period_start
        while day < period_end:
            for service, tag_items, amount in daily_rows(day, today):
                tags = dict(tag_items)
                if not _matches(expression, service, tags):
                    continue
                key = tuple(_group_key(g, service, tags) for g in group_by)
                totals[key] = totals.get(key, 0.0) + amount
            day += timedelta(days=1)
        entry: dict[str, Any] = {
            "TimePeriod": {"Start": period_start.isoformat(), "End": period_end.isoformat()},
            "Total": {},
            "Groups": [],
            "Estimated": period_end > today,
        }
        if group_by:
            entry["Groups"] = [
                {"Keys": list(key), "Metrics": _metric_values(amount, metrics)}
                for key, amount in sorted(totals.items())
            ]
        else:
            entry["Total"] = _metric_values(totals.get((), 0.0), metrics)
        results.append(entry)
    response: dict[str, Any] = {"ResultsByTime": results, "DimensionValueAttributes": []}
    if group_by:
        response["GroupDefinitions"] = group_by
    return response
