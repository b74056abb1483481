"""Staged rollout of an approved source: provision, smoke-test and tear down per environment.

The rules: an engineer provisions dev once the request is approved; each later environment
only once the one before it is live (its last smoke test passed); a smoke test only once the
environment is provisioned; one run at a time per environment. The work itself is done by the
runs in onboarding/provision_steps.py, which check the approval digest again before they
touch AWS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction

from onboarding import notifications
from onboarding.catalog import ROLLOUT_KINDS, rollout_state
from onboarding.models import OnboardingRequest, RequestStatus
from onboarding.provisioning import (
    CRITERIA_KIND,
    DRIFT_KIND,
    PROVISION_KIND,
    SMOKE_KIND,
    TEARDOWN_KIND,
)
from portal.errors import ApplicationError
from portal.models import Environment
from portal.roles import Role, require_role
from portal.runs.models import ACTIVE_RUN_STATUSES, Run, RunStatus, StepStatus
from portal.runs.selectors import runs_of
from portal.runs.services import run_start
from portal.runs.gates import CONFIRM_STEP

ACTIONS = {
    "provision": (PROVISION_KIND, "Provision"),
    "smoke": (SMOKE_KIND, "Smoke test"),
    "criteria": (CRITERIA_KIND, "Measure success criteria"),
    "teardown": (TEARDOWN_KIND, "Tear down"),
}


@dataclass
class EnvironmentRollout:
    environment: Environment
    state: str  # not started, provisioning, provisioned, smoke testing, live, failed, …
    last_run: Run | None
    runs: list[Run]
    allowed: dict[str, str]  # action -> "" when allowed, else why not
    criteria: dict[str, Any] | None = None  # the newest measured success criteria
    drift: dict[str, Any] | None = None  # the newest drift check: drifted, changes, checked_at
    first: bool = False  # the first environment of the rollout (dev)
    provisioned: bool = False

    @property
    def is_live(self) -> bool:
        return self.state == "live"

    @property
    def awaiting(self) -> bool:
        return self.state == "awaiting confirmation"

    @property
    def buttons(self) -> list[tuple[str, str, str]]:
        """(action, label, why not — empty when allowed), in the order they are shown."""
        return [
            (key, self._label(key, label), self.allowed[key]) for key, (_, label) in ACTIONS.items()
        ]

    def _label(self, action: str, label: str) -> str:
        if action != "provision":
            return label
        if self.provisioned:
            return "Provision again"
        return label if self.first else f"Promote to {self.environment.name}"


def rollout_states(request: OnboardingRequest) -> list[EnvironmentRollout]:
    """Each environment's state, which rollout actions its rules allow now, and its newest
    measured success criteria."""
    runs = list(runs_of(request, *ROLLOUT_KINDS))
    from onboarding.criteria import latest_criteria

    measured = latest_criteria(request)
    drift = latest_drift(request)
    result: list[EnvironmentRollout] = []
    previous_live = True
    for env in Environment.objects.all():
        mine = [r for r in runs if r.params.get("environment") == env.name]
        last = mine[-1] if mine else None
        state = rollout_state(last)
        provisioned = any(
            r.kind == PROVISION_KIND and r.status == RunStatus.SUCCEEDED for r in mine
        ) and state not in ("torn down", "tearing down")
        busy = last is not None and last.status in ACTIVE_RUN_STATUSES
        in_progress = "a run is in progress" if busy else ""
        allowed = {
            "provision": _why_not_provision(request, env, previous_live, busy),
            "smoke": in_progress or ("" if provisioned else "provision it first"),
            "criteria": "" if provisioned else "provision it first",
            "teardown": in_progress or ("" if mine else "nothing to tear down"),
        }
        result.append(
            EnvironmentRollout(
                env,
                state,
                last,
                list(reversed(mine)),
                allowed,
                measured.get(env.name),
                drift.get(env.name),
                first=not result,
                provisioned=provisioned,
            )
        )
        previous_live = state == "live"
    return result


def _why_not_provision(
    request: OnboardingRequest, env: Environment, previous_live: bool, busy: bool
) -> str:
    if request.status != RequestStatus.APPROVED:
        return "the request is not approved"
    if busy:
        return "a run is in progress"
    if not previous_live:
        return "the environment before it must pass its smoke test first"
    return ""


def rollout_start(*, request: OnboardingRequest, actor: Any, environment: str, action: str) -> Run:
    """An engineer starts one rollout step for one environment, if the rules allow it now."""
    require_role(actor, Role.ENGINEER)
    if action not in ACTIONS:
        raise ApplicationError(f"There is no rollout action called {action!r}.")
    kind, verb = ACTIONS[action]
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


def latest_drift(request: OnboardingRequest) -> dict[str, dict[str, Any]]:
    """Per environment, what the newest drift check found (changes with their field names)."""
    from portal.runs.models import Step

    steps = (
        Step.objects.filter(
            key="onboarding.drift_environment",
            status=StepStatus.SUCCEEDED,
            run__kind=DRIFT_KIND,
            run__subject_type__model="onboardingrequest",
            run__subject_id=str(request.pk),
        )
        .select_related("run")
        .order_by("finished_at", "pk")
    )
    found: dict[str, dict[str, Any]] = {}
    for step in steps:
        found[step.params.get("environment", "")] = {
            "drifted": step.output.get("drifted", False),
            "changes": step.output.get("changes", []),
            "checked_at": step.finished_at,
            "run": step.run,
        }
    return found


def drifted_requests() -> list[tuple[OnboardingRequest, list[str]]]:
    """Approved requests whose newest drift check, in some environment, found a difference."""
    result = []
    for request in OnboardingRequest.objects.filter(status=RequestStatus.APPROVED).order_by(
        "number"
    ):
        drifted = [env for env, d in latest_drift(request).items() if d["drifted"]]
        if drifted:
            result.append((request, drifted))
    return result
