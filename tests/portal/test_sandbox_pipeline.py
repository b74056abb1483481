"""portal/sandbox pipeline stand-in and moto fixes: a file landing in an onboarded raw bucket
runs the pipeline as in AWS (EventBridge → Step Functions → the four Lambdas → metadata and
metrics), alarms are evaluated, percentiles come back, TLS-only policies do not block, and
EventBridge notifications read back.

Each test onboards its own source per the plan (onboarding.plan.build_plan) with boto3
clients from portal.aws.client, and watches the outcome the way a smoke test against AWS
would: ListExecutions/DescribeExecution, S3, DynamoDB, CloudWatch. The pipeline's status
endpoint is only used to know that a delivery that should not start anything has happened.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from onboarding.aws.diff import diff_section
from onboarding.aws.live import read_section
from onboarding.plan import SourceSpec, TargetEnvironment, build_plan
from portal import aws
from portal.sandbox import pipeline

SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["id", "timestamp", "event_type"],
    "properties": {
        "id": {"type": "string"},
        "timestamp": {"type": "string"},
        "event_type": {"type": "string", "enum": ["create", "update", "delete"]},
        "amount": {"type": "number"},
    },
}
VALID = [
    {"id": f"r{i}", "timestamp": "2024-05-01T10:00:00Z", "event_type": "create", "amount": i}
    for i in range(3)
]
TERMINAL = {"SUCCEEDED", "FAILED", "ABORTED", "TIMED_OUT"}


def ndjson(records: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def invalid_file(bad: int) -> bytes:
    """One valid record and `bad` invalid ones (missing field, wrong enum, not JSON)."""
    lines = [json.dumps(VALID[0])]
    for i in range(bad):
        if i % 3 == 0:
            lines.append(json.dumps({"id": f"x{i}", "timestamp": "2024-05-01T10:00:00Z"}))
        elif i % 3 == 1:
            lines.append(json.dumps({**VALID[0], "event_type": "explode"}))
        else:
            lines.append("{not json")
    return "\n".join(lines).encode()


def encode(fmt: str, records: list[dict[str, Any]]) -> bytes:
    """`records` as a file of format `fmt`."""
    if fmt == "json":
        return json.dumps(records).encode()
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["id", "timestamp", "event_type", "amount"])
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().encode()
    buffer = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), buffer)
    else:
        fields = [{"name": n, "type": "string"} for n in ("id", "timestamp", "event_type")]
        schema = {
            "type": "record",
            "name": "Event",
            "fields": [*fields, {"name": "amount", "type": "double"}],
        }
        fastavro.writer(
            buffer,
            fastavro.parse_schema(schema),
            [{**r, "amount": float(r["amount"])} for r in records],
        )
    return buffer.getvalue()


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s")
        time.sleep(interval)


class Source:
    """One source onboarded in the sandbox the way runbook 1 does it, from its plan."""

    def __init__(
        self,
        env: Any,
        *,
        fmt: str = "ndjson",
        notifications: bool = True,
        rule_state: str = "ENABLED",
        alarm: bool = False,
        treat_missing: str | None = None,
    ) -> None:
        self.env = env
        self.name = f"pipe-{uuid.uuid4().hex[:8]}"
        spec = SourceSpec(
            name=self.name,
            owner_team="data-eng",
            format=fmt,
            schema_version=1,
            producer_role_arn=f"arn:aws:iam::{env.account_id}:role/producer",
        )
        self.plan = build_plan(spec, TargetEnvironment.from_model(env))
        self.bucket = self.plan["bucket"]["name"]
        self.s3 = aws.client("s3", env)
        self.sfn = aws.client("stepfunctions", env)
        self.ddb = aws.client("dynamodb", env)
        self.cw = aws.client("cloudwatch", env)
        self._bucket(notifications)
        self._rule(rule_state)
        self._schema_and_config()
        if alarm:
            params = {k: v for k, v in self.plan["alarm"].items() if k != "Tags"}
            if treat_missing:
                params["TreatMissingData"] = treat_missing
            self.cw.put_metric_alarm(**params)

    def _bucket(self, notifications: bool) -> None:
        b = self.plan["bucket"]
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_bucket_versioning(
            Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        self.s3.put_bucket_encryption(
            Bucket=self.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            k: b["encryption"][k] for k in ("SSEAlgorithm", "KMSMasterKeyID")
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        self.s3.put_public_access_block(
            Bucket=self.bucket, PublicAccessBlockConfiguration=b["public_access_block"]
        )
        self.s3.put_bucket_ownership_controls(
            Bucket=self.bucket, OwnershipControls={"Rules": [{"ObjectOwnership": b["ownership"]}]}
        )
        self.s3.put_bucket_policy(Bucket=self.bucket, Policy=json.dumps(b["policy"]))
        if notifications:
            self.s3.put_bucket_notification_configuration(
                Bucket=self.bucket, NotificationConfiguration=b["notifications"]
            )

    def _rule(self, state: str) -> None:
        events, rule, target = (
            aws.client("events", self.env),
            self.plan["rule"],
            self.plan["target"],
        )
        events.put_rule(
            Name=rule["name"],
            EventPattern=json.dumps(rule["event_pattern"]),
            State=state,
            Description=rule["description"],
        )
        events.put_targets(
            Rule=rule["name"],
            Targets=[{"Id": target["Id"], "Arn": target["Arn"], "RoleArn": target["RoleArn"]}],
        )
        self.state_machine_arn = target["Arn"]

    def _schema_and_config(self) -> None:
        schema, config = self.plan["schema_object"], self.plan["config_item"]
        self.s3.put_object(
            Bucket=schema["bucket"],
            Key=schema["key"],
            Body=json.dumps(SCHEMA).encode(),
            ContentType=schema["content_type"],
        )
        item = {k: TypeSerializer().serialize(v) for k, v in config["item"].items()}
        self.ddb.put_item(TableName=config["table"], Item=item)

    # --- what a smoke test looks at --------------------------------------------------------

    def upload(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def executions(self, key: str) -> list[dict[str, Any]]:
        """Executions of the state machine whose input is the event for `key` here."""
        found = []
        pages = self.sfn.get_paginator("list_executions").paginate(
            stateMachineArn=self.state_machine_arn
        )
        for page in pages:
            for summary in page["executions"]:
                described = self.sfn.describe_execution(executionArn=summary["executionArn"])
                detail = json.loads(described["input"]).get("detail", {})
                if detail.get("bucket", {}).get("name") == self.bucket and (
                    detail.get("object", {}).get("key") == key
                ):
                    found.append({**described, "listed_status": summary["status"]})
        return found

    def finished(self, key: str) -> dict[str, Any]:
        """The one execution for `key`, once it has finished."""

        def done() -> list[dict[str, Any]]:
            runs = self.executions(key)
            # Listed and described a moment apart: both must have seen the end.
            settled = all(r["status"] in TERMINAL and r["listed_status"] in TERMINAL for r in runs)
            return runs if runs and settled else []

        runs = wait_for(done)
        assert len(runs) == 1, runs
        return runs[0]

    def metadata(self, key: str) -> dict[str, Any] | None:
        table = self.plan["config_item"]["table"]
        found = self.ddb.get_item(
            TableName=table, Key={"pk": {"S": f"SOURCE#{self.name}"}, "sk": {"S": f"FILE#{key}"}}
        ).get("Item")
        return {k: TypeDeserializer().deserialize(v) for k, v in found.items()} if found else None

    def metric(self, name: str, stat: str) -> float | None:
        now = datetime.now(UTC)
        kwargs: dict[str, Any] = (
            {"ExtendedStatistics": [stat]} if stat.startswith("p") else {"Statistics": [stat]}
        )
        points = self.cw.get_metric_statistics(
            Namespace="ETL/Pipeline",
            MetricName=name,
            Dimensions=[{"Name": "Source", "Value": self.name}],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=5),
            Period=3600,
            **kwargs,
        )["Datapoints"]
        if not points:
            return None
        point = points[0]
        return point["ExtendedStatistics"][stat] if stat.startswith("p") else point[stat]

    def alarm_state(self) -> str:
        name = self.plan["alarm"]["AlarmName"]
        return self.cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["StateValue"]


@pytest.fixture
def dev(environments: list[Any]) -> Any:
    return next(env for env in environments if env.name == "dev")


class DeliveryTests:
    def test_it_runs_a_valid_file_to_one_succeeded_execution(self, sandbox, dev):
        source = Source(dev)
        key = "incoming/2024/orders-001.ndjson"
        body = ndjson(VALID)

        source.upload(key, body)
        assert not pipeline.status(sandbox.url)["idle"]  # the upload returned first
        run = source.finished(key)

        assert run["status"] == "SUCCEEDED" and run["listed_status"] == "SUCCEEDED"
        assert run["stopDate"] >= run["startDate"]
        event = json.loads(run["input"])
        assert event["source"] == "aws.s3" and event["detail-type"] == "Object Created"
        assert event["account"] == dev.account_id and event["region"] == dev.region
        assert event["resources"] == [f"arn:aws:s3:::{source.bucket}"]
        assert event["detail"]["reason"] == "PutObject"
        assert event["detail"]["object"]["size"] == len(body)
        output = json.loads(run["output"])
        year = datetime.now(UTC).year
        processed_key = f"source={source.name}/year={year}/orders-001.ndjson"
        assert output["output"] == f"s3://processed-data-dev/{processed_key}"
        stored = source.s3.get_object(Bucket="processed-data-dev", Key=processed_key)
        assert stored["Body"].read() == body
        item = source.metadata(key)
        assert item is not None
        assert item["status"] == "SUCCEEDED" and item["source_name"] == source.name
        assert (item["records"], item["invalid_records"]) == (3, 0)
        assert item["object_key"] == key and item["latency_ms"] > 0
        assert source.metric("FilesProcessed", "Sum") == 1
        assert source.metric("ValidationErrors", "Sum") == 0
        assert source.metric("ProcessingLatency", "Maximum") == item["latency_ms"]
        history = source.sfn.get_execution_history(executionArn=run["executionArn"])["events"]
        assert [e["type"] for e in history] == [
            "ExecutionStarted",
            *["TaskStateEntered", "TaskStateExited"] * 4,
            "ExecutionSucceeded",
        ]
        assert history[1]["stateEnteredEventDetails"]["name"] == "ingest-handler"

    def test_it_fails_an_invalid_file_and_counts_the_validation_errors(self, dev):
        source = Source(dev)
        key = "incoming/bad.ndjson"

        source.upload(key, invalid_file(7))
        run = source.finished(key)

        assert run["status"] == "FAILED"
        assert run["error"] == "ValidationError"
        assert "7 of 8 records" in json.loads(run["cause"])["errorMessage"]
        item = source.metadata(key)
        assert item is not None and item["status"] == "FAILED"
        assert (item["records"], item["invalid_records"]) == (8, 7)
        assert source.metric("ValidationErrors", "Sum") == 7
        assert source.metric("FilesProcessed", "Sum") == 1
        listed = source.s3.list_objects_v2(
            Bucket="processed-data-dev", Prefix=f"source={source.name}/"
        )
        assert listed.get("KeyCount", 0) == 0

    def test_it_runs_a_multipart_upload_once(self, dev):
        source = Source(dev)
        key = "incoming/big.ndjson"
        padded = [{**r, "note": "x" * 2000} for r in VALID]
        body = ndjson(padded * 1000)  # 6 MB: two parts, the first at the 5 MiB minimum
        part = 5 * 1024 * 1024
        upload = source.s3.create_multipart_upload(Bucket=source.bucket, Key=key)
        parts = []
        for number, start in enumerate(range(0, len(body), part), 1):
            etag = source.s3.upload_part(
                Bucket=source.bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=body[start : start + part],
            )["ETag"]
            parts.append({"ETag": etag, "PartNumber": number})
        assert len(parts) > 1
        source.s3.complete_multipart_upload(
            Bucket=source.bucket,
            Key=key,
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )

        run = source.finished(key)

        assert run["status"] == "SUCCEEDED"
        assert json.loads(run["input"])["detail"]["reason"] == "CompleteMultipartUpload"
        assert source.metadata(key)["records"] == 3000

    def test_a_copy_into_incoming_runs_as_a_copy(self, dev):
        source = Source(dev)
        source.upload("staging/orders.ndjson", ndjson(VALID))

        source.s3.copy_object(
            Bucket=source.bucket,
            Key="incoming/orders.ndjson",
            CopySource={"Bucket": source.bucket, "Key": "staging/orders.ndjson"},
        )
        run = source.finished("incoming/orders.ndjson")

        assert run["status"] == "SUCCEEDED"
        assert json.loads(run["input"])["detail"]["reason"] == "CopyObject"
        assert source.executions("staging/orders.ndjson") == []

    def test_it_ignores_objects_outside_incoming(self, sandbox, dev):
        source = Source(dev)
        before = pipeline.status(sandbox.url)

        source.upload("archive/orders.ndjson", ndjson(VALID))
        after = pipeline.wait_idle(sandbox.url)

        assert after["events"] == before["events"] + 1  # S3 sent it to EventBridge...
        assert after["unmatched"] == before["unmatched"] + 1  # ...no rule matched
        assert source.executions("archive/orders.ndjson") == []

    def test_it_sends_nothing_for_a_bucket_without_eventbridge_notifications(self, sandbox, dev):
        source = Source(dev, notifications=False)
        before = pipeline.status(sandbox.url)

        source.upload("incoming/orders.ndjson", ndjson(VALID))
        after = pipeline.wait_idle(sandbox.url)

        assert after["events"] == before["events"]
        assert source.executions("incoming/orders.ndjson") == []

    def test_a_disabled_rule_starts_nothing(self, sandbox, dev):
        source = Source(dev, rule_state="DISABLED")
        before = pipeline.status(sandbox.url)

        source.upload("incoming/orders.ndjson", ndjson(VALID))
        after = pipeline.wait_idle(sandbox.url)

        assert after["unmatched"] == before["unmatched"] + 1
        assert source.executions("incoming/orders.ndjson") == []

    def test_injected_faults_are_left_for_the_portal(self, sandbox, dev):
        source = Source(dev)
        sandbox.inject(service="dynamodb", operation="PutItem", code="ThrottlingException")

        source.upload("incoming/orders.ndjson", ndjson(VALID))
        run = source.finished("incoming/orders.ndjson")

        assert run["status"] == "SUCCEEDED"
        assert [f["operation"] for f in sandbox.faults()] == ["PutItem"]


class FormatTests:
    @pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "avro"])
    def test_it_counts_and_validates_records_of_each_format(self, dev, fmt):
        source = Source(dev, fmt=fmt)
        invalid = [
            VALID[0],
            {**VALID[1], "event_type": "explode"},
            {**VALID[2], "event_type": "nope"},
        ]

        source.upload(f"incoming/good.{fmt}", encode(fmt, VALID))
        source.upload(f"incoming/bad.{fmt}", encode(fmt, invalid))
        good, bad = source.finished(f"incoming/good.{fmt}"), source.finished(f"incoming/bad.{fmt}")

        assert good["status"] == "SUCCEEDED" and json.loads(good["output"])["records"] == 3
        assert bad["status"] == "FAILED" and bad["error"] == "ValidationError"
        assert source.metadata(f"incoming/bad.{fmt}")["invalid_records"] == 2

    def test_an_unreadable_file_fails_its_execution(self, dev):
        source = Source(dev, fmt="parquet")

        source.upload("incoming/broken.parquet", b"PAR1 this is not parquet")
        run = source.finished("incoming/broken.parquet")

        assert run["status"] == "FAILED" and run["error"] == "UnreadableFile"
        assert source.metadata("incoming/broken.parquet")["status"] == "FAILED"


class BucketPolicyTests:
    def test_the_tls_only_deny_does_not_block_object_calls(self, dev):
        source = Source(dev, notifications=False)
        policy = json.loads(source.s3.get_bucket_policy(Bucket=source.bucket)["Policy"])
        assert policy["Statement"][0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}

        source.upload("incoming/a.json", b"{}")
        assert source.s3.get_object(Bucket=source.bucket, Key="incoming/a.json")["Body"].read() == (
            b"{}"
        )
        source.s3.head_object(Bucket=source.bucket, Key="incoming/a.json")
        source.s3.delete_object(Bucket=source.bucket, Key="incoming/a.json")

    def test_other_deny_statements_still_apply(self, dev):
        source = Source(dev, notifications=False)
        arn = source.plan["bucket"]["arn"]
        policy = source.plan["bucket"]["policy"]
        policy["Statement"] += [
            {
                "Sid": "DenyReadingSecrets",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"{arn}/secret/*",
            },
            {
                "Sid": "DenyTlsWrites",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:PutObject",
                "Resource": f"{arn}/locked/*",
                "Condition": {"Bool": {"aws:SecureTransport": "true"}},
            },
        ]
        source.s3.put_bucket_policy(Bucket=source.bucket, Policy=json.dumps(policy))
        source.upload("secret/a.json", b"{}")

        with pytest.raises(ClientError) as read:
            source.s3.get_object(Bucket=source.bucket, Key="secret/a.json")
        with pytest.raises(ClientError) as write:
            source.upload("locked/a.json", b"{}")

        assert read.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert write.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        source.upload("incoming/a.json", b"{}")  # what no statement denies still works


class NotificationTests:
    def test_eventbridge_notifications_read_back_as_in_aws(self, dev):
        source = Source(dev)
        bare = Source(dev, notifications=False)

        read = source.s3.get_bucket_notification_configuration(Bucket=source.bucket)
        unset = bare.s3.get_bucket_notification_configuration(Bucket=bare.bucket)

        assert read["EventBridgeConfiguration"] == {}
        assert "EventBridgeConfiguration" not in unset
        live = read_section(source.plan, partial(aws.client, environment=dev), "bucket")
        rows = {c.field: c.action for c in diff_section(source.plan, {"bucket": live}, "bucket")}
        assert rows["notifications"] == "unchanged"


class MetricsTests:
    def test_p95_processing_latency_comes_back_per_source(self, dev):
        source = Source(dev)
        source.upload("incoming/orders.ndjson", ndjson(VALID))
        source.finished("incoming/orders.ndjson")
        latency = source.metadata("incoming/orders.ndjson")["latency_ms"]

        assert source.metric("ProcessingLatency", "p95") == latency
        now = datetime.now(UTC)
        result = source.cw.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "latency",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "ETL/Pipeline",
                            "MetricName": "ProcessingLatency",
                            "Dimensions": [{"Name": "Source", "Value": source.name}],
                        },
                        "Period": 3600,
                        "Stat": "p95",
                    },
                }
            ],
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=5),
        )["MetricDataResults"][0]
        assert result["Values"] == [latency]

    def test_percentiles_are_nearest_rank_over_the_values(self, dev):
        cw = aws.client("cloudwatch", dev)
        dimensions = [{"Name": "Source", "Value": f"pct-{uuid.uuid4().hex[:8]}"}]
        cw.put_metric_data(
            Namespace="ETL/Pipeline",
            MetricData=[
                {"MetricName": "ProcessingLatency", "Value": v, "Dimensions": dimensions}
                for v in range(100, 0, -1)
            ],
        )
        now = datetime.now(UTC)

        points = cw.get_metric_statistics(
            Namespace="ETL/Pipeline",
            MetricName="ProcessingLatency",
            Dimensions=dimensions,
            StartTime=now - timedelta(hours=1),
            EndTime=now + timedelta(minutes=5),
            Period=3600,
            Statistics=["Average"],
            ExtendedStatistics=["p50", "p95", "p99.9"],
        )["Datapoints"]

        assert len(points) == 1
        assert points[0]["ExtendedStatistics"] == {"p50": 50.0, "p95": 95.0, "p99.9": 100.0}
        assert points[0]["Average"] == 50.5


class AlarmTests:
    def test_the_validation_errors_alarm_goes_off_above_five_in_a_period(self, dev):
        noisy = Source(dev, alarm=True)
        quiet = Source(dev, alarm=True)

        noisy.upload("incoming/bad.ndjson", invalid_file(6))
        quiet.upload("incoming/bad.ndjson", invalid_file(5))
        noisy.finished("incoming/bad.ndjson")
        quiet.finished("incoming/bad.ndjson")

        wait_for(lambda: noisy.alarm_state() == "ALARM")
        time.sleep(2.5)  # more than one evaluation after both files were recorded
        assert quiet.alarm_state() == "OK"
        assert noisy.alarm_state() == "ALARM"

    def test_an_alarm_without_data_is_insufficient_when_missing_data_is_missing(self, dev):
        source = Source(dev, alarm=True, treat_missing="missing")

        wait_for(lambda: source.alarm_state() == "INSUFFICIENT_DATA", timeout=10)
