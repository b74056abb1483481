"""The smoke test's steps: upload the valid samples under ``incoming/smoke/<run>/``, wait
for the executions they start, then check the processed output, the metadata items and the
latency against the request's SLA. How many files and which SLA are the rules of
`onboarding.rules` (`smoke_file_limit`, `sla_seconds`, `latency_problem`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from django.utils import timezone

from onboarding.aws.live import absent
from onboarding.models import OnboardingRequest, Sample
from onboarding.rules import latency_problem, p95, sla_seconds, smoke_file_limit
from onboarding.steps.common import earlier_output, step_plan, step_request
from portal.aws import error_code
from portal.runs.api import Done, PermanentStepError, StepContext, Wait, step

SMOKE_UPLOAD = "onboarding.smoke_upload"
SMOKE_WAIT = "onboarding.smoke_wait"
SMOKE_VERIFY = "onboarding.smoke_verify"
SMOKE_POLL_SECONDS = 2
SMOKE_DEADLINE = timedelta(minutes=10)
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


def smoke_samples(request: OnboardingRequest, environment: Any) -> list[Sample]:
    """The valid samples a smoke test uploads: 5 in production, all elsewhere, at most 10."""
    samples = request.samples.filter(expected_malformed=False).order_by("original_name", "pk")
    return list(samples[: smoke_file_limit(environment)])


def _output_of(ctx: StepContext, key: str) -> dict[str, Any]:
    found = earlier_output(ctx, key)
    if not found:
        raise PermanentStepError(f"The step {key} has no output; run the smoke test again.")
    return found


@step(SMOKE_UPLOAD, title="Upload the valid samples")
def smoke_upload_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    plan = step_plan(ctx, request)
    bucket = plan["bucket"]["name"]
    s3 = ctx.aws("s3")
    samples = smoke_samples(request, ctx.environment())
    if not samples:
        raise PermanentStepError(f"{request.key} has no valid sample to smoke-test with.")
    files = []
    for sample in samples:
        key = f"{plan['bucket']['producer_prefix']}smoke/{ctx.run.pk}/{sample.original_name}"
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
            action = "unchanged"  # uploaded before a crash: a second put would run it twice
        except ClientError as exc:
            code = error_code(exc)
            if code == "NoSuchBucket" or (code == "404" and not _bucket_exists(s3, bucket)):
                raise PermanentStepError(
                    f"The bucket {bucket} does not exist; provision {ctx.environment().name} first."
                ) from None
            if not absent(exc):
                raise
            with sample.file.open("rb") as stream:
                s3.put_object(Bucket=bucket, Key=key, Body=stream.read())
            head = s3.head_object(Bucket=bucket, Key=key)
            action = "created"
        ctx.log(action, f"s3://{bucket}/{key}")
        files.append(
            {
                "name": sample.original_name,
                "key": key,
                "uploaded_at": head["LastModified"].astimezone(UTC).isoformat(),
            }
        )
    deadline = timezone.now() + SMOKE_DEADLINE
    return Done({"bucket": bucket, "files": files, "deadline": deadline.isoformat()})


def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        return False
    return True


def _executions(sfn: Any, arn: str, bucket: str, since: datetime) -> dict[str, dict[str, Any]]:
    """The newest execution per object key of `bucket` started since `since`."""
    found: dict[str, dict[str, Any]] = {}
    for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn):
        for summary in page["executions"]:
            if summary["startDate"] < since:
                continue
            described = sfn.describe_execution(executionArn=summary["executionArn"])
            try:
                detail = json.loads(described.get("input") or "{}").get("detail", {})
            except ValueError:
                continue
            if detail.get("bucket", {}).get("name") != bucket:
                continue
            key = detail.get("object", {}).get("key")
            if key and (key not in found or described["startDate"] > found[key]["startDate"]):
                found[key] = described
    return found


@step(SMOKE_WAIT, title="Wait for the pipeline")
def smoke_wait_step(ctx: StepContext) -> Done | Wait:
    uploaded = _output_of(ctx, SMOKE_UPLOAD)
    env = ctx.environment()
    earliest = min(datetime.fromisoformat(f["uploaded_at"]) for f in uploaded["files"])
    executions = _executions(
        ctx.aws("stepfunctions"),
        env.state_machine_arn,
        uploaded["bucket"],
        earliest - timedelta(seconds=5),
    )
    pending = [
        f["name"]
        for f in uploaded["files"]
        if executions.get(f["key"], {}).get("status") not in TERMINAL
    ]
    if pending:
        if timezone.now() > datetime.fromisoformat(uploaded["deadline"]):
            raise PermanentStepError(
                f"No finished execution after {SMOKE_DEADLINE} for: {', '.join(pending)}."
            )
        return Wait(
            until=timezone.now() + timedelta(seconds=SMOKE_POLL_SECONDS),
            reason=f"{len(pending)} of {len(uploaded['files'])} file(s) still processing",
        )
    files = []
    for f in uploaded["files"]:
        execution = executions[f["key"]]
        ctx.log("read", f"{f['name']}: execution {execution['name']} {execution['status']}")
        files.append(
            {
                **f,
                "execution_arn": execution["executionArn"],
                "status": execution["status"],
                "stopped_at": execution["stopDate"].astimezone(UTC).isoformat(),
                "error": execution.get("error", ""),
            }
        )
    failed = [f for f in files if f["status"] != "SUCCEEDED"]
    if failed:
        raise PermanentStepError(
            "The pipeline did not succeed for: "
            + "; ".join(f"{f['name']} ({f['status']} {f['error']})".strip() for f in failed)
        )
    return Done({"bucket": uploaded["bucket"], "files": files})


@step(SMOKE_VERIFY, title="Check output, metadata and SLA")
def smoke_verify_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    plan = step_plan(ctx, request)
    env = ctx.environment()
    finished = _output_of(ctx, SMOKE_WAIT)
    s3, ddb = ctx.aws("s3"), ctx.aws("dynamodb")
    table, source = plan["config_item"]["table"], plan["source"]
    processed = env.resource(env.processed_bucket_name)
    files, problems = [], []
    for f in finished["files"]:
        item = ddb.get_item(
            TableName=table,
            Key={"pk": {"S": f"SOURCE#{source}"}, "sk": {"S": f"FILE#{f['key']}"}},
            ConsistentRead=True,
        ).get("Item")
        latency = (
            datetime.fromisoformat(f["stopped_at"]) - datetime.fromisoformat(f["uploaded_at"])
        ).total_seconds()
        output = _processed_object(s3, processed, source, item, f["key"])
        row = {
            "name": f["name"],
            "key": f["key"],
            "status": f["status"],
            "latency_seconds": round(max(latency, 0.0), 3),
            "pipeline_latency_ms": int(item["latency_ms"]["N"]) if item else None,
            "metadata_status": item["status"]["S"] if item else None,
            "output": output,
        }
        if item is None:
            problems.append(f"{f['name']}: no metadata item in {table}")
        elif row["metadata_status"] != "SUCCEEDED":
            problems.append(f"{f['name']}: metadata status {row['metadata_status']}")
        if output is None:
            problems.append(
                f"{f['name']}: no processed file under s3://{processed}/source={source}/"
            )
        ctx.log("read" if not problems else "warning", f"{f['name']}: {row['latency_seconds']} s")
        files.append(row)
    sla = sla_seconds(plan["spec"]["latency_sla"])
    observed = p95([row["latency_seconds"] for row in files])
    if slow := latency_problem(observed, sla):
        problems.append(slow)
    result = {
        "files": files,
        "p95_seconds": observed,
        "sla_seconds": sla,
        "passed": not problems,
        "problems": problems,
    }
    ctx.log("info", f"p95 {observed:.2f} s against {sla:.0f} s; {len(problems)} problem(s)")
    if problems:
        raise PermanentStepError("The smoke test failed: " + "; ".join(problems))
    return Done(result)


def _processed_object(
    s3: Any, bucket: str, source: str, item: dict[str, Any] | None, raw_key: str
) -> str | None:
    """s3:// of the processed file: where the metadata item says, else under source=<name>/."""
    location = (item or {}).get("output_location", {}).get("S", "")
    prefix = f"s3://{bucket}/"
    if location.startswith(prefix):
        try:
            s3.head_object(Bucket=bucket, Key=location[len(prefix) :])
            return location
        except ClientError:
            return None
    base = raw_key.rsplit("/", 1)[-1]
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"source={source}/"
    ):
        for entry in page.get("Contents", []):
            if entry["Key"].rsplit("/", 1)[-1] == base:
                return f"{prefix}{entry['Key']}"
    return None
