"""Where an approved source stands in each environment of its rollout, what may be done
there now, and what was last measured there.

- `environment_state`: the one function for the state an environment shows (not started,
  provisioning, provisioned, smoke testing, live, tearing down, torn down, failed,
  cancelled, awaiting confirmation), from its rollout runs; `environment_states` reads it
  for many requests in one query (the catalog, the review reminders);
- `rollout_blockers`: why an action (provision, smoke test, criteria, teardown) is not
  possible in one environment now — e.g. why prod is blocked: staging is not live yet;
- `rollout_states`: the ticket's rollout panel, each environment with its state, its
  blockers and its newest measurements (`latest_criteria`, `latest_drift`);
- `provisioned_environments`, `drifted_requests`, `latest_volume`.

The rules: an engineer provisions dev once the request is approved; each later environment
only once the one before it is live (its newest rollout run is a passing smoke test); a smoke
test or the criteria only once the environment is provisioned; one run at a time per
environment. The runs themselves check the approval digest again before they touch AWS.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.contenttypes.models import ContentType

from onboarding.kinds import (
    drift_check,
    provision,
    smoke_test,
    success_criteria,
    teardown,
    volume_review,
)
from onboarding.models import OnboardingRequest, RequestStatus
from onboarding.steps.criteria import success_criteria_step
from onboarding.steps.drift import drift_environment_step
from onboarding.steps.volume import volume_measure_step
from portal.models import Environment
from portal.runs.api import ACTIVE_RUN_STATUSES, Run, RunKind, RunStatus, runs_of, step_results

ROLLOUT_KINDS = (provision, smoke_test, teardown)
# The rollout actions an engineer starts from the ticket: the kind each starts, its label.
ROLLOUT_ACTIONS: dict[str, tuple[RunKind, str]] = {
    "provision": (provision, "Provision"),
    "smoke": (smoke_test, "Smoke test"),
    "criteria": (success_criteria, "Measure success criteria"),
    "teardown": (teardown, "Tear down"),
}
_STATES = {
    # kind: (while its run is going, once it succeeded)
    str(provision): ("provisioning", "provisioned"),
    str(smoke_test): ("smoke testing", "live"),
    str(teardown): ("tearing down", "torn down"),
}


# --- the state of one environment --------------------------------------------------------------


@dataclass(frozen=True)
class EnvironmentState:
    environment: Environment
    state: str  # not started, provisioning, provisioned, smoke testing, live, failed, …
    # Live: when the passing smoke test that began the current live stretch finished.
    live_since: datetime | None = None
    # When a smoke test first passed here (the source first went live), live now or not.
    first_live_at: datetime | None = None
    live_run_id: int | None = None  # that passing smoke test
    last_run_id: int | None = None
    last_run: Run | None = None
    # A provision run succeeded here and nothing was torn down since.
    provisioned: bool = False

    @property
    def is_live(self) -> bool:
        return self.state == "live"

    @property
    def busy(self) -> bool:
        """A rollout run is going (or waiting) here."""
        return self.last_run is not None and self.last_run.status in ACTIVE_RUN_STATUSES


def _state(last: Run | None) -> str:
    """The state an environment's newest rollout run leaves it in. A rollout run that waits
    with no time to wake at waits for a person: in production, the second engineer's
    confirmation (`runs.confirm`)."""
    if last is None:
        return "not started"
    if last.status == RunStatus.FAILED:
        return "failed"
    if last.status == RunStatus.CANCELLED:
        return "cancelled"
    if last.status == RunStatus.WAITING and last.wake_at is None:
        return "awaiting confirmation"
    going, done = _STATES[last.kind]
    return going if last.status in ACTIVE_RUN_STATUSES else done


def _passed(run: Run) -> bool:
    return run.kind == str(smoke_test) and run.status == RunStatus.SUCCEEDED


def environment_state(environment: Environment, runs: list[Run]) -> EnvironmentState:
    """The state `environment` shows, from its rollout runs (provision, smoke test,
    teardown), oldest first. No queries."""
    last = runs[-1] if runs else None
    state = _state(last)
    stretch = []
    for run in reversed(runs):
        if not _passed(run):
            break
        stretch.append(run)
    passed = [r.finished_at for r in runs if _passed(r) and r.finished_at]
    provisioned = any(
        r.kind == str(provision) and r.status == RunStatus.SUCCEEDED for r in runs
    ) and state not in ("torn down", "tearing down")
    return EnvironmentState(
        environment=environment,
        state=state,
        live_since=stretch[-1].finished_at if stretch else None,
        first_live_at=min(passed) if passed else None,
        live_run_id=stretch[-1].pk if stretch else None,
        last_run_id=last.pk if last else None,
        last_run=last,
        provisioned=provisioned,
    )


def environment_states(
    request_ids: Iterable[int] | None = None, environments: Iterable[Environment] | None = None
) -> dict[int, list[EnvironmentState]]:
    """{request id: each environment's state, in rollout order} in one query of runs (and one
    of environments unless given). Requests without any rollout run are left out."""
    envs = list(Environment.objects.all() if environments is None else environments)
    runs = Run.objects.filter(
        subject_type=ContentType.objects.get_for_model(OnboardingRequest),
        kind__in=[str(kind) for kind in ROLLOUT_KINDS],
    )
    if request_ids is not None:
        runs = runs.filter(subject_id__in=[str(pk) for pk in request_ids])
    grouped: dict[int, dict[str, list[Run]]] = defaultdict(lambda: defaultdict(list))
    fields = (
        "pk",
        "kind",
        "status",
        "params",
        "subject_id",
        "created_at",
        "finished_at",
        "wake_at",
    )
    for run in runs.only(*fields).order_by("created_at", "pk"):
        grouped[int(run.subject_id)][str(run.params.get("environment", ""))].append(run)
    return {
        request_id: [environment_state(env, by_env.get(env.name, [])) for env in envs]
        for request_id, by_env in grouped.items()
    }


# --- what may be done there now ----------------------------------------------------------------


def rollout_blockers(
    request: OnboardingRequest, state: EnvironmentState, *, previous_live: bool
) -> dict[str, str]:
    """Why each rollout action is not possible in this environment now ("" when it is).
    `previous_live`: the environment before it in the rollout is live (True for the first)."""
    busy = "a run is in progress" if state.busy else ""
    provisioned = "" if state.provisioned else "provision it first"
    return {
        "provision": _provision_blocker(request, busy, previous_live),
        "smoke": busy or provisioned,
        "criteria": provisioned,
        "teardown": busy or ("" if state.last_run else "nothing to tear down"),
    }


def _provision_blocker(request: OnboardingRequest, busy: str, previous_live: bool) -> str:
    if request.status != RequestStatus.APPROVED:
        return "the request is not approved"
    if busy:
        return busy
    if not previous_live:
        return "the environment before it must pass its smoke test first"
    return ""


@dataclass(frozen=True)
class EnvironmentRollout(EnvironmentState):
    """One environment of the ticket's rollout panel: its state, what may be done there now
    and what was last measured there."""

    runs: list[Run] = field(default_factory=list)  # newest first
    allowed: dict[str, str] = field(default_factory=dict)  # action -> why not ("": allowed)
    criteria: dict[str, Any] | None = None  # the newest measured success criteria
    drift: dict[str, Any] | None = None  # the newest drift check: drifted, changes, checked_at
    first: bool = False  # the first environment of the rollout (dev)

    @property
    def awaiting(self) -> bool:
        return self.state == "awaiting confirmation"

    @property
    def buttons(self) -> list[tuple[str, str, str]]:
        """(action, label, why not — empty when allowed), in the order they are shown."""
        return [
            (key, self._label(key, label), self.allowed[key])
            for key, (_, label) in ROLLOUT_ACTIONS.items()
        ]

    def _label(self, action: str, label: str) -> str:
        if action != "provision":
            return label
        if self.provisioned:
            return "Provision again"
        return label if self.first else f"Promote to {self.environment.name}"


def rollout_states(request: OnboardingRequest) -> list[EnvironmentRollout]:
    """Each environment's state, which rollout actions its rules allow now, and its newest
    measured success criteria and drift check."""
    runs = list(runs_of(request, *ROLLOUT_KINDS))
    measured = latest_criteria(request)
    drift = latest_drift(request)
    result: list[EnvironmentRollout] = []
    previous_live = True
    for env in Environment.objects.all():
        mine = [r for r in runs if r.params.get("environment") == env.name]
        state = environment_state(env, mine)
        result.append(
            EnvironmentRollout(
                **vars(state),
                runs=list(reversed(mine)),
                allowed=rollout_blockers(request, state, previous_live=previous_live),
                criteria=measured.get(env.name),
                drift=drift.get(env.name),
                first=not result,
            )
        )
        previous_live = state.is_live
    return result


def provisioned_environments(request: OnboardingRequest) -> list[str]:
    """Environments whose last provision or teardown run for the request that succeeded
    was a provision, in rollout order."""
    runs = (
        runs_of(request, provision, teardown)
        .filter(status=RunStatus.SUCCEEDED)
        .order_by("finished_at", "pk")
    )
    last: dict[str, str] = {}
    for kind, params in runs.values_list("kind", "params"):
        last[str(params.get("environment"))] = kind
    names = {name for name, kind in last.items() if kind == str(provision)}
    return [env.name for env in Environment.objects.all() if env.name in names]


# --- the newest measurements ---------------------------------------------------------------------


def latest_criteria(request: OnboardingRequest) -> dict[str, dict[str, Any]]:
    """The newest measured success criteria per environment name, with their run."""
    found: dict[str, dict[str, Any]] = {}
    for result in step_results(request, success_criteria, success_criteria_step):
        found[result.run.params.get("environment", "")] = {"run": result.run, **result.output}
    return found


def latest_drift(request: OnboardingRequest) -> dict[str, dict[str, Any]]:
    """Per environment, what the newest drift check found (changes with their field names)."""
    found: dict[str, dict[str, Any]] = {}
    for result in step_results(request, drift_check, drift_environment_step):
        found[result.params.get("environment", "")] = {
            "drifted": result.output.get("drifted", False),
            "changes": result.output.get("changes", []),
            "checked_at": result.finished_at,
            "run": result.run,
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


def latest_volume(request: OnboardingRequest) -> tuple[Run | None, dict[str, Any] | None]:
    """The newest volume measurement run, whatever its status, and the output of the newest
    one that succeeded (with its run id and its dates parsed), if any."""
    runs = runs_of(request, volume_review).select_related("created_by")
    latest = runs.order_by("-created_at", "-pk").first()
    if latest is None:
        return None, None
    passed = runs.filter(status=RunStatus.SUCCEEDED).order_by("-finished_at", "-pk").first()
    if passed is None:
        return latest, None
    measured = step_results(request, volume_review, volume_measure_step).filter(run=passed).first()
    if measured is None or not measured.output:
        return latest, None
    output = measured.output
    return latest, {
        **output,
        "run_id": passed.pk,
        "measured_on": datetime.fromisoformat(output["measured_at"]),
        "since_on": datetime.fromisoformat(output["since"]),
    }
