"""The teardown run's steps: remove what provisioning made, one idempotent step per section
(`TEARDOWN_STEPS`), and the raw bucket only when it is empty. The work itself is in
`onboarding.aws.remove`. Re-applying the plan after drift is the provision run again."""

from __future__ import annotations

from onboarding.aws import remove
from onboarding.steps.common import SectionTable, section_steps, step_plan, step_request

TEARDOWN_STEPS: SectionTable = (
    ("onboarding.teardown_rule", "Remove the targets and the rule", remove.remove_target_and_rule),
    ("onboarding.teardown_notifications", "Turn off notifications", remove.remove_notifications),
    ("onboarding.teardown_alarm", "Remove the alarm", remove.remove_alarm),
    ("onboarding.teardown_widget", "Remove the dashboard widget", remove.remove_dashboard_widget),
    ("onboarding.teardown_config_item", "Remove the configuration item", remove.remove_config_item),
    ("onboarding.teardown_schema", "Remove the schema", remove.remove_schema_objects),
    ("onboarding.teardown_bucket", "Delete the bucket if empty", remove.remove_bucket_if_empty),
)

section_steps(TEARDOWN_STEPS, lambda ctx: step_plan(ctx, step_request(ctx)))
