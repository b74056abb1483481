"""The pipeline's four Lambdas, as the sandbox runs them for one Step Functions execution.

`EtlRun` does what ingest → validate → transform → output do for the S3 object named in the
execution's event, through the AWS APIs of the sandbox itself (boto3 against its own
endpoint, in the execution's account, so bucket policies and encryption apply as they
would to the real Lambdas):

- ingest reads the object;
- validate finds the source's configuration item in ``etl-metadata-<env>`` (pk
  ``SOURCE#<name>``, sk ``CONFIG``; the item whose ``raw_bucket`` is the bucket, else the
  source whose name the bucket carries), loads the JSON Schema from its
  ``schema_location`` and checks every record (`read_records`: JSON, NDJSON, CSV,
  Parquet, Avro) with ``jsonschema``; any invalid record fails the execution;
- transform changes nothing;
- output writes the file to ``processed-data-<env>`` under the configured partitioning
  (``source=<name>/year=YYYY/``) and the object's base name;
- `record` writes the metadata item (sk ``FILE#<key>``) and puts FilesProcessed,
  ValidationErrors and ProcessingLatency in ``ETL/Pipeline`` with dimension Source.

``<env>`` comes from the state machine's name (``etl-workflow-<env>``), the seeded naming.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import posixpath
import re
import threading
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

INTERNAL_HEADER = "x-onramp-sandbox-internal"  # wsgi.py injects no faults into these calls
METRIC_NAMESPACE = "ETL/Pipeline"
STATE_MACHINE = re.compile(r"^etl-workflow-(?P<env>.+)$")
METADATA_TABLE = "etl-metadata-{env}"
PROCESSED_BUCKET = "processed-data-{env}"
MAX_ERRORS = 10

_clients: dict[tuple[str, ...], Any] = {}
_clients_lock = threading.Lock()
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class StepFailed(Exception):
    """A Lambda of the pipeline raised: the execution fails with this error and cause."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message

    def cause(self) -> str:
        return json.dumps({"errorMessage": self.message, "errorType": self.error})

    def details(self) -> dict[str, str]:
        return {"error": self.error, "cause": self.cause()}


