"""Staged rollout of an approved source: an engineer starts provision, smoke test, success
criteria or teardown in one environment when the rules allow it now
(`onboarding.selectors.rollout_blockers`), and beat starts a drift check of every live
source. The runs themselves (`onboarding.kinds`) check the approval digest again before
they touch AWS.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from onboarding import notifications
from onboarding.kinds import drift_check
from onboarding.models import OnboardingRequest, RequestStatus
from onboarding.selectors import ROLLOUT_ACTIONS, provisioned_environments, rollout_states
from portal.errors import ApplicationError
from portal.roles import Role, require_role
from portal.runs.api import CONFIRM_STEP, Run, run_start


def rollout_start(*, request: OnboardingRequest, actor: Any, environment: str, action: str) -> Run:
    """An engineer starts one rollout step for one environment, if the rules allow it now."""
    require_role(actor, Role.ENGINEER)
    if action not in ROLLOUT_ACTIONS:
        raise ApplicationError(f"There is no rollout action called {action!r}.")
    kind, verb = ROLLOUT_ACTIONS[action]
    with transaction.atomic():
        # Serialise clicks on the same request: a double click starts one run, not two.
        request = OnboardingRequest.objects.select_for_update().get(pk=request.pk)
        states = {r.environment.name: r for r in rollout_states(request)}
        if environment not in states:
            raise ApplicationError(f"There is no environment called {environment!r}.")
        why_not = states[environment].allowed[action]
        if why_not:
            raise ApplicationError(f"{verb} {environment} is not possible yet: {why_not}.")
        run = run_start(
            kind=kind,
            actor=actor,
            params={"request_id": request.pk, "environment": environment},
            subject=request,
            title=f"{verb} {request.key} {request.source_name} in {environment}",
        )
        if CONFIRM_STEP in run.plan:
            transaction.on_commit(
                lambda: notifications.confirmation_needed(request, run, actor, environment)
            )
    return run


def drift_scan_all(*, actor: Any) -> list[Run]:
    """Start a drift-check run for every approved request provisioned somewhere; `actor`
    (an engineer or admin, e.g. the scheduler's account) starts them."""
    started = []
    for request in OnboardingRequest.objects.filter(status=RequestStatus.APPROVED):
        environments = provisioned_environments(request)
        if environments:
            started.append(
                run_start(
                    kind=drift_check,
                    actor=actor,
                    params={"request_id": request.pk, "environments": environments},
                    subject=request,
                    title=f"Drift check {request.key} ({', '.join(environments)})",
                )
            )
    return started
