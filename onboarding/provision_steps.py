"""Run kinds of runbook 1 that change AWS: provision, smoke test, drift check, teardown.

- ``onboarding.provision`` applies the request's approved plan to one environment: the
  approval check first (nothing touches AWS unless both live approvals are of the request
  as it is now), then one idempotent step per plan section, in dependency order.
- ``onboarding.smoke_test`` uploads the valid samples under ``incoming/smoke/<run>/``,
  waits for the executions they start and checks the processed output, the metadata items
  and the latency against the request's SLA.
- ``onboarding.drift_check`` compares each environment where the source is provisioned
  with the plan, reading only.
- ``onboarding.teardown`` removes what provisioning made, and the raw bucket only when it
  is empty. Re-applying the plan after drift is the provision run again.

The work itself is in `onboarding.provisioning` (apply / remove) and `onboarding.baseline`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings
from django.utils import timezone

from onboarding import provisioning as prov
from onboarding.models import OnboardingRequest, RequestStatus, Sample
from onboarding.provisioning import apply, drift, remove
from portal.errors import ApplicationError
from portal.roles import Role
from portal.runs.engine import StepContext
from portal.runs.models import StepStatus
from portal.runs.registry import Done, PermanentStepError, PlannedStep, Wait, run_kind, step
from portal.runs.gates import confirmation_step

CHECK_APPROVAL = "onboarding.check_approval"
SMOKE_PRODUCTION_FILES = 5
SMOKE_MAX_FILES = 10
SMOKE_POLL_SECONDS = 2
SMOKE_DEADLINE = timedelta(minutes=10)
SLA_SECONDS = {"realtime": 10.0, "hourly": 30.0, "daily": 24 * 3600.0}
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


# --- shared -------------------------------------------------------------------------------------


def step_request(ctx: StepContext) -> OnboardingRequest:
    request = OnboardingRequest.objects.filter(pk=ctx.params.get("request_id")).first()
    if request is None:
        raise PermanentStepError("The onboarding request no longer exists.")
    return request


def step_plan(ctx: StepContext, request: OnboardingRequest) -> dict[str, Any]:
    try:
        return prov.plan_for(request, ctx.environment())
    except ApplicationError as exc:
        raise PermanentStepError(exc.message) from None


def _approved_plan(ctx: StepContext) -> tuple[OnboardingRequest, dict[str, Any]]:
    """The plan, before every step that writes: still approved, and exactly the plan whose
    digest the run's approval check recorded (the full check runs once, first)."""
    from onboarding.plan import plan_digest

    request = step_request(ctx)
    if request.status != RequestStatus.APPROVED:
        raise PermanentStepError(prov.approval_problem(request) or "Not approved.")
    plan = step_plan(ctx, request)
    checked = (
        ctx.run.steps.filter(key=CHECK_APPROVAL, status=StepStatus.SUCCEEDED)
        .values_list("output", flat=True)
        .first()
    )
    if not checked or checked.get("plan_digest") != plan_digest(plan):
        raise PermanentStepError(
            f"The plan for {request.key} changed after this run checked its approval; nothing "
            "more was applied. Start the run again to check the approval of the plan as it is."
        )
    return request, plan


def _apply(ctx: StepContext, func: Callable[..., dict[str, Any]], *args: Any) -> Done:
    try:
        output = func(*args, ctx.aws, ctx.log)
    except ApplicationError as exc:
        raise PermanentStepError(exc.message) from None
    return Done({"environment": ctx.params["environment"], **output})


def _env_title(params: dict[str, Any]) -> str:
    return str(params.get("environment", ""))


# --- provision --------------------------------------------------------------------------------

