"""The provision run's steps: the approval check first (nothing touches AWS unless both
live approvals are of the request as it is now), then one idempotent step per plan section,
in dependency order (`PROVISION_STEPS`). Before each write the plan is checked again: still
approved, and exactly the plan whose digest the approval check recorded. The work itself is
in `onboarding.aws.apply`."""

from __future__ import annotations

from typing import Any

from onboarding.aws import apply
from onboarding.models import OnboardingRequest, RequestStatus
from onboarding.plan import plan_digest
from onboarding.request_state import approval_problem
from onboarding.steps.common import (
    SectionTable,
    earlier_output,
    section_done,
    section_steps,
    step_plan,
    step_request,
)
from portal.runs.api import Done, PermanentStepError, StepContext, step

CHECK_APPROVAL = "onboarding.check_approval"

# One step per plan section, in the order they are applied. The schema step also needs
# the request's schema text (`provision_schema_step`).
PROVISION_STEPS: SectionTable = (
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


@step(CHECK_APPROVAL, title="Check the approval")
def check_approval_step(ctx: StepContext) -> Done:
    request = step_request(ctx)
    problem = approval_problem(request)
    if problem:
        raise PermanentStepError(problem)
    plan = step_plan(ctx, request)
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


def approved_plan(ctx: StepContext) -> tuple[OnboardingRequest, dict[str, Any]]:
    """The plan, before every step that writes: still approved, and exactly the plan whose
    digest the run's approval check recorded (the full check runs once, first)."""
    request = step_request(ctx)
    if request.status != RequestStatus.APPROVED:
        raise PermanentStepError(approval_problem(request) or "Not approved.")
    plan = step_plan(ctx, request)
    checked = earlier_output(ctx, CHECK_APPROVAL)
    if not checked or checked.get("plan_digest") != plan_digest(plan):
        raise PermanentStepError(
            f"The plan for {request.key} changed after this run checked its approval; nothing "
            "more was applied. Start the run again to check the approval of the plan as it is."
        )
    return request, plan


section_steps(PROVISION_STEPS, lambda ctx: approved_plan(ctx)[1])


@step("onboarding.provision_schema", title="Schema registration")
def provision_schema_step(ctx: StepContext) -> Done:
    request, plan = approved_plan(ctx)
    return section_done(ctx, apply.apply_schema_object, plan, request.schema_text)