class Unreadable:
    """A record that could not be parsed at all (it counts as invalid)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def client(endpoint: str, service: str, account_id: str, region: str) -> Any:
    """A boto3 client that calls the sandbox at `endpoint` in `account_id`."""
    key = (endpoint, service, account_id, region)
    with _clients_lock:
        found = _clients.get(key)
        if found is None:
            session = boto3.session.Session(
                aws_access_key_id="sandbox",
                aws_secret_access_key="sandbox",  # noqa: S106 - moto's dummy credential
                region_name=region,
            )
            found = session.client(
                service,
                endpoint_url=endpoint,
                config=Config(
                    retries={"mode": "standard", "total_max_attempts": 3},
                    s3={"addressing_style": "path"},
                ),
            )

            def headers(request: Any, **_: Any) -> None:
                request.headers["x-moto-account-id"] = account_id
                request.headers[INTERNAL_HEADER] = "pipeline"

            found.meta.events.register("before-sign.*.*", headers)
            _clients[key] = found
        return found


class EtlRun:
    """One execution's run of the pipeline's Lambdas; steps raise StepFailed."""

    def __init__(
        self,
        endpoint: str,
        *,
        execution: Any,
        state_machine: str,
        event: Mapping[str, Any],
        received: datetime,
    ) -> None:
        self.endpoint = endpoint
        self.account_id = execution.account_id
        self.region = execution.region_name
        self.execution_arn = execution.execution_arn
        self.received = received
        detail = event.get("detail") if isinstance(event, dict) else None
        detail = detail if isinstance(detail, dict) else {}
        self.bucket = str((detail.get("bucket") or {}).get("name") or "")
        self.key = str((detail.get("object") or {}).get("key") or "")
        self.version_id = (detail.get("object") or {}).get("version-id")
        match = STATE_MACHINE.match(state_machine)
        self.env = match.group("env") if match else ""
        self.table = METADATA_TABLE.format(env=self.env)
        self.processed_bucket = PROCESSED_BUCKET.format(env=self.env)
        self.data = b""
        self.config: dict[str, Any] = {}
        self.source = ""
        self.records = 0
        self.invalid = 0
        self.errors: list[str] = []
        self.output_key = ""

    def _client(self, service: str) -> Any:
        return client(self.endpoint, service, self.account_id, self.region)

    def _summary(self, **extra: Any) -> dict[str, Any]:
        found = {"bucket": self.bucket, "key": self.key, "size": len(self.data)}
        if self.source:
            found.update(source=self.source, records=self.records)
        return {**found, **extra}

    # --- the four Lambdas ------------------------------------------------------------------

    def ingest(self) -> dict[str, Any]:
        if not self.bucket or not self.key:
            raise StepFailed("InputError", "The execution input names no S3 object.")
        if not self.env:
            raise StepFailed("ConfigurationError", "The state machine is not etl-workflow-<env>.")
        self.data = self._get_object(self.bucket, self.key, self.version_id)
        return self._summary()

    def validate(self) -> dict[str, Any]:
        self.config = self._find_config()
        self.source = str(self.config["source_name"])
        location = str(self.config.get("schema_location") or "")
        schema = self._load_schema(location)
        records = read_records(str(self.config.get("format") or "ndjson"), self.data, schema)
        self.records = len(records)
        self.errors = []
        validator = record_validator(schema)
        for position, record in enumerate(records, 1):
            problem = record.problem if isinstance(record, Unreadable) else check(validator, record)
            if problem:
                self.invalid += 1
                if len(self.errors) < MAX_ERRORS:
                    self.errors.append(f"record {position}: {problem}")
        if self.invalid:
            raise StepFailed(
                "ValidationError",
                f"{self.invalid} of {self.records} records do not match {location}: "
                f"{self.errors[0]}",
            )
        return self._summary(schema_location=location)

    def transform(self) -> dict[str, Any]:
        return self._summary()

    def output(self) -> dict[str, Any]:
        partitioning = str(self.config.get("output_partitioning") or "source={source}/year=YYYY/")
        prefix = partitioning.replace("{source}", self.source).replace(
            "YYYY", f"{self.received.year:04d}"
        )
        key = f"{prefix.rstrip('/')}/{posixpath.basename(self.key)}"
        try:
            self._client("s3").put_object(Bucket=self.processed_bucket, Key=key, Body=self.data)
        except (ClientError, BotoCoreError) as exc:
            raise StepFailed(_error("S3", exc), str(exc)) from exc
        self.output_key = key
        return self._summary(output=f"s3://{self.processed_bucket}/{key}")

    def record(self, status: str, failure: StepFailed | None) -> None:
        """The metadata item and the metrics, once the source is known."""
        if not self.source:
            return
        now = datetime.now(UTC)
        latency_ms = max(0, int((now - self.received).total_seconds() * 1000))
        item: dict[str, Any] = {
            "pk": f"SOURCE#{self.source}",
            "sk": f"FILE#{self.key}",
            "source_name": self.source,
            "bucket": self.bucket,
            "object_key": self.key,
            "status": status,
            "records": self.records,
            "invalid_records": self.invalid,
            "received_at": _iso(self.received),
            "processed_at": _iso(now),
            "latency_ms": latency_ms,
            "execution_arn": self.execution_arn,
        }
        if self.output_key:
            item["output_location"] = f"s3://{self.processed_bucket}/{self.output_key}"
        if failure is not None:
            item.update(error=failure.error, errors=self.errors or [failure.message])
        dimensions = [{"Name": "Source", "Value": self.source}]
        try:
            self._client("dynamodb").put_item(
                TableName=self.table, Item={k: _serializer.serialize(v) for k, v in item.items()}
            )
            self._client("cloudwatch").put_metric_data(
                Namespace=METRIC_NAMESPACE,
                MetricData=[
                    {
                        "MetricName": name,
                        "Value": value,
                        "Unit": unit,
                        "Dimensions": dimensions,
                        "Timestamp": now,
                    }
                    for name, value, unit in (
                        ("FilesProcessed", 1, "Count"),
                        ("ValidationErrors", self.invalid, "Count"),
                        ("ProcessingLatency", latency_ms, "Milliseconds"),
                    )
                ],
            )
        except (ClientError, BotoCoreError):
            logger.exception("sandbox pipeline: recording %s/%s failed", self.bucket, self.key)

    # --- helpers ---------------------------------------------------------------------------

    def _get_object(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        kwargs = {"VersionId": version_id} if version_id and version_id != "null" else {}
        try:
            return self._client("s3").get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise StepFailed(_error("S3", exc), f"s3://{bucket}/{key}: {exc}") from exc

    def _find_config(self) -> dict[str, Any]:
        items: list[dict[str, Any]] = []
        try:
            pages = (
                self._client("dynamodb")
                .get_paginator("scan")
                .paginate(
                    TableName=self.table,
                    FilterExpression="sk = :config AND begins_with(pk, :source)",
                    ExpressionAttributeValues={
                        ":config": {"S": "CONFIG"},
                        ":source": {"S": "SOURCE#"},
                    },
                )
            )
            for page in pages:
                items += [_plain_item(i) for i in page["Items"]]
        except (ClientError, BotoCoreError) as exc:
            raise StepFailed(_error("DynamoDB", exc), f"{self.table}: {exc}") from exc
        found = [i for i in items if i.get("raw_bucket") == self.bucket and i.get("source_name")]
        if not found:  # no raw_bucket recorded: the source whose name the bucket carries
            found = sorted(
                (i for i in items if _names(self.bucket, str(i.get("source_name") or ""))),
                key=lambda i: -len(str(i["source_name"])),
            )
        if not found:
            raise StepFailed(
                "SourceNotConfigured", f"No source in {self.table} reads bucket {self.bucket}."
            )
        return found[0]

    def _load_schema(self, location: str) -> dict[str, Any]:
        match = re.match(r"^s3://([^/]+)/(.+)$", location)
        if not match:
            raise StepFailed("SchemaNotFound", f"The schema location {location!r} is not s3://.")
        try:
            schema = json.loads(self._get_object(match.group(1), match.group(2)))
        except ValueError as exc:
            raise StepFailed("InvalidSchema", f"{location} is not JSON: {exc}") from exc
        # import here: a format's library loads only when a file of that format arrives
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise StepFailed("InvalidSchema", f"{location}: {exc.message}") from exc
        return schema


def _plain_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _deserializer.deserialize(v) for k, v in item.items()}


def _names(bucket: str, source: str) -> bool:
    return bool(source) and re.search(rf"(^|-){re.escape(source)}-[a-z0-9-]+$", bucket) is not None


def _error(service: str, exc: Exception) -> str:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    return f"{service}.{code or type(exc).__name__}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- records -----------------------------------------------------------------------------


def record_validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for the schema's dialect, formats checked."""
    # import here: a format's library loads only when a file of that format arrives
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def check(validator: Any, record: Any) -> str:
    """The most relevant schema violation of a record, or "" when it is valid."""
    # import here: a format's library loads only when a file of that format arrives
    import jsonschema

    error = jsonschema.exceptions.best_match(validator.iter_errors(record))
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def read_records(fmt: str, data: bytes, schema: dict[str, Any]) -> list[Any]:
    """The records of a file, JSON-compatible; Unreadable for a line that does not parse.
    Raises StepFailed when the file as a whole cannot be read."""
    fmt = fmt.lower()
    try:
        if fmt in ("ndjson", "jsonl"):
            lines = data.decode("utf-8-sig").splitlines()
            return [_json_line(line) for line in lines if line.strip()]
        if fmt == "json":
            document = json.loads(data.decode("utf-8-sig"))
            return document if isinstance(document, list) else [document]
        if fmt == "csv":
            reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
            return [_typed_row(row, schema) for row in reader]
        if fmt == "parquet":
            # import here: a format's library loads only when a file of that format arrives
            import pyarrow.parquet as pq

            return [_plain(row) for row in pq.read_table(io.BytesIO(data)).to_pylist()]
        if fmt == "avro":
            # import here: a format's library loads only when a file of that format arrives
            import fastavro

            return [_plain(row) for row in fastavro.reader(io.BytesIO(data))]
    except StepFailed:
        raise
    except Exception as exc:  # whatever the reader raises, the file is unreadable
        raise StepFailed("UnreadableFile", f"The file is not valid {fmt}: {exc}") from exc
    raise StepFailed("UnsupportedFormat", f"The pipeline does not read {fmt!r} files.")


def _json_line(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as exc:
        return Unreadable(f"not JSON ({exc})")


def _typed_row(row: dict[str | None, Any], schema: dict[str, Any]) -> Any:
    """A CSV row with values converted to the types the schema's properties declare."""
    if None in row:
        return Unreadable("more fields than the header has columns")
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    typed: dict[str, Any] = {}
    for column, value in row.items():
        if value is None or (value == "" and column not in required):
            continue
        types = (properties.get(column) or {}).get("type") or "string"
        typed[str(column)] = _convert(value, types if isinstance(types, list) else [types])
    return typed


def _convert(value: str, types: list[str]) -> Any:
    for kind in types:
        try:
            if kind == "integer":
                return int(value)
            if kind == "number":
                return float(value)
            if kind == "boolean" and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if kind == "null" and value == "":
                return None
        except ValueError:
            continue
        if kind == "string":
            return value
    return value


def _plain(value: Any) -> Any:
    """Columnar values (timestamps, decimals, bytes) as JSON Schema sees them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value
