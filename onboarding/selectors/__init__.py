"""Reads that pages and services share (constant query counts for lists), in three
modules; import from here: `from onboarding import selectors; selectors.request_list(...)`.

- `requests`: the board, queues, timeline, and who may do what — the approvals a user may
  give and the ticket's buttons (`request_permissions`); the separation of duties itself
  (`separation_of_duties_problem`: why you cannot decide on a request) is a rule in
  `onboarding.rules`, re-exported here;
- `rollout`: where a source stands per environment (`environment_state`, the one rule),
  why a rollout action is blocked there (`rollout_blockers`: why prod is blocked), and
  the newest criteria, drift and volume measurements;
- `catalog`: the live sources.

`approval_problem` (why an approved request may not be applied to AWS now) is computed in
`onboarding.request_state`, where the provision run checks it too.
"""

from onboarding.request_state import approval_problem
from onboarding.rules import separation_of_duties_problem
from onboarding.selectors.catalog import (
    COST_TAG_KEY,
    Catalog,
    CatalogEntry,
    catalog_entries,
)
from onboarding.selectors.requests import (
    ACTION_TEXT,
    BoardColumn,
    QueueItem,
    TimelineEntry,
    approver_roles,
    decidable_roles,
    grantable_roles,
    latest_run,
    may_compare,
    may_edit,
    may_submit,
    may_view,
    owner_team_choices,
    request_board,
    request_editor_ids,
    request_list,
    request_list_for_user,
    request_live_approvals,
    request_permissions,
    request_queue_for_user,
    request_runs,
    request_timeline,
    users_with_role,
)
from onboarding.selectors.rollout import (
    ROLLOUT_ACTIONS,
    ROLLOUT_KINDS,
    EnvironmentRollout,
    EnvironmentState,
    drifted_requests,
    environment_state,
    environment_states,
    latest_criteria,
    latest_drift,
    latest_volume,
    provisioned_environments,
    rollout_blockers,
    rollout_states,
)

__all__ = [
    "ACTION_TEXT",
    "COST_TAG_KEY",
    "ROLLOUT_ACTIONS",
    "ROLLOUT_KINDS",
    "BoardColumn",
    "Catalog",
    "CatalogEntry",
    "EnvironmentRollout",
    "EnvironmentState",
    "QueueItem",
    "TimelineEntry",
    "approval_problem",
    "approver_roles",
    "catalog_entries",
    "decidable_roles",
    "drifted_requests",
    "environment_state",
    "environment_states",
    "grantable_roles",
    "latest_criteria",
    "latest_drift",
    "latest_run",
    "latest_volume",
    "may_compare",
    "may_edit",
    "may_submit",
    "may_view",
    "owner_team_choices",
    "provisioned_environments",
    "request_board",
    "request_editor_ids",
    "request_list",
    "request_list_for_user",
    "request_live_approvals",
    "request_permissions",
    "request_queue_for_user",
    "request_runs",
    "request_timeline",
    "rollout_blockers",
    "rollout_states",
    "separation_of_duties_problem",
    "users_with_role",
]
