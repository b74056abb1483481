"""Step and run-kind registries, and the outcomes a step can return.

A step is a plain function ``(ctx: StepContext) -> Done | Wait | None`` registered under a
key with ``@step``. It must be idempotent: read the current state, change only what
differs, so running it twice or after a crash converges and never duplicates a resource.

A run kind is registered with ``@run_kind``: a function from the run's params to its
ordered list of ``PlannedStep`` — the plan, frozen when the run is created.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portal.roles import Role
    from portal.runs.engine import StepContext


@dataclass(frozen=True)
class Done:
    """The step finished; `output` is stored on the step and shown on the run page."""

    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Not yet: free the worker and run the step again at `until`, or, when `until` is
    None, when a person acts and the service that records it calls `run_wake`."""

    until: datetime | None = None
    reason: str = ""


class TransientStepError(Exception):
    """Worth retrying as it is: throttling, 5xx, a timeout. Retried with backoff."""


class PermanentStepError(Exception):
    """Will fail again until a person fixes the cause. The run stops in `failed`."""


StepFunc = Callable[["StepContext"], "Done | Wait | None"]


@dataclass(frozen=True)
class StepSpec:
    key: str
    title: str
    func: StepFunc
    max_attempts: int | None = None


@dataclass(frozen=True)
class PlannedStep:
    key: str
    title: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunKindSpec:
    key: str
    title: str
    plan: Callable[[dict[str, Any]], Sequence[PlannedStep]]
    start_roles: tuple[Role, ...]
    # Who may retry, skip or cancel; defaults to the roles that may start it.
    operate_roles: tuple[Role, ...]


STEPS: dict[str, StepSpec] = {}
RUN_KINDS: dict[str, RunKindSpec] = {}


def step(
    key: str, *, title: str, max_attempts: int | None = None
) -> Callable[[StepFunc], StepFunc]:
    def decorator(func: StepFunc) -> StepFunc:
        if key in STEPS and STEPS[key].func is not func:
            raise ValueError(f"step {key!r} is registered twice")
        STEPS[key] = StepSpec(key=key, title=title, func=func, max_attempts=max_attempts)
        return func

    return decorator


def run_kind(
    key: str,
    *,
    title: str,
    start_roles: Sequence[Role],
    operate_roles: Sequence[Role] | None = None,
) -> Callable:
    def decorator(plan: Callable[[dict[str, Any]], Sequence[PlannedStep]]) -> Callable:
        RUN_KINDS[key] = RunKindSpec(
            key=key,
            title=title,
            plan=plan,
            start_roles=tuple(start_roles),
            operate_roles=tuple(operate_roles or start_roles),
        )
        return plan

    return decorator


def get_step(key: str) -> StepSpec:
    try:
        return STEPS[key]
    except KeyError:
        raise PermanentStepError(f"No step is registered under {key!r}.") from None


def get_run_kind(key: str) -> RunKindSpec:
    return RUN_KINDS[key]
