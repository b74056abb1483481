"""SOP-001's success criteria, measured live for one environment: a run kind whose one step
reads the evidence (metadata table, validation reports, the last smoke test, the bucket's
security baseline, the alarm, the dashboard) and records each criterion with when it was
measured. The ticket shows the newest result per environment."""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from onboarding.baseline import security_baseline
from onboarding.provision_steps import step_plan, step_request
from onboarding.provisioning import CRITERIA_KIND, SMOKE_KIND
from portal.roles import Role
from portal.runs.engine import StepContext
from portal.runs.models import RunStatus
from portal.runs.registry import Done, PlannedStep, run_kind, step
from portal.runs.selectors import runs_of

FILES_GOAL = 100


@run_kind(
    CRITERIA_KIND, title="Measure the success criteria", start_roles=[Role.ENGINEER, Role.ADMIN]
)
def criteria_plan(params: dict[str, Any]) -> list[PlannedStep]:
    env = params.get("environment", "")
    return [PlannedStep("onboarding.success_criteria", f"{env}: success criteria")]


def _criterion(key: str, title: str, passed: bool | None, evidence: str) -> dict[str, Any]:
    return {"key": key, "title": title, "passed": passed, "evidence": evidence}


def _files_processed(ctx: StepContext, plan: dict[str, Any]) -> dict[str, Any]:
    ddb, table = ctx.aws("dynamodb"), plan["config_item"]["table"]
    ok = failed = 0
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk AND begins_with(sk, :file)",
        "ExpressionAttributeValues": {
            ":pk": {"S": f"SOURCE#{plan['source']}"},
            ":file": {"S": "FILE#"},
        },
    }
    while True:
        page = ddb.query(**kwargs)
        for item in page.get("Items", []):
            if item.get("status", {}).get("S") == "SUCCEEDED":
                ok += 1
            else:
                failed += 1
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    ctx.log("read", f"{table}: {ok} files succeeded, {failed} failed")
    return _criterion(
        "files",
        f"{FILES_GOAL} files processed successfully without errors",
        ok >= FILES_GOAL and failed == 0,
        f"{ok} succeeded, {failed} failed (metadata table {table})",
    )


def _malformed_caught(request: Any) -> dict[str, Any]:
    marked = list(request.samples.filter(expected_malformed=True))
    caught = [s for s in marked if (s.report or {}).get("invalid_count", 0) > 0]
    return _criterion(
        "malformed",
        "Validation schema catches all malformed samples",
        bool(marked) and len(caught) == len(marked),
        f"{len(caught)} of {len(marked)} samples marked malformed were rejected by the schema",
    )


def _latency(request: Any, environment: str) -> dict[str, Any]:
    smoke = (
        runs_of(request, SMOKE_KIND)
        .filter(status=RunStatus.SUCCEEDED, params__environment=environment)
        .order_by("-finished_at")
        .first()
    )
    verify = smoke.steps.filter(key="onboarding.smoke_verify").first() if smoke else None
    if verify is None:
        return _criterion("latency", "Latency SLA met (p95)", None, "no passing smoke test yet")
    out = verify.output
    return _criterion(
        "latency",
        "Latency SLA met (p95)",
        out["p95_seconds"] < out["sla_seconds"],
        f"p95 {out['p95_seconds']:.2f} s against {out['sla_seconds']:.0f} s "
        f"(smoke test run #{smoke.pk}, {len(out['files'])} files)",
    )


def _security(ctx: StepContext, plan: dict[str, Any]) -> dict[str, Any]:
    checks = security_baseline(ctx.aws("s3"), plan["bucket"]["name"])
    failed = [c for c in checks if c.passed is False]
    ctx.log("read", f"security baseline: {len(checks)} checks, {len(failed)} failed")
    evidence = "; ".join(f"{c.control}: {c.evidence}" for c in failed) or ", ".join(
        c.control for c in checks if c.passed
    )
    return _criterion("security", "No IAM/encryption gaps", not failed, evidence)


def _monitoring(ctx: StepContext, plan: dict[str, Any]) -> dict[str, Any]:
    cw = ctx.aws("cloudwatch")
    name = plan["alarm"]["AlarmName"]
    alarms = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    state = alarms[0]["StateValue"] if alarms else "MISSING"
    dashboard = plan["dashboard_widget"]["dashboard_name"]
    title = plan["dashboard_widget"]["widget"]["properties"]["title"]
    try:
        body = json.loads(cw.get_dashboard(DashboardName=dashboard)["DashboardBody"])
    except cw.exceptions.ResourceNotFound:
        body = {"widgets": []}
    present = any(w.get("properties", {}).get("title") == title for w in body.get("widgets", []))
    ctx.log("read", f"alarm {name} is {state}; widget {title!r} present: {present}")
    return _criterion(
        "monitoring",
        "Monitoring dashboards show healthy metrics",
        state != "ALARM" and state != "MISSING" and present,
        f"alarm {name}: {state}; dashboard {dashboard} widget "
        + ("present" if present else "missing"),
    )


@step("onboarding.success_criteria", title="Success criteria")
def success_criteria_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    plan = step_plan(ctx, request)
    criteria = [
        _files_processed(ctx, plan),
        _malformed_caught(request),
        _latency(request, ctx.params["environment"]),
        _security(ctx, plan),
        _monitoring(ctx, plan),
    ]
    return Done({"measured_at": timezone.now().isoformat(), "criteria": criteria})


def latest_criteria(request: Any) -> dict[str, dict[str, Any]]:
    """The newest measured criteria per environment name."""
    runs = (
        runs_of(request, CRITERIA_KIND).filter(status=RunStatus.SUCCEEDED).order_by("finished_at")
    )
    result: dict[str, dict[str, Any]] = {}
    for run in runs.prefetch_related("steps"):
        step_ = next(iter(run.steps.all()), None)
        if step_ is not None:
            result[run.params.get("environment", "")] = {"run": run, **step_.output}
    return result
