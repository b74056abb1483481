"""Small fixes to moto, applied in the sandbox server's process, where moto differs from AWS.

`install()` applies them once per process (the sandbox server calls it when it starts):

- **EventBridge notifications read back.** moto stores ``EventBridgeConfiguration`` from
  PutBucketNotificationConfiguration but leaves it out of GetBucketNotificationConfiguration;
  AWS returns ``"EventBridgeConfiguration": {}``. The response gets the element back.
- **Requests arrive over TLS.** moto applies bucket-policy statements with Principal ``*``
  without evaluating ``Bool aws:SecureTransport`` (an operator it does not know), so the
  usual "deny unless TLS" statement denies every object call. For a request the sandbox
  serves (`secure_transport()` marks it; the sandbox speaks plain HTTP on loopback, real S3
  clients TLS), a statement that only applies when SecureTransport is false is dropped and
  a satisfied SecureTransport=true condition is removed; everything else, including other
  Deny statements, is left to moto's own evaluation. Outside a sandbox request (``mock_aws``
  in the same process) moto behaves as it always did.
- **Object-created events.** moto's S3 backend announces every object it creates through
  ``moto.s3.notifications.send_event``; listeners added with `add_object_listener` hear
  about ObjectCreated events too (the pipeline stand-in uses this). moto's own delivery is
  unchanged.
- **Percentiles.** GetMetricData with a ``pNN`` stat and GetMetricStatistics with
  ``ExtendedStatistics`` fail or come back empty in moto; they are computed (nearest rank)
  from the raw values.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger(__name__)

ObjectListener = Callable[[str, str, Any, Any], None]

_lock = threading.Lock()
_installed = False
_listeners: list[ObjectListener] = []
_request = threading.local()

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d{1,2})?|100)$")
_EVENT_BRIDGE_XML = "<EventBridgeConfiguration></EventBridgeConfiguration>"


def install() -> None:
    """Apply every patch once in this process (idempotent, thread-safe)."""
    global _installed
    with _lock:
        if _installed:
            return
        _patch_notification_read_back()
        _patch_secure_transport()
        _patch_object_events()
        _patch_percentiles()
        _installed = True


@contextmanager
def secure_transport() -> Iterator[None]:
    """Treat the bucket-policy checks of the current request as made over TLS."""
    previous = getattr(_request, "secure", False)
    _request.secure = True
    try:
        yield
    finally:
        _request.secure = previous


def add_object_listener(listener: ObjectListener) -> None:
    """Call `listener(account_id, event_name, bucket, key)` for every ObjectCreated event."""
    with _lock:
        _listeners.append(listener)


def remove_object_listener(listener: ObjectListener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def percentile(values: list[float], stat: str) -> float | None:
    """The nearest-rank percentile named by `stat` ("p95", "p99.9"), or None."""
    match = _PERCENTILE.match(stat or "")
    if match is None or not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(float(match.group(1)) / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --- S3 ----------------------------------------------------------------------------------


def _patch_notification_read_back() -> None:
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.s3.responses import S3Response

    original = S3Response.get_bucket_notification

    def get_bucket_notification(self: Any) -> Any:
        response = original(self)
        config = self.backend.get_bucket_notification_configuration(self.bucket_name)
        if config is None or config.event_bridge is None:
            return response
        status, headers, body = response
        text = body.decode() if isinstance(body, bytes) else str(body)
        if "<EventBridgeConfiguration" in text:
            return response
        if "</NotificationConfiguration>" in text:
            text = text.replace(
                "</NotificationConfiguration>", f"{_EVENT_BRIDGE_XML}</NotificationConfiguration>"
            )
        else:  # <NotificationConfiguration .../>
            text = re.sub(
                r"<NotificationConfiguration([^>]*)/>",
                rf"<NotificationConfiguration\1>{_EVENT_BRIDGE_XML}</NotificationConfiguration>",
                text,
            )
        headers = {k: v for k, v in dict(headers).items() if k.lower() != "content-length"}
        return status, headers, text

    S3Response.get_bucket_notification = get_bucket_notification  # type: ignore[method-assign]


def _over_tls(statement: dict[str, Any]) -> dict[str, Any] | None:
    """The statement as it applies to a TLS request: None when it only applies without TLS,
    else the statement without its (satisfied) aws:SecureTransport condition."""
    conditions = statement.get("Condition")
    if not isinstance(conditions, dict):
        return statement
    kept: dict[str, Any] = {}
    for operator, block in conditions.items():
        rest = {}
        for key, value in (block or {}).items():
            if operator in ("Bool", "BoolIfExists") and key.lower() == "aws:securetransport":
                values = value if isinstance(value, list) else [value]
                if "true" not in {str(v).lower() for v in values}:
                    return None
                continue
            rest[key] = value
        if rest:
            kept[operator] = rest
    result = {k: v for k, v in statement.items() if k != "Condition"}
    if kept:
        result["Condition"] = kept
    return result


def _patch_secure_transport() -> None:
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    original = FakeBucket.get_permission

    def get_permission(self: Any, action: str, resource: str) -> Any:
        if self.policy is None or not getattr(_request, "secure", False):
            return original(self, action, resource)
        document = json.loads(self.policy)
        statements = document.get("Statement", [])
        if isinstance(statements, dict):
            statements = [statements]
        kept = [s for s in (_over_tls(s) for s in statements) if s is not None]
        if not kept:
            return PermissionResult.NEUTRAL
        policy = IAMPolicy(json.dumps({**document, "Statement": kept}))
        return policy.is_action_permitted(action, resource)

    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]


def _patch_object_events() -> None:
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.s3 import notifications

    original = notifications.send_event

    def send_event(account_id: str, event_name: Any, bucket: Any, key: Any) -> None:
        original(account_id, event_name, bucket, key)
        name = str(getattr(event_name, "value", event_name))
        if "ObjectCreated" not in name:
            return
        for listener in list(_listeners):
            try:
                listener(account_id, name, bucket, key)
            except Exception:  # a listener must never fail the S3 call
                logger.exception("object listener failed for %s/%s", bucket.name, key.name)

    notifications.send_event = send_event


# --- CloudWatch --------------------------------------------------------------------------


def _values(stats: Any) -> list[float]:
    values = list(stats.metric_single_values_list)
    if not values:  # statistic sets only: their averages are the best there is
        values = [s.sum / s.sample_count for s in stats.metric_aggregated_list if s.sample_count]
    return values


def _patch_percentiles() -> None:
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.cloudwatch.exceptions import InvalidParameterValue
    from moto.cloudwatch.models import Statistics
    from moto.cloudwatch.responses import CloudWatchResponse
    from moto.core.responses import ActionResult

    original_stat = Statistics.get_statistics_for_type

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        if _PERCENTILE.match(stat or ""):
            return percentile(_values(self), stat)
        return original_stat(self, stat)

    Statistics.get_statistics_for_type = get_statistics_for_type  # type: ignore[method-assign]
    original_response = CloudWatchResponse.get_metric_statistics

    def get_metric_statistics(self: Any) -> Any:
        extended = self._get_param("ExtendedStatistics") or []
        if not extended:
            return original_response(self)
        for stat in extended:
            if not _PERCENTILE.match(stat):
                raise InvalidParameterValue(
                    f"The value {stat} for parameter ExtendedStatistics is not supported."
                )
        datapoints = self.cloudwatch_backend.get_metric_statistics(
            self._get_param("Namespace"),
            self._get_param("MetricName"),
            self._get_param("StartTime"),
            self._get_param("EndTime"),
            self._get_int_param("Period"),
            self._get_param("Statistics", []),
            unit=self._get_param("Unit"),
            dimensions=self._get_param("Dimensions", []),
        )
        for point in datapoints:
            point.extended_statistics = {s: percentile(_values(point), s) for s in extended}
        name = self._get_param("MetricName")
        return ActionResult({"Label": name, "Datapoints": datapoints})

    CloudWatchResponse.get_metric_statistics = get_metric_statistics  # type: ignore[method-assign]
