"""Who may do what to a run: the rules the services enforce and the pages show."""

from __future__ import annotations

from typing import Any

from portal.roles import Role, has_role
from portal.runs.models import ACTIVE_RUN_STATUSES, Run, Step, StepStatus
from portal.runs.registry import get_run_kind


def decision_roles(run: Run, step: Step) -> list[Role]:
    """Who may choose at this step's decision: its own roles, else the kind's operators."""
    kind = get_run_kind(run.kind)
    own = [Role(r) for r in step.decision_spec.get("roles") or []]
    return own or list(kind.operate_roles if kind else [])


def decision_blocker(run: Run, step: Step, actor: Any) -> str:
    """Why `actor` may not choose at this step's decision now ("" if they may): the one
    place the decision rules live, used by the service and by the page's buttons."""
    spec = step.decision_spec
    if not spec:
        return "This step is not waiting for a decision."
    if run.status not in ACTIVE_RUN_STATUSES or step.status not in (
        StepStatus.PENDING,
        StepStatus.WAITING,
    ):
        return f"This run is {run.get_status_display().lower()}; there is nothing to decide."
    roles = decision_roles(run, step)
    if not has_role(actor, *roles):
        return f"Only {', '.join(str(r) for r in roles) or 'nobody'} may {spec['action']} this."
    if spec.get("not_starter") and run.created_by_id is not None and run.created_by_id == actor.pk:
        return (
            f"You started this run, so someone else must {spec['action']} it "
            "(separation of duties)."
        )
    return ""
