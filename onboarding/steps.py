"""Run kinds and steps of onboarding: sample validation and comparing the plan with AWS.

Each step is idempotent: validating a sample again overwrites its report, comparing again
reads AWS again. Neither changes anything in AWS.
"""

from __future__ import annotations

import json
from typing import Any

from onboarding.live import diff_plan, read_live
from onboarding.models import OnboardingRequest, Sample
from onboarding.plan import TargetEnvironment, build_plan, plan_digest
from onboarding.services import (
    PLAN_DIFF_KIND,
    VALIDATE_KIND,
    request_validation_state,
    sample_limits,
    sample_record_report,
    source_spec,
    spec_snapshot,
)
from onboarding.validation import SampleFormat, check_schema, validate_sample
from portal.errors import ApplicationError
from portal.roles import Role
from portal.runs.engine import StepContext
from portal.runs.registry import Done, PermanentStepError, PlannedStep, run_kind, step

MAX_LISTED_FAILURES = 10


def _pretty(value: Any) -> str:
    """A value for the diff table (AWS values can hold Decimals and datetimes)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _request(ctx: StepContext) -> OnboardingRequest:
    request = OnboardingRequest.objects.filter(pk=ctx.params.get("request_id")).first()
    if request is None:
        raise PermanentStepError("The onboarding request no longer exists.")
    return request


def _schema(request: OnboardingRequest) -> dict[str, Any]:
    schema, problems = check_schema(request.schema_text)
    if problems or schema is None:
        listed = "; ".join(f"{p.path or '(root)'}: {p.message}" for p in problems[:10])
        raise PermanentStepError(f"The schema has {len(problems)} problem(s): {listed}")
    return schema


# --- Validation ------------------------------------------------------------------------------


@run_kind(VALIDATE_KIND, title="Validate samples", start_roles=[Role.REQUESTER, Role.ENGINEER])
def validate_plan(params: dict[str, Any]) -> list[PlannedStep]:
    samples = Sample.objects.filter(request_id=params["request_id"]).order_by("original_name", "pk")
    return [
        PlannedStep("onboarding.check_schema"),
        *(
            PlannedStep(
                "onboarding.validate_sample",
                title=f"Validate {name}",
                params={"sample_id": pk},
            )
            for pk, name in samples.values_list("pk", "original_name")
        ),
        PlannedStep("onboarding.validation_summary"),
    ]


@step("onboarding.check_schema", title="Check the schema")
def check_schema_step(ctx: StepContext) -> Done:
    request = _request(ctx)
    schema = _schema(request)
    ctx.log("read", f"{request.key} schema v{request.schema_version}: no problems")
    return Done(
        {
            "schema_version": request.schema_version,
            "properties": sorted((schema.get("properties") or {}).keys())[:50],
        }
    )


@step("onboarding.validate_sample", title="Validate a sample")
def validate_sample_step(ctx: StepContext) -> Done:
    sample = Sample.objects.select_related("request").filter(pk=ctx.params["sample_id"]).first()
    if sample is None:
        ctx.log("info", "The sample was removed since the run started; nothing to validate.")
        return Done({"sample_id": ctx.params["sample_id"], "removed": True})
    request = sample.request
    schema = _schema(request)
    if not request.data_format:
        raise PermanentStepError("The request has no data format; choose one and validate again.")
    with sample.file.open("rb") as stream:
        report = validate_sample(
            stream,
            schema=schema,
            declared_format=SampleFormat(request.data_format),
            limits=sample_limits(),
        )
    sample_record_report(
        sample=sample,
        report=report,
        schema_text=request.schema_text,
        data_format=request.data_format,
        revision=request.revision,
    )
    ctx.log(
        "read",
        f"{sample.original_name}: {report.records_checked} record(s), "
        f"{report.invalid_count} invalid"
        + (f", rejected: {report.rejected}" if report.rejected else ""),
    )
    verdict = next(
        v for v in request_validation_state(request).verdicts if v.sample.pk == sample.pk
    )
    return Done(
        {
            "sample_id": sample.pk,
            "name": sample.original_name,
            "format": str(report.format) if report.format else None,
            "records_checked": report.records_checked,
            "invalid_count": report.invalid_count,
            "rejected": report.rejected,
            "flags": list(report.flags),
            "expected_malformed": sample.expected_malformed,
            "behaves_as_marked": verdict.state == "passes",
            "revision": request.revision,
        }
    )


@step("onboarding.validation_summary", title="Summarise the validation")
def validation_summary_step(ctx: StepContext) -> Done:
    request = _request(ctx)
    state = request_validation_state(request)
    if not state.passed:
        listed = "; ".join(
            f"{v.sample.original_name}: {v.explanation}"
            for v in state.failing[:MAX_LISTED_FAILURES]
        )
        raise PermanentStepError(f"{state.summary} {listed}")
    ctx.log("info", state.summary)
    return Done({"passed": True, "samples": len(state.verdicts), "revision": request.revision})


# --- Compare the plan with AWS ------------------------------------------------------------------


@run_kind(
    PLAN_DIFF_KIND,
    title="Compare plan with AWS",
    start_roles=[Role.ENGINEER, Role.SECURITY_APPROVER, Role.GOVERNANCE_APPROVER],
)
def plan_diff_plan(params: dict[str, Any]) -> list[PlannedStep]:
    return [
        PlannedStep(
            "onboarding.plan_diff_environment",
            title=f"Compare with AWS: {name}",
            params={"environment": name},
        )
        for name in params["environments"]
    ]


@step("onboarding.plan_diff_environment", title="Compare the plan with AWS")
def plan_diff_step(ctx: StepContext) -> Done:
    request = _request(ctx)
    env = ctx.environment()
    spec = source_spec(spec_snapshot(request))
    if spec is None:
        raise PermanentStepError("The spec is not complete enough to plan.")
    try:
        plan = build_plan(spec, TargetEnvironment.from_model(env))
    except ApplicationError as exc:
        raise PermanentStepError(exc.message) from None
    live = read_live(plan, lambda service: ctx.aws(service, env))
    changes = diff_plan(plan, live)
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
        if change.action != "unchanged":
            ctx.log("read", f"{change.section}.{change.field}: {change.action}")
    ctx.log("info", ", ".join(f"{n} {action}" for action, n in sorted(counts.items())))
    rows = [
        {
            "section": c.section,
            "field": c.field,
            "action": c.action,
            "expected": _pretty(c.expected),
            "actual": _pretty(c.actual),
        }
        for c in changes
    ]
    return Done(
        {
            "environment": env.name,
            "revision": request.revision,
            "plan_digest": plan_digest(plan),
            "counts": counts,
            "changes": rows,
        }
    )
