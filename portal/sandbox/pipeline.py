"""The pipeline stand-in: what AWS and the ETL pipeline do once a file lands, which moto does not.

When moto creates an object (PutObject, POST, CopyObject, CompleteMultipartUpload) in a
bucket whose notifications have EventBridge on, the sandbox, on a background thread and
after a short delay (the upload call returns first, as in AWS):

1. builds S3's "Object Created" event and matches it, with moto's own event-pattern
   matcher, against every ENABLED rule of the default bus in the bucket's account and
   region; each matching Step Functions target (its role must exist) gets an execution,
   created through moto's backend with the event (or the target's Input/InputPath/
   InputTransformer) as input;
2. runs the execution the way the pipeline's four Lambdas would (`portal.sandbox.etl`):
   ingest, validate against the source's schema, transform (nothing), output, then the
   metadata item and the ETL/Pipeline metrics; and sets the execution SUCCEEDED or FAILED
   with output or error/cause, stop date and history, as DescribeExecution reports it.

A second thread evaluates CloudWatch metric alarms in ``ETL/Pipeline`` every
``alarm_interval`` seconds from the recorded data (`alarm_state`) and sets their state.

``GET /_sandbox/pipeline[?wait=SECONDS]`` (see wsgi.py) reports queued/running/processed
counts, waiting up to SECONDS for the pipeline to go idle; `wait_idle(url)` wraps it. They
exist for tests: production code watches Step Functions, S3 and DynamoDB, as against AWS.
"""

from __future__ import annotations

import json
import logging
import operator
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from portal.sandbox import patches, state
from portal.sandbox.etl import EtlRun, StepFailed

if TYPE_CHECKING:
    from moto.events.utils import EventMessageType

logger = logging.getLogger(__name__)

STATUS_PATH = "/_sandbox/pipeline"
ALARM_NAMESPACES = ("ETL/Pipeline",)
STEPS = ("ingest", "validate", "transform", "output")
# events: ObjectCreated events sent to EventBridge; unmatched: no rule took one; executions
# started, of which succeeded/failed; delivery_errors: a target could not be started.
COUNTS: tuple[str, ...] = ("events", "unmatched", "executions", "succeeded", "failed")
COUNTS += ("delivery_errors", "alarm_evaluations", "alarm_changes")
_REASONS = {
    "Put": "PutObject",
    "Post": "POST Object",
    "Copy": "CopyObject",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
}
_COMPARE = {
    "GreaterThanThreshold": (operator.gt, "greater than"),
    "GreaterThanOrEqualToThreshold": (operator.ge, "greater than or equal to"),
    "LessThanThreshold": (operator.lt, "less than"),
    "LessThanOrEqualToThreshold": (operator.le, "less than or equal to"),
}


@dataclass(frozen=True)
class ObjectCreated:
    """What S3 knew about a new object when it was created."""

    account_id: str
    region: str
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None
    reason: str
    created: datetime  # aware, UTC
    sequencer: str

    def event(self) -> EventMessageType:
        """S3's EventBridge "Object Created" event for this object."""
        detail_object: dict[str, Any] = {
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "sequencer": self.sequencer,
        }
        if self.version_id and self.version_id != "null":
            detail_object["version-id"] = self.version_id
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Object Created",
            "source": "aws.s3",
            "account": self.account_id,
            "time": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:s3:::{self.bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": self.bucket},
                "object": detail_object,
                "request-id": uuid.uuid4().hex[:16].upper(),
                "requester": self.account_id,
                "source-ip-address": "127.0.0.1",
                "reason": self.reason,
            },
        }


