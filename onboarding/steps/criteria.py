"""SOP-001's success criteria, measured live for one environment: the one step of the
success-criteria run reads the evidence (metadata table, validation reports, the newest
passing smoke test, the bucket's security baseline, the alarm, the dashboard) and records
each criterion with when it was measured. The goals are the rules of `onboarding.rules`
(`files_goal_met`, the smoke test's SLA)."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from onboarding.aws.baseline import security_baseline
from onboarding.aws.live import read_dashboard, widget_title
from onboarding.models import OnboardingRequest
from onboarding.rules import FILES_GOAL, files_goal_met
from onboarding.steps.common import rule_stops_run, step_plan, step_request
from portal.runs.api import Done, StepContext, step


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
        files_goal_met(ok, failed),
        f"{ok} succeeded, {failed} failed (metadata table {table})",
    )


def _malformed_caught(request: OnboardingRequest) -> dict[str, Any]:
    marked = list(request.samples.filter(expected_malformed=True))
    caught = [s for s in marked if (s.report or {}).get("invalid_count", 0) > 0]
    return _criterion(
        "malformed",
        "Validation schema catches all malformed samples",
        bool(marked) and len(caught) == len(marked),
        f"{len(caught)} of {len(marked)} samples marked malformed were rejected by the schema",
    )


def _latency(smoke: dict[str, Any] | None) -> dict[str, Any]:
    """`smoke`: the newest passing smoke test in the environment when the run was planned
    (run_id, p95_seconds, sla_seconds, files), or None."""
    if smoke is None:
        return _criterion("latency", "Latency SLA met (p95)", None, "no passing smoke test yet")
    return _criterion(
        "latency",
        "Latency SLA met (p95)",
        smoke["p95_seconds"] < smoke["sla_seconds"],
        f"p95 {smoke['p95_seconds']:.2f} s against {smoke['sla_seconds']:.0f} s "
        f"(smoke test run #{smoke['run_id']}, {smoke['files']} files)",
    )


def _security(ctx: StepContext, plan: dict[str, Any]) -> dict[str, Any]:
    with rule_stops_run():
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
    widgets = read_dashboard(cw, dashboard).get("widgets", [])
    present = any(widget_title(w) == title for w in widgets)
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
        _latency(ctx.params.get("smoke")),
        _security(ctx, plan),
        _monitoring(ctx, plan),
    ]
    return Done({"measured_at": timezone.now().isoformat(), "criteria": criteria})