PROVISION_STEPS = (
    ("onboarding.provision_kms", "KMS key", apply.apply_kms),
    ("onboarding.provision_bucket", "S3 bucket and its settings", apply.apply_bucket),
    ("onboarding.provision_bucket_policy", "Bucket policy", apply.apply_bucket_policy),
    ("onboarding.provision_notifications", "EventBridge notifications", apply.apply_notifications),
    ("onboarding.provision_rule", "EventBridge rule", apply.apply_rule),
    ("onboarding.provision_target", "Step Functions target", apply.apply_target),
    ("onboarding.provision_schema", "Schema registration", None),
    ("onboarding.provision_config_item", "Pipeline configuration item", apply.apply_config_item),
    ("onboarding.provision_alarm", "Validation errors alarm", apply.apply_alarm),
    ("onboarding.provision_dashboard_widget", "Dashboard widget", apply.apply_dashboard_widget),
    ("onboarding.provision_tags", "Tags", apply.apply_tags),
)


def production_gate(params: dict[str, Any], what: str) -> list[PlannedStep]:
    """In a production environment, a second engineer confirms before the run changes
    anything (ONBOARDING_PROD_CONFIRMATION, on by default)."""
    from portal.models import Environment

    name = params.get("environment")
    if not settings.ONBOARDING_PROD_CONFIRMATION:
        return []
    if not Environment.objects.filter(name=name, is_production=True).exists():
        return []
    return [confirmation_step(f"{what} in {name}", who="engineer")]


@run_kind(prov.PROVISION_KIND, title="Provision an environment", start_roles=[Role.ENGINEER])
def provision_plan(params: dict[str, Any]) -> list[PlannedStep]:
    env = _env_title(params)
    return [
        *production_gate(params, "provisioning"),
        PlannedStep(CHECK_APPROVAL, title=f"Check the approval ({env})"),
        *(PlannedStep(key, title=f"{title} ({env})") for key, title, _ in PROVISION_STEPS),
    ]


@step(CHECK_APPROVAL, title="Check the approval")
def check_approval_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    problem = prov.approval_problem(request)
    if problem:
        raise PermanentStepError(problem)
    plan = step_plan(ctx, request)
    from onboarding.plan import plan_digest

    ctx.log(
        "read",
        f"{request.key} revision {request.revision}: approved by both roles, "
        "digest matches the request as it is now",
    )
    return Done(
        {
            "request": request.key,
            "revision": request.revision,
            "environment": plan["environment"]["name"],
            "plan_digest": plan_digest(plan),
        }
    )


def _section_step(func: Callable[..., dict[str, Any]]) -> Callable[[StepContext], Done]:
    def run(ctx: StepContext) -> Done:
        _, plan = _approved_plan(ctx)
        return _apply(ctx, func, plan)

    return run


for _key, _title, _func in PROVISION_STEPS:
    if _func is not None:
        step(_key, title=_title)(_section_step(_func))


@step("onboarding.provision_schema", title="Schema registration")
def provision_schema_step(ctx: StepContext) -> Done:
    request, plan = _approved_plan(ctx)
    return _apply(ctx, apply.apply_schema_object, plan, request.schema_text)


# --- smoke test -------------------------------------------------------------------------------


@run_kind(prov.SMOKE_KIND, title="Smoke test", start_roles=[Role.ENGINEER])
def smoke_plan(params: dict[str, Any]) -> list[PlannedStep]:
    env = _env_title(params)
    return [
        PlannedStep("onboarding.smoke_upload", title=f"Upload the valid samples ({env})"),
        PlannedStep("onboarding.smoke_wait", title=f"Wait for the pipeline ({env})"),
        PlannedStep("onboarding.smoke_verify", title=f"Check output, metadata and SLA ({env})"),
    ]


def smoke_samples(request: OnboardingRequest, environment: Any) -> list[Sample]:
    """The valid samples a smoke test uploads: 5 in production, all elsewhere, at most 10."""
    limit = SMOKE_PRODUCTION_FILES if environment.is_production else SMOKE_MAX_FILES
    samples = request.samples.filter(expected_malformed=False).order_by("original_name", "pk")
    return list(samples[:limit])


@step("onboarding.smoke_upload", title="Upload the valid samples")
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
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchBucket",) or (code == "404" and not _bucket_exists(s3, bucket)):
                raise PermanentStepError(
                    f"The bucket {bucket} does not exist; provision {ctx.environment().name} first."
                ) from None
            if code not in ("404", "NoSuchKey", "NotFound"):
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