class Pipeline:
    """The delivery and execution worker and the alarm evaluator of one sandbox server."""

    def __init__(
        self,
        endpoint: str,
        *,
        delivery_delay: float = 0.5,
        step_delay: float = 0.05,
        alarm_interval: float = 1.0,
        alarm_namespaces: tuple[str, ...] = ALARM_NAMESPACES,
    ) -> None:
        self.endpoint = endpoint
        self.delivery_delay = delivery_delay
        self.step_delay = step_delay
        self.alarm_interval = alarm_interval
        self.alarm_namespaces = alarm_namespaces
        self._queue: deque[tuple[float, ObjectCreated]] = deque()
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sequence = 0
        self._running = 0
        self.counts = dict.fromkeys(COUNTS, 0)

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        patches.add_object_listener(self.on_object_created)
        for target, name in ((self._work, "deliveries"), (self._alarms, "alarms")):
            thread = threading.Thread(target=target, name=f"sandbox-pipeline-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        patches.remove_object_listener(self.on_object_created)
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def status(self) -> dict[str, Any]:
        """queued and running deliveries, processed executions, idle, and the counts."""
        with self._changed:
            queued, running, counts = len(self._queue), self._running, dict(self.counts)
        processed = counts["succeeded"] + counts["failed"]
        idle = queued == 0 and running == 0
        return {
            "queued": queued,
            "running": running,
            "processed": processed,
            "idle": idle,
            **counts,
        }

    def saved_state(self) -> dict[str, Any]:
        """The counts and the deliveries still queued, for the sandbox's saved state."""
        with self._changed:
            return {
                "counts": dict(self.counts),
                "queued": [item for _, item in self._queue],
                "sequence": self._sequence,
            }

    def restore_state(self, saved: dict[str, Any]) -> None:
        """Take back `saved_state()`: queued deliveries are delivered again after the delay."""
        with self._changed:
            for name, value in dict(saved.get("counts") or {}).items():
                if name in self.counts:
                    self.counts[name] = int(value)
            self._sequence = int(saved.get("sequence") or 0)
            due = time.monotonic() + self.delivery_delay
            self._queue.extend((due, item) for item in saved.get("queued") or [])
            self._changed.notify_all()
        self._fail_interrupted()

    def _fail_interrupted(self) -> None:
        """Executions this stand-in was running when the sandbox stopped cannot go on: they
        fail, as a Lambda cut off mid-run would fail them."""
        # import here: moto loads only in the sandbox server process, never in web or workers
        from moto.stepfunctions.models import stepfunctions_backends

        backends = [backend for _, _, backend in list(stepfunctions_backends.iter_backends())]
        executions = [
            execution
            for backend in backends
            for machine in list(getattr(backend, "state_machines", []))
            for execution in list(machine.executions)
        ]
        for execution in executions:
            history = getattr(execution, "get_execution_history", None)
            if execution.status != "RUNNING" or not isinstance(history, _RecordedHistory):
                continue
            failure = StepFailed("Sandbox.Interrupted", "The sandbox stopped during this run.")
            history.events.append(
                {
                    "timestamp": datetime.now(UTC),
                    "type": "ExecutionFailed",
                    "id": len(history.events) + 1,
                    "previousEventId": len(history.events),
                    "executionFailedEventDetails": failure.details(),
                }
            )
            _finish(execution, "FAILED", error=failure.error, cause=failure.cause())
            self._count("failed")

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; whether that happened in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queue or self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    # --- delivery ----------------------------------------------------------------------

    def on_object_created(self, account_id: str, event_name: str, bucket: Any, key: Any) -> None:
        """patches' object listener: queue the event when the bucket sends to EventBridge."""
        config = bucket.notification_configuration
        if config is None or config.event_bridge is None:
            return
        kind = event_name.rsplit(":", 1)[-1]
        if kind == "Put" and getattr(key, "multipart", None) is not None:
            return  # CompleteMultipartUpload announces this object
        with self._changed:
            self._sequence += 1
            item = ObjectCreated(
                account_id=account_id,
                region=bucket.region_name,
                bucket=bucket.name,
                key=key.name,
                size=int(key.size),
                etag=str(key.etag).strip('"'),
                version_id=getattr(key, "version_id", None),
                reason=_REASONS.get(kind, "PutObject"),
                created=datetime.now(UTC),
                sequencer=f"{time.time_ns():016X}{self._sequence:04X}"[-18:],
            )
            self._queue.append((time.monotonic() + self.delivery_delay, item))
            self.counts["events"] += 1
            self._changed.notify_all()

    def _work(self) -> None:
        while not self._stopping.is_set():
            with self._changed:
                if not self._queue:
                    self._changed.wait(0.5)
                    continue
                due, item = self._queue[0]
                if due > time.monotonic():
                    self._changed.wait(due - time.monotonic())
                    continue
                self._queue.popleft()
                self._running += 1
            try:
                self._deliver(item)
            except Exception:
                logger.exception("sandbox pipeline: delivering %s/%s failed", item.bucket, item.key)
                self._count("delivery_errors")
            finally:
                with self._changed:
                    self._running -= 1
                    self._changed.notify_all()

    def _count(self, name: str) -> None:
        with self._changed:
            self.counts[name] += 1

    def _deliver(self, item: ObjectCreated) -> None:
        # import here: moto loads only in the sandbox server process, never in web or workers
        from moto.events.models import events_backends

        event = item.event()
        bus = events_backends[item.account_id][item.region].event_buses.get("default")
        matched = False
        for rule in list(bus.rules.values()) if bus is not None else []:
            if rule.state != "ENABLED" or not rule.event_pattern.get_pattern():
                continue  # disabled, or a scheduled rule
            if not rule.event_pattern.matches_event(event):
                continue
            for target in list(rule.targets):
                arn = str(target.get("Arn", ""))
                if arn.startswith("arn:") and ":states:" in arn and ":stateMachine:" in arn:
                    matched = True
                    self._start_execution(rule, target, event, item.created)
        if not matched:
            self._count("unmatched")

    def _start_execution(
        self, rule: Any, target: dict[str, Any], event: EventMessageType, received: datetime
    ) -> None:
        # import here: moto loads only in the sandbox server process, never in web or workers
        from moto.core.config import default_user_config
        from moto.iam.models import iam_backends
        from moto.stepfunctions.responses import get_backend

        arn = str(target["Arn"])
        _, _, _, region, account_id, _, _ = arn.split(":", 6)
        try:
            role_arn = target.get("RoleArn") or rule.role_arn
            with state.GATE.shared():
                if role_arn:
                    iam_backends[account_id]["global"].get_role_by_arn(role_arn)
                backend = get_backend(account_id, region)
                machine = backend.describe_state_machine(arn)
                execution = backend.start_execution(
                    arn, str(uuid.uuid4()), json.dumps(_target_input(target, event))
                )
            state.mark_changed()
        except Exception as exc:  # EventBridge counts a FailedInvocation and moves on
            logger.warning("sandbox pipeline: rule %s could not start %s: %s", rule.name, arn, exc)
            self._count("delivery_errors")
            return
        self._count("executions")
        if default_user_config.get("stepfunctions", {}).get("execute_state_machine"):
            logger.warning("sandbox pipeline: moto runs %s itself", execution.execution_arn)
            return
        self._run(execution, machine, event, received)

    # --- execution ---------------------------------------------------------------------

    def _run(
        self, execution: Any, machine: Any, event: EventMessageType, received: datetime
    ) -> None:
        history = _History(execution, machine.roleArn)
        states = _task_states(machine.definition)
        run = EtlRun(
            self.endpoint,
            execution=execution,
            state_machine=machine.name,
            event=event,
            received=received,
        )
        data: Any = json.loads(execution.execution_input)
        failure: StepFailed | None = None
        try:
            for step, name in zip(STEPS, states, strict=True):
                history.add("TaskStateEntered", "stateEnteredEventDetails", name=name, input=data)
                time.sleep(self.step_delay)
                data = getattr(run, step)()
                history.add("TaskStateExited", "stateExitedEventDetails", name=name, output=data)
        except StepFailed as exc:
            failure = exc
        except Exception as exc:  # a bug in the stand-in must not leave the execution RUNNING
            logger.exception("sandbox pipeline: %s broke", execution.execution_arn)
            failure = StepFailed("Sandbox.Error", str(exc))
        run.record("FAILED" if failure else "SUCCEEDED", failure)
        if failure is None:
            history.add("ExecutionSucceeded", "executionSucceededEventDetails", output=data)
            _finish(execution, "SUCCEEDED", output=json.dumps(data))
        else:
            history.add("ExecutionFailed", "executionFailedEventDetails", **failure.details())
            _finish(execution, "FAILED", error=failure.error, cause=failure.cause())
        self._count("failed" if failure else "succeeded")

    # --- alarms ------------------------------------------------------------------------

    def _alarms(self) -> None:
        while not self._stopping.wait(self.alarm_interval):
            try:
                self.evaluate_alarms()
            except Exception:
                logger.exception("sandbox pipeline: alarm evaluation failed")

    def evaluate_alarms(self, now: datetime | None = None) -> int:
        """Set the state of every metric alarm in the watched namespaces; how many changed."""
        # import here: moto loads only in the sandbox server process, never in web or workers
        from moto.cloudwatch.models import cloudwatch_backends

        now = now or datetime.now(UTC)
        changed = 0
        with state.GATE.shared():
            for _, regions in list(cloudwatch_backends.items()):
                for _, backend in list(regions.items()):
                    for alarm in list(backend.alarms.values()):
                        if alarm.namespace not in self.alarm_namespaces or not alarm.metric_name:
                            continue
                        found, reason, data = alarm_state(alarm, list(backend.metric_data), now)
                        if found is None or found == alarm.state_value:
                            continue
                        backend.set_alarm_state(alarm.name, reason, json.dumps(data), found)
                        changed += 1
        if changed:
            state.mark_changed()
        with self._changed:
            self.counts["alarm_evaluations"] += 1
            self.counts["alarm_changes"] += changed
        return changed


def alarm_state(alarm: Any, data: list[Any], now: datetime) -> tuple[str | None, str, dict]:
    """(state, reason, reason data) for a metric alarm over the last EvaluationPeriods
    periods before `now`; state None when the alarm keeps its state (TreatMissingData
    ignore, or a comparison the sandbox does not evaluate)."""
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.cloudwatch.models import Statistics

    if alarm.comparison_operator not in _COMPARE:
        return None, "", {}
    compare, words = _COMPARE[alarm.comparison_operator]
    period, count = int(alarm.period), int(alarm.evaluation_periods)
    needed = int(alarm.datapoints_to_alarm or count)
    stat = alarm.extended_statistic or alarm.statistic
    dimensions = sorted((d.name, d.value) for d in alarm.dimensions)
    end = _naive(now)
    points = [
        d
        for d in data
        if d.namespace == alarm.namespace
        and d.name == alarm.metric_name
        and sorted((x.name, x.value) for x in d.dimensions) == dimensions
        and (not alarm.unit or d.unit == alarm.unit)
    ]
    values: list[tuple[datetime, float | None]] = []
    for i in range(count):
        stop = end - timedelta(seconds=period * i)
        start = stop - timedelta(seconds=period)
        stats = Statistics([stat], start)
        stats.metric_data = [d for d in points if start <= _naive(d.timestamp) < stop]
        value = stats.get_statistics_for_type(stat) if stats.metric_data else None
        values.append((start, None if value is None else float(value)))
    present = [(t, v) for t, v in values if v is not None]
    treat = alarm.treat_missing_data or "missing"
    breaching = sum(1 for _, v in present if compare(v, alarm.threshold))
    if treat == "breaching":
        breaching += count - len(present)
    data_out = {
        "version": "1.0",
        "queryDate": end.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
        "statistic": stat,
        "period": period,
        "recentDatapoints": [v for _, v in present],
        "threshold": alarm.threshold,
        "evaluatedDatapoints": [
            {"timestamp": t.strftime("%Y-%m-%dT%H:%M:%S.000+0000"), "value": v} for t, v in present
        ],
    }
    if not present and treat in ("missing", "ignore"):
        if treat == "ignore":
            return None, "", data_out
        return "INSUFFICIENT_DATA", "Insufficient Data: no datapoints were received.", data_out
    shown = ", ".join(f"{v} ({t:%d/%m/%y %H:%M:%S})" for t, v in present) or "no data"
    verdict = "was" if breaching >= needed else "was not"
    reason = (
        f"Threshold Crossed: {breaching} out of the last {count} datapoints [{shown}] "
        f"{verdict} {words} the threshold ({alarm.threshold})."
    )
    return ("ALARM" if breaching >= needed else "OK"), reason, data_out


def _naive(moment: datetime) -> datetime:
    """moto keeps metric timestamps as naive UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _target_input(target: dict[str, Any], event: EventMessageType) -> Any:
    """What EventBridge sends the target: Input, InputPath, InputTransformer or the event."""
    if target.get("Input"):
        return json.loads(target["Input"])
    if target.get("InputPath"):
        # import here: moto loads only in the sandbox server process, never in web or workers
        from jsonpath_ng.ext import parse

        found = parse(target["InputPath"]).find(event)
        return found[0].value if found else None
    if target.get("InputTransformer"):
        # import here: moto loads only in the sandbox server process, never in web or workers
        from moto.events.utils import EventTemplateParser

        transformer = target["InputTransformer"]
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            # moto types ingestion-time as float (its own unix time); AWS substitutes the
            # ISO-8601 time, as here, and the parser only pastes the value in.
            event={**event, "ingestion-time": event["time"]},  # type: ignore[typeddict-item]
        )
    return event


def _task_states(definition: str) -> list[str]:
    """The state names of the definition's StartAt → Next chain, one per pipeline step."""
    chain: list[str]
    try:
        parsed = json.loads(definition)
        chain, name = [], parsed.get("StartAt")
        while name and name in parsed.get("States", {}) and len(chain) < len(STEPS):
            chain.append(name)
            name = parsed["States"][name].get("Next")
    except (ValueError, AttributeError):
        chain = []
    return chain + [f"{step}-handler" for step in STEPS[len(chain) :]]


def _finish(execution: Any, status: str, **fields: Any) -> None:
    # import here: moto loads only in the sandbox server process, never in web or workers
    from moto.core.utils import utcnow

    with state.GATE.shared():
        execution.output = fields.get("output")
        execution.output_details = {"truncated": False} if status == "SUCCEEDED" else None
        execution.error = fields.get("error")
        execution.cause = fields.get("cause")
        execution.stop_date = utcnow()
        execution.status = status
    state.mark_changed()


class _RecordedHistory:
    """An execution's get_execution_history: the events the stand-in recorded (picklable,
    so the history is saved with the execution, see state.py)."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events

    def __call__(self, role_arn: str) -> list[dict[str, Any]]:
        return list(self.events)


class _History:
    """GetExecutionHistory for an execution the stand-in runs (moto's is canned)."""

    def __init__(self, execution: Any, role_arn: str) -> None:
        self.events: list[dict[str, Any]] = []
        execution.get_execution_history = _RecordedHistory(self.events)
        self.add(
            "ExecutionStarted",
            "executionStartedEventDetails",
            input=json.loads(execution.execution_input),
            roleArn=role_arn,
        )

    def add(self, kind: str, details_key: str, **details: Any) -> None:
        for key in ("input", "output"):
            if key in details:
                details[key] = json.dumps(details[key])
                details[f"{key}Details"] = {"truncated": False}
        with state.GATE.shared():
            self._append(kind, details_key, details)
        state.mark_changed()

    def _append(self, kind: str, details_key: str, details: dict[str, Any]) -> None:
        self.events.append(
            {
                "timestamp": datetime.now(UTC),
                "type": kind,
                "id": len(self.events) + 1,
                "previousEventId": len(self.events),
                details_key: details,
            }
        )


# --- for tests and smoke checks: never for production code -------------------------------


def status(url: str, wait: float = 0.0) -> dict[str, Any]:
    """The pipeline status of the sandbox at `url`, waiting up to `wait` s for it to idle."""
    if not url.startswith("http://"):
        raise ValueError(f"The sandbox speaks plain http on loopback, not {url!r}")
    query = urllib.parse.urlencode({"wait": wait}) if wait else ""
    address = f"{url.rstrip('/')}{STATUS_PATH}" + (f"?{query}" if query else "")
    with urllib.request.urlopen(address, timeout=wait + 10) as response:  # noqa: S310
        return json.loads(response.read())


def wait_idle(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """Block until the sandbox at `url` has delivered and run everything; its status."""
    found = status(url, wait=timeout)
    if not found.get("idle"):
        raise TimeoutError(f"The sandbox pipeline was still busy after {timeout:.0f}s: {found}")
    return found
