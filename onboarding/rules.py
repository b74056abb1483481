"""The pure decisions of runbook 1: no database or storage access, so they are trivially
tested. Services, selectors and steps all decide with these.

- a request: the prerequisites checklist, whether the samples behave as marked, what
  blocks a submission, the plan per environment and the digest an approval binds to;
- the smoke test: how many files it uploads (`smoke_file_limit`) and the latency it must
  stay under (`sla_seconds`, `latency_problem`);
- the success criteria: the files goal (`FILES_GOAL`, `files_goal_met`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from onboarding.models import (
    OnboardingRequest,
    Sample,
    Sensitivity,
)
from onboarding.plan import SourceSpec, TargetEnvironment, build_plan, plan_digest
from onboarding.validation import (
    Limits,
    SampleReport,
    check_schema,
    sample_passes,
)
from portal.errors import ApplicationError
from portal.models import Environment

MIN_SAMPLES = 10  # SOP-001 prerequisites: at least 10 representative samples

# The spec, in form order, with the label a summary of changes uses.
SPEC_FIELDS: dict[str, str] = {
    "source_name": "source name",
    "description": "description",
    "owner_team": "owner team",
    "data_format": "format",
    "schema_text": "schema",
    "schema_version": "schema version",
    "files_per_day": "files per day",
    "average_file_size_kb": "average file size",
    "frequency": "frequency",
    "latency_sla": "latency SLA",
    "sensitivity": "sensitivity",
    "retention_days": "retention days",
    "retention_legal_basis": "retention legal basis",
    "business_justification": "business justification",
    "downstream_consumers": "downstream consumers",
    "producer_role_arn": "producer IAM role",
}
# What "the data source specification document" (prerequisite 1) must contain.
SPEC_DOCUMENT_FIELDS = (
    "source_name",
    "description",
    "owner_team",
    "data_format",
    "schema_text",
    "schema_version",
    "files_per_day",
    "average_file_size_kb",
    "frequency",
    "latency_sla",
    "sensitivity",
    "producer_role_arn",
)


# --- Pure decisions ------------------------------------------------------------------------


def spec_snapshot(request: OnboardingRequest) -> dict[str, Any]:
    """The request's spec as plain values (sensitivity as a list)."""
    return {
        name: request.sensitivity if name == "sensitivity" else getattr(request, name)
        for name in SPEC_FIELDS
    }


@dataclass(frozen=True)
class Prerequisite:
    key: str
    label: str
    done: bool
    missing: tuple[str, ...] = ()


def request_prerequisites(*, spec: Mapping[str, Any], sample_count: int) -> list[Prerequisite]:
    """SOP-001's prerequisites checklist, with what is still missing for each."""

    def blank(name: str) -> bool:
        value = spec.get(name)
        return value is None or value == "" or value == [] or value == ()

    missing_spec = [SPEC_FIELDS[name] for name in SPEC_DOCUMENT_FIELDS if blank(name)]
    if not blank("schema_text"):
        _, problems = check_schema(spec["schema_text"])
        if problems:
            missing_spec.append(f"a valid schema ({len(problems)} problem(s))")
    samples_missing = (
        ()
        if sample_count >= MIN_SAMPLES
        else (f"{MIN_SAMPLES - sample_count} more sample file(s)",)
    )
    consumers = [
        SPEC_FIELDS[n] for n in ("business_justification", "downstream_consumers") if blank(n)
    ]
    retention = [SPEC_FIELDS[n] for n in ("retention_days", "retention_legal_basis") if blank(n)]
    return [
        Prerequisite(
            "spec",
            "Data source specification document (format, schema, volume, frequency)",
            not missing_spec,
            tuple(missing_spec),
        ),
        Prerequisite(
            "samples",
            f"Sample data files (at least {MIN_SAMPLES} representative samples)",
            not samples_missing,
            samples_missing,
        ),
        Prerequisite(
            "justification",
            "Business justification and downstream consumers identified",
            not consumers,
            tuple(consumers),
        ),
        Prerequisite(
            "retention",
            "Retention requirements defined (compliance, GDPR, etc.)",
            not retention,
            tuple(retention),
        ),
    ]