def _output_of(ctx: StepContext, key: str) -> dict[str, Any]:
    found = ctx.run.steps.filter(key=key).values_list("output", flat=True).first()
    if not found:
        raise PermanentStepError(f"The step {key} has no output; run the smoke test again.")
    return found


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


@step("onboarding.smoke_wait", title="Wait for the pipeline")
def smoke_wait_step(ctx: StepContext) -> Done | Wait:
    uploaded = _output_of(ctx, "onboarding.smoke_upload")
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


def p95(values: list[float]) -> float:
    """The 95th percentile by nearest rank (the value 95% of the samples are at or below)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@step("onboarding.smoke_verify", title="Check output, metadata and SLA")
def smoke_verify_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    plan = step_plan(ctx, request)
    env = ctx.environment()
    finished = _output_of(ctx, "onboarding.smoke_wait")
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
    sla = SLA_SECONDS.get(plan["spec"]["latency_sla"], SLA_SECONDS["hourly"])
    observed = p95([row["latency_seconds"] for row in files])
    if observed >= sla:
        problems.append(f"p95 latency {observed:.1f} s is not under the SLA of {sla:.0f} s")
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


# --- drift ------------------------------------------------------------------------------------


@run_kind(prov.DRIFT_KIND, title="Drift check", start_roles=[Role.ENGINEER, Role.ADMIN])
def drift_plan(params: dict[str, Any]) -> list[PlannedStep]:
    names = params.get("environments")
    if names is None:
        request = OnboardingRequest.objects.filter(pk=params["request_id"]).first()
        names = drift.provisioned_environments(request) if request else []
    return [
        PlannedStep(
            "onboarding.drift_environment",
            title=f"Compare with the plan: {name}",
            params={"environment": name},
        )
        for name in names
    ]


@step("onboarding.drift_environment", title="Compare an environment with the plan")
def drift_environment_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    env = ctx.environment()
    try:
        changes = drift.drift_for(request, env)
    except ApplicationError as exc:
        raise PermanentStepError(exc.message) from None
    for change in changes:
        ctx.log("warning", f"{change.section}.{change.field}: {change.action}")
    if not changes:
        ctx.log("read", f"{env.name}: everything is as planned")
    return Done(
        {
            "environment": env.name,
            "drifted": bool(changes),
            "changes": [
                {
                    "section": c.section,
                    "field": c.field,
                    "action": c.action,
                    "expected": c.expected,
                    "actual": c.actual,
                }
                for c in changes
            ],
        }
    )


# --- teardown ---------------------------------------------------------------------------------

TEARDOWN_STEPS = (
    ("onboarding.teardown_rule", "Remove the targets and the rule", remove.remove_target_and_rule),
    ("onboarding.teardown_notifications", "Turn off notifications", remove.remove_notifications),
    ("onboarding.teardown_alarm", "Remove the alarm", remove.remove_alarm),
    ("onboarding.teardown_widget", "Remove the dashboard widget", remove.remove_dashboard_widget),
    ("onboarding.teardown_config_item", "Remove the configuration item", remove.remove_config_item),
    ("onboarding.teardown_schema", "Remove the schema", remove.remove_schema_objects),
    ("onboarding.teardown_bucket", "Delete the bucket if empty", remove.remove_bucket_if_empty),
)


@run_kind(prov.TEARDOWN_KIND, title="Tear down an environment", start_roles=[Role.ENGINEER])
def teardown_plan(params: dict[str, Any]) -> list[PlannedStep]:
    env = _env_title(params)
    return [
        *production_gate(params, "the teardown"),
        *(PlannedStep(key, title=f"{title} ({env})") for key, title, _ in TEARDOWN_STEPS),
    ]


def _teardown_step(func: Callable[..., dict[str, Any]]) -> Callable[[StepContext], Done]:
    def run(ctx: StepContext) -> Done:
        return _apply(ctx, func, step_plan(ctx, step_request(ctx)))

    return run


for _key, _title, _func in TEARDOWN_STEPS:
    step(_key, title=_title)(_teardown_step(_func))
