"""Every write of an onboarding request (runbook 1, SOP-001), and the rules they decide by.

- `requests`, `samples`, `approvals`: the services a person's action calls. Each checks
  who may act, changes the request in one transaction, writes exactly one audit event and,
  once committed, notifies whoever must act next;
- `revisions`: the guards, and revisions that void approvals;
- `rollout`: starting provision, smoke test, criteria or teardown where the rules allow it
  (`onboarding.selectors.rollout_blockers` says why not), and beat's drift scan;
- `handoff`, `review`: the checklist once a source is live, the notice to its consumers,
  and the 30-day review with its measured volume and reminder.

The pure decisions are in `onboarding.rules`, the request's current state in
`onboarding.request_state`, the reads pages share in `onboarding.selectors`; the names
pages use from those are re-exported here.

Import from here: `from onboarding import services; services.request_submit(...)`.
"""

from onboarding.kinds import plan_diff as PLAN_DIFF_KIND
from onboarding.kinds import validate_samples as VALIDATE_KIND
from onboarding.request_state import (
    request_blockers,
    request_current_digest,
    request_validation_state,
    sample_record_report,
)
from onboarding.rules import (
    MIN_SAMPLES,
    SPEC_DOCUMENT_FIELDS,
    SPEC_FIELDS,
    EnvironmentPlan,
    Prerequisite,
    SampleVerdict,
    ValidationState,
    environment_plans,
    request_prerequisites,
    revision_digest,
    sample_limits,
    source_spec,
    spec_snapshot,
    submission_blockers,
    validation_fingerprint,
    validation_state,
)
from onboarding.selectors import EnvironmentRollout, drifted_requests, rollout_states
from onboarding.services.approvals import (
    approval_grant,
    approval_reject,
    approval_request_changes,
)
from onboarding.services.handoff import (
    HandoffState,
    handoff_brief_oncall,
    handoff_notify_consumers,
    handoff_panel,
    handoff_record_review,
    handoff_record_runbook,
    handoff_state,
    handoff_undo,
)
from onboarding.services.requests import (
    plan_compare_start,
    request_create,
    request_infer_schema,
    request_submit,
    request_update,
    request_validate,
)
from onboarding.services.review import review_reminders_send, volume_review_start
from onboarding.services.rollout import drift_scan_all, rollout_start
from onboarding.services.samples import (
    UploadRefused,
    sample_delete,
    sample_mark,
    sample_upload,
)

__all__ = [
    "MIN_SAMPLES",
    "PLAN_DIFF_KIND",
    "SPEC_DOCUMENT_FIELDS",
    "SPEC_FIELDS",
    "VALIDATE_KIND",
    "EnvironmentPlan",
    "EnvironmentRollout",
    "HandoffState",
    "Prerequisite",
    "SampleVerdict",
    "UploadRefused",
    "ValidationState",
    "approval_grant",
    "approval_reject",
    "approval_request_changes",
    "drift_scan_all",
    "drifted_requests",
    "environment_plans",
    "handoff_brief_oncall",
    "handoff_notify_consumers",
    "handoff_panel",
    "handoff_record_review",
    "handoff_record_runbook",
    "handoff_state",
    "handoff_undo",
    "plan_compare_start",
    "request_blockers",
    "request_create",
    "request_current_digest",
    "request_infer_schema",
    "request_prerequisites",
    "request_submit",
    "request_update",
    "request_validate",
    "request_validation_state",
    "review_reminders_send",
    "revision_digest",
    "rollout_start",
    "rollout_states",
    "sample_delete",
    "sample_limits",
    "sample_mark",
    "sample_record_report",
    "sample_upload",
    "source_spec",
    "spec_snapshot",
    "submission_blockers",
    "validation_fingerprint",
    "validation_state",
    "volume_review_start",
]