def sample_limits() -> Limits:
    """The validation limits, with the upload limits from settings
    (ONBOARDING_SAMPLE_MAX_BYTES, ONBOARDING_SAMPLE_MAX_FILES) as the single source."""
    return dataclasses.replace(
        Limits.from_settings(),
        max_file_bytes=settings.ONBOARDING_SAMPLE_MAX_BYTES,
        max_files=settings.ONBOARDING_SAMPLE_MAX_FILES,
    )


def validation_fingerprint(*, schema_text: str, data_format: str, sha256: str) -> str:
    """What a sample report depends on: the schema, the declared format and the content.

    A report stays valid across edits that do not touch these (an owner-team fix does not
    need a new validation); any change to them makes it stale."""
    body = json.dumps([schema_text, data_format, sha256], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class SampleVerdict:
    sample: Sample
    state: str  # "not-validated" | "stale" | "passes" | "fails"
    report: SampleReport | None
    explanation: str


@dataclass(frozen=True)
class ValidationState:
    verdicts: list[SampleVerdict]
    passed: bool
    summary: str

    @property
    def failing(self) -> list[SampleVerdict]:
        return [v for v in self.verdicts if v.state != "passes"]


def validation_state(
    *, samples: Sequence[Sample], schema_text: str, data_format: str
) -> ValidationState:
    """Whether every sample of the current revision behaves as marked: a valid file is
    accepted and a file marked "expected malformed" is rejected."""
    verdicts = []
    for sample in samples:
        current = validation_fingerprint(
            schema_text=schema_text, data_format=data_format, sha256=sample.sha256
        )
        report = SampleReport.from_dict(sample.report) if sample.report else None
        if report is None:
            verdicts.append(SampleVerdict(sample, "not-validated", None, "Not validated yet."))
        elif sample.report_fingerprint != current:
            verdicts.append(
                SampleVerdict(
                    sample, "stale", report, "The schema or format changed since; validate again."
                )
            )
        elif sample_passes(report, expected_malformed=sample.expected_malformed):
            note = "Rejected, as expected." if sample.expected_malformed else "Valid."
            verdicts.append(SampleVerdict(sample, "passes", report, note))
        elif sample.expected_malformed:
            verdicts.append(
                SampleVerdict(
                    sample, "fails", report, "Marked expected malformed, but the schema accepts it."
                )
            )
        else:
            verdicts.append(
                SampleVerdict(sample, "fails", report, "The schema rejects this sample.")
            )
    failing = [v for v in verdicts if v.state != "passes"]
    if not verdicts:
        summary = "No samples to validate."
    elif not failing:
        summary = f"All {len(verdicts)} samples behave as marked."
    elif all(v.state in ("not-validated", "stale") for v in failing):
        summary = f"{len(failing)} of {len(verdicts)} samples need validating."
    else:
        summary = f"{len(failing)} of {len(verdicts)} samples do not behave as marked."
    return ValidationState(verdicts, bool(verdicts) and not failing, summary)


def submission_blockers(
    *, prerequisites: Sequence[Prerequisite], validation: ValidationState
) -> list[str]:
    """Why the request cannot be submitted (or approved) yet; empty when it can."""
    blockers = [f"{p.label}: missing {', '.join(p.missing)}" for p in prerequisites if not p.done]
    if not validation.passed:
        blockers.append(f"Validation of the current revision: {validation.summary}")
    return blockers


def source_spec(spec: Mapping[str, Any]) -> SourceSpec | None:
    """The plan's input, or None while the fields a plan needs are still missing."""
    needed = ("source_name", "owner_team", "data_format", "producer_role_arn")
    if any(not spec.get(name) for name in needed):
        return None
    return SourceSpec(
        name=spec["source_name"],
        owner_team=spec["owner_team"],
        format=spec["data_format"],
        schema_version=spec["schema_version"] or 1,
        producer_role_arn=spec["producer_role_arn"],
        sensitivity=tuple(s for s in spec["sensitivity"] if s != Sensitivity.NONE),
        retention_days=spec["retention_days"] or 365,
        latency_sla=spec["latency_sla"] or "hourly",
    )


@dataclass(frozen=True)
class EnvironmentPlan:
    environment: Environment
    plan: dict[str, Any] | None
    error: str = ""

    @property
    def digest(self) -> str:
        return plan_digest(self.plan) if self.plan is not None else ""


def environment_plans(
    *, spec: Mapping[str, Any], environments: Iterable[Environment]
) -> list[EnvironmentPlan]:
    """The plan for every environment, or why there is none yet."""
    source = source_spec(spec)
    result = []
    for env in environments:
        if source is None:
            result.append(
                EnvironmentPlan(
                    env,
                    None,
                    "The plan needs the source name, owner team, format and producer role.",
                )
            )
            continue
        try:
            result.append(
                EnvironmentPlan(env, build_plan(source, TargetEnvironment.from_model(env)))
            )
        except ApplicationError as exc:
            result.append(EnvironmentPlan(env, None, exc.message))
    return result


def revision_digest(
    *,
    spec: Mapping[str, Any],
    samples: Iterable[tuple[str, bool]],
    plans: Iterable[EnvironmentPlan],
) -> str:
    """What an approval is bound to: sha256 of the spec fields and schema, the sorted sample
    hashes with their expected-malformed marks, and the plan digest for every environment."""
    body = {
        "spec": dict(spec),
        "samples": sorted([sha, bool(malformed)] for sha, malformed in samples),
        "plans": {p.environment.name: p.digest or f"unplanned: {p.error}" for p in plans},
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- The smoke test ----------------------------------------------------------------------------

SMOKE_PRODUCTION_FILES = 5
SMOKE_MAX_FILES = 10
# The p95 latency a smoke test must stay under, per latency SLA of the spec.
SLA_SECONDS = {"realtime": 10.0, "hourly": 30.0, "daily": 24 * 3600.0}


def smoke_file_limit(environment: Any) -> int:
    """How many valid samples a smoke test uploads at most: 5 in production, else 10."""
    return SMOKE_PRODUCTION_FILES if environment.is_production else SMOKE_MAX_FILES


def sla_seconds(latency_sla: str) -> float:
    """The latency a smoke test's p95 must stay under (hourly when the spec says nothing)."""
    return SLA_SECONDS.get(latency_sla, SLA_SECONDS["hourly"])


def p95(values: list[float]) -> float:
    """The 95th percentile by nearest rank (the value 95% of the samples are at or below)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def latency_problem(observed: float, sla: float) -> str:
    """Why a p95 latency fails the SLA; empty when it is under it."""
    if observed >= sla:
        return f"p95 latency {observed:.1f} s is not under the SLA of {sla:.0f} s"
    return ""


# --- The success criteria ----------------------------------------------------------------------

FILES_GOAL = 100  # SOP-001: 100 files processed successfully without errors


def files_goal_met(succeeded: int, failed: int) -> bool:
    return succeeded >= FILES_GOAL and failed == 0


def separation_of_duties_problem(
    *, user: Any, request: OnboardingRequest, editor_ids: Iterable[int]
) -> str:
    """Why `user` may not decide on this request at all; empty when they may.

    Neither the requester nor anyone who edited the request (any of its revisions, whose
    content the current one carries) may approve, reject or request changes."""
    if request.requested_by_id == user.pk:
        return "You requested this source, so you cannot decide on it."
    if user.pk in set(editor_ids):
        return "You edited this request, so you cannot decide on it."
    return ""
