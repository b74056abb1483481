"""Every run kind of runbook 1, declared once. The engine imports this module (its
autodiscovery of ``<app>.kinds``); importing it imports the step modules, which register
their steps. Each declared name *is* the kind: services pass it to `run_start`, selectors to
`runs_of` and `step_results`, so a kind's key is written only here.

- `validate_samples`: the schema, each sample, the summary (no AWS);
- `plan_diff`: compare the plan with AWS, per environment (read only);
- `provision`: the approval check, then one step per plan section, in one environment;
- `smoke_test`: upload valid samples, wait for the pipeline, check output, metadata, SLA;
- `drift_check`: compare each provisioned environment with the plan (read only);
- `teardown`: remove what provisioning made, the raw bucket only when empty;
- `success_criteria`: measure SOP-001's criteria in one environment (read only);
- `volume_review`: measure prod's objects and bytes per day for the 30-day review.

Provisioning and tearing down a production environment first waits for a second engineer
to confirm (`production_gate`, ONBOARDING_PROD_CONFIRMATION).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from onboarding.models import OnboardingRequest, Sample
from onboarding.steps.common import SectionTable
from onboarding.steps.criteria import success_criteria_step
from onboarding.steps.drift import drift_environment_step
from onboarding.steps.plan_diff import plan_diff_step
from onboarding.steps.provision import PROVISION_STEPS, check_approval_step
from onboarding.steps.smoke import smoke_upload_step, smoke_verify_step, smoke_wait_step
from onboarding.steps.teardown import TEARDOWN_STEPS
from onboarding.steps.validate import (
    check_schema_step,
    validate_sample_step,
    validation_summary_step,
)
from onboarding.steps.volume import volume_measure_step
from portal.models import Environment
from portal.roles import Role
from portal.runs.api import PlannedStep, RunStatus, confirmation_step, run_kind, step_results

APPROVERS = [Role.ENGINEER, Role.SECURITY_APPROVER, Role.GOVERNANCE_APPROVER]


def _env(params: dict[str, Any]) -> str:
    return str(params.get("environment", ""))


def production_gate(params: dict[str, Any], what: str) -> list[PlannedStep]:
    """In a production environment, a second engineer confirms before the run changes
    anything (ONBOARDING_PROD_CONFIRMATION, on by default)."""
    name = params.get("environment")
    if not settings.ONBOARDING_PROD_CONFIRMATION:
        return []
    if not Environment.objects.filter(name=name, is_production=True).exists():
        return []
    return [confirmation_step(f"{what} in {name}", who="engineer")]


def _sections(table: SectionTable, env: str) -> list[PlannedStep]:
    return [PlannedStep(key, title=f"{title} ({env})") for key, title, _ in table]


@run_kind(
    "onboarding.validate",
    title="Validate samples",
    start_roles=[Role.REQUESTER, Role.ENGINEER],
)
def validate_samples(params: dict[str, Any]) -> list[PlannedStep]:
    samples = Sample.objects.filter(request_id=params["request_id"]).order_by("original_name", "pk")
    return [
        PlannedStep(check_schema_step),
        *(
            PlannedStep(validate_sample_step, title=f"Validate {name}", params={"sample_id": pk})
            for pk, name in samples.values_list("pk", "original_name")
        ),
        PlannedStep(validation_summary_step),
    ]


@run_kind("onboarding.plan_diff", title="Compare plan with AWS", start_roles=APPROVERS)
def plan_diff(params: dict[str, Any]) -> list[PlannedStep]:
    return [
        PlannedStep(plan_diff_step, title=f"Compare with AWS: {name}", params={"environment": name})
        for name in params["environments"]
    ]


@run_kind("onboarding.provision", title="Provision an environment", start_roles=[Role.ENGINEER])
def provision(params: dict[str, Any]) -> list[PlannedStep]:
    env = _env(params)
    return [
        *production_gate(params, "provisioning"),
        PlannedStep(check_approval_step, title=f"Check the approval ({env})"),
        *_sections(PROVISION_STEPS, env),
    ]


@run_kind("onboarding.smoke_test", title="Smoke test", start_roles=[Role.ENGINEER])
def smoke_test(params: dict[str, Any]) -> list[PlannedStep]:
    env = _env(params)
    return [
        PlannedStep(smoke_upload_step, title=f"Upload the valid samples ({env})"),
        PlannedStep(smoke_wait_step, title=f"Wait for the pipeline ({env})"),
        PlannedStep(smoke_verify_step, title=f"Check output, metadata and SLA ({env})"),
    ]


@run_kind("onboarding.drift_check", title="Drift check", start_roles=[Role.ENGINEER, Role.ADMIN])
def drift_check(params: dict[str, Any]) -> list[PlannedStep]:
    """params: request_id, and the environments to compare (the drift scan passes those
    where the source is provisioned)."""
    return [
        PlannedStep(
            drift_environment_step,
            title=f"Compare with the plan: {name}",
            params={"environment": name},
        )
        for name in params.get("environments", [])
    ]


@run_kind("onboarding.teardown", title="Tear down an environment", start_roles=[Role.ENGINEER])
def teardown(params: dict[str, Any]) -> list[PlannedStep]:
    return [*production_gate(params, "the teardown"), *_sections(TEARDOWN_STEPS, _env(params))]


@run_kind(
    "onboarding.success_criteria",
    title="Measure the success criteria",
    start_roles=[Role.ENGINEER, Role.ADMIN],
)
def success_criteria(params: dict[str, Any]) -> list[PlannedStep]:
    env = _env(params)
    smoke = _newest_passing_smoke(params.get("request_id"), env)
    return [PlannedStep(success_criteria_step, f"{env}: success criteria", {"smoke": smoke})]


def _newest_passing_smoke(request_id: Any, environment: str) -> dict[str, Any] | None:
    """What the latency criterion judges: the newest passing smoke test in `environment`."""
    request = OnboardingRequest.objects.filter(pk=request_id).first()
    if request is None:
        return None
    verified = (
        step_results(request, smoke_test, smoke_verify_step)
        .filter(run__status=RunStatus.SUCCEEDED, run__params__environment=environment)
        .last()
    )
    if verified is None:
        return None
    out = verified.output
    return {
        "run_id": verified.run_id,
        "p95_seconds": out["p95_seconds"],
        "sla_seconds": out["sla_seconds"],
        "files": len(out["files"]),
    }


@run_kind("onboarding.volume_review", title="Measure volume", start_roles=[Role.ENGINEER])
def volume_review(params: dict[str, Any]) -> list[PlannedStep]:
    env = _env(params)
    return [PlannedStep(volume_measure_step, f"{env}: objects and bytes per day")]
