"""A request's current state, read from its rows: what services decide on and what steps
check again before they act. It applies the pure rules (`onboarding.rules`) to the rows.

- `request_validation_state`, `request_blockers`: whether the samples behave as marked,
  and what still blocks a submission (or an approval);
- `request_current_digest`: what an approval of the request as it is now is bound to;
- `plan_for`: the request's plan for one environment;
- `approval_problem`: why the request may not be applied to AWS now (the provision run
  checks it first, the rollout page shows it);
- `sample_record_report`: the one write a step makes to a request's rows, a sample's
  validation report.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from onboarding.models import Decision, OnboardingRequest, RequestStatus, Sample
from onboarding.rules import (
    ValidationState,
    environment_plans,
    request_prerequisites,
    revision_digest,
    spec_snapshot,
    submission_blockers,
    validation_fingerprint,
    validation_state,
)
from onboarding.validation import SampleReport
from portal.errors import ApplicationError
from portal.models import Environment


def request_validation_state(request: OnboardingRequest) -> ValidationState:
    return validation_state(
        samples=list(request.samples.all()),
        schema_text=request.schema_text,
        data_format=request.data_format,
    )


def request_blockers(request: OnboardingRequest) -> list[str]:
    samples = list(request.samples.all())
    prerequisites = request_prerequisites(spec=spec_snapshot(request), sample_count=len(samples))
    validation = validation_state(
        samples=samples, schema_text=request.schema_text, data_format=request.data_format
    )
    return submission_blockers(prerequisites=prerequisites, validation=validation)


def request_current_digest(request: OnboardingRequest) -> str:
    spec = spec_snapshot(request)
    return revision_digest(
        spec=spec,
        samples=request.samples.values_list("sha256", "expected_malformed"),
        plans=environment_plans(spec=spec, environments=Environment.objects.all()),
    )


def plan_for(request: OnboardingRequest, environment: Any) -> dict[str, Any]:
    """The request's plan for `environment`, built now from the request (as approved)."""
    (found,) = environment_plans(spec=spec_snapshot(request), environments=[environment])
    if found.plan is None:
        raise ApplicationError(f"There is no plan for {environment.name}: {found.error}")
    return found.plan


def approval_problem(request: OnboardingRequest) -> str | None:
    """Why the request may not be applied to AWS now, or None when it may: it must be
    approved, by both live approvals, of exactly its current state (spec, samples, plans)."""
    if request.status != RequestStatus.APPROVED:
        return (
            f"{request.key} is {request.get_status_display().lower()}, not approved; "
            "only an approved request can be provisioned."
        )
    live = list(request.approvals.filter(decision=Decision.APPROVED, voided_at__isnull=True))
    roles = {approval.role for approval in live}
    if len(live) < 2 or len(roles) < 2:
        return f"{request.key} does not hold both approvals (security and governance)."
    digest = request_current_digest(request)
    if any(approval.digest != digest for approval in live):
        return (
            f"The request changed after it was approved (revision {request.revision}); "
            "it needs approving again."
        )
    return None


def sample_record_report(
    *, sample: Sample, report: SampleReport, schema_text: str, data_format: str, revision: int
) -> Sample:
    """Store a validation step's report on the sample (called by the validate run)."""
    sample.report = report.to_dict()
    sample.report_fingerprint = validation_fingerprint(
        schema_text=schema_text, data_format=data_format, sha256=sample.sha256
    )
    sample.report_revision = revision
    sample.validated_at = timezone.now()
    sample.save(update_fields=["report", "report_fingerprint", "report_revision", "validated_at"])
    return sample
