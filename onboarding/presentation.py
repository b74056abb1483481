"""How the onboarding pages show what the services and selectors compute.

Templates test booleans and print labels: the statuses and factors behind a badge, a
button's label or a section that opens by itself are read here, in Python, once. No rules
live here: which state an environment is in, whether a figure is flagged, who may act, are
the answers of `onboarding.selectors` and `onboarding.services`; this module only says how
the page shows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from onboarding.models import HandoffItem, OnboardingRequest, RequestStatus
from onboarding.selectors import EnvironmentRollout, TimelineEntry
from onboarding.services import HandoffState, ValidationState
from portal.runs.api import Run, RunStatus, Step, StepStatus

BUTTON_CLASSES = {"provision": "primary", "teardown": "danger"}
HANDOFF_MARK_LABELS: dict[str, str] = {
    HandoffItem.ONCALL_BRIEFED: "Mark briefed",
    HandoffItem.CONSUMERS_NOTIFIED: "Notify consumers…",
    HandoffItem.RUNBOOK_WRITTEN: "Record the runbook entry",
    HandoffItem.REVIEW_HELD: "Record the review as held",
}


class _Shown(Protocol):
    """Where a source stands in one environment (`selectors.EnvironmentState`, or
    `selectors.EnvironmentRollout` on the ticket)."""

    @property
    def is_live(self) -> bool: ...

    @property
    def last_run(self) -> Run | None: ...

    @property
    def busy(self) -> bool: ...


S = TypeVar("S", bound=_Shown)


def state_tone(shown: _Shown) -> str:
    """The CSS class of an environment's state badge: ok once live, bad when its newest
    rollout run failed, running while that run is going or waits for a person, plain ("")
    otherwise (not started, provisioned, torn down, cancelled)."""
    run = shown.last_run
    if shown.is_live:
        return "ok"
    if run is None:
        return ""
    if run.status == RunStatus.FAILED:
        return "bad"
    return "running" if shown.busy else ""


def state_badges(states: Iterable[S]) -> list[tuple[S, str]]:
    """Each environment's state with its badge tone."""
    return [(s, state_tone(s)) for s in states]


@dataclass(frozen=True)
class RolloutRow:
    """One environment of the ticket's rollout panel, as shown: its badge tone and its
    buttons, each (action, label, why not — empty when allowed, CSS class)."""

    env: EnvironmentRollout
    tone: str
    buttons: list[tuple[str, str, str, str]]


def rollout_rows(rollout: Iterable[EnvironmentRollout]) -> list[RolloutRow]:
    return [
        RolloutRow(
            r,
            state_tone(r),
            [(a, label, why_not, BUTTON_CLASSES.get(a, "")) for a, label, why_not in r.buttons],
        )
        for r in rollout
    ]


def submit_label(obj: OnboardingRequest) -> str:
    if obj.status == RequestStatus.CHANGES_REQUESTED:
        return "Resubmit for approval"
    return "Submit for approval"


def edit_voids_approvals(obj: OnboardingRequest | None) -> bool:
    """Whether the edit page warns that saving makes a new revision and voids approvals:
    once the request has left the draft."""
    return obj is not None and obj.status != RequestStatus.DRAFT


def open_reports(validation: ValidationState) -> set[int]:
    """The samples whose validation report opens by itself: those that fail."""
    return {v.sample.pk for v in validation.verdicts if v.state == "fails"}


@dataclass(frozen=True)
class DiffRow:
    """One environment of a plan comparison with AWS (a step of the comparison run)."""

    step: Step
    succeeded: bool
    planned: bool  # the plan has anything for this environment at all
    changes: list[dict[str, Any]]  # what differs from AWS (unchanged fields left out)
    in_sync: bool  # nothing to create or update

    @classmethod
    def of(cls, step: Step) -> DiffRow:
        output = step.output or {}
        every = list(output.get("changes") or [])
        counts = output.get("counts") or {}
        return cls(
            step=step,
            succeeded=step.status == StepStatus.SUCCEEDED,
            planned=bool(every),
            changes=[c for c in every if c.get("action") != "unchanged"],
            in_sync=not counts.get("create") and not counts.get("update"),
        )


def diff_rows(steps: Sequence[Step]) -> list[DiffRow]:
    return [DiffRow.of(step) for step in steps]


def factor_label(factor: float) -> str:
    """A factor as the pages write it: 2.0 is "2×"."""
    return f"{factor:g}×"


def volume_failed(handoff: HandoffState | None) -> bool:
    """Whether the newest volume measurement failed (the review shows why)."""
    run = handoff.volume_run if handoff else None
    return run is not None and run.status == RunStatus.FAILED


def handoff_items(handoff: HandoffState | None) -> list[tuple[Any, str]]:
    """Each checklist item with the label of the button that marks it."""
    if handoff is None:
        return []
    return [(item, HANDOFF_MARK_LABELS.get(item.key, "")) for item in handoff.items]


def timeline_rows(timeline: Iterable[TimelineEntry]) -> list[tuple[TimelineEntry, bool]]:
    """Each history entry and whether it shows the "voided" badge (an approval a later
    revision voided)."""
    return [(e, e.badge == "voided") for e in timeline]
