"""The validate run's steps: the schema, each sample, then the summary. Validating a sample
again overwrites its report; nothing in AWS is touched."""

from __future__ import annotations

from typing import Any

from onboarding.models import OnboardingRequest, Sample
from onboarding.request_state import request_validation_state, sample_record_report
from onboarding.rules import sample_limits
from onboarding.steps.common import step_request
from onboarding.validation import SampleFormat, check_schema, validate_sample
from portal.runs.api import Done, PermanentStepError, StepContext, step

MAX_LISTED_FAILURES = 10


def _schema(request: OnboardingRequest) -> dict[str, Any]:
    schema, problems = check_schema(request.schema_text)
    if problems or schema is None:
        listed = "; ".join(f"{p.path or '(root)'}: {p.message}" for p in problems[:10])
        raise PermanentStepError(f"The schema has {len(problems)} problem(s): {listed}")
    return schema


@step("onboarding.check_schema", title="Check the schema")
def check_schema_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
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
    request = step_request(ctx)
    state = request_validation_state(request)
    if not state.passed:
        listed = "; ".join(
            f"{v.sample.original_name}: {v.explanation}"
            for v in state.failing[:MAX_LISTED_FAILURES]
        )
        raise PermanentStepError(f"{state.summary} {listed}")
    ctx.log("info", state.summary)
    return Done({"passed": True, "samples": len(state.verdicts), "revision": request.revision})
