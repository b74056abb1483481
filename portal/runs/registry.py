"""The registries of steps and run kinds.

A step is a plain function ``(ctx: StepContext) -> Done | Wait | Decide | None`` registered
under a key with ``@step``. It must be idempotent: read the current state, change only what
differs, so running it twice or after a crash converges and never duplicates a resource.

A run kind is declared with ``@run_kind`` on its plan: a function from the run's params to
its ordered list of ``PlannedStep``, frozen when the run is created. Each app declares its
kinds in ``<app>/kinds.py``, which `portal.runs.apps` imports once at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from portal.runs.outcomes import Decide, Outcome, PermanentStepError

if TYPE_CHECKING:
    from portal.roles import Role
    from portal.runs.context import StepContext

StepFunc = Callable[["StepContext"], Outcome]


@dataclass(frozen=True)
class StepSpec:
    key: str
    title: str
    func: StepFunc
    max_attempts: int | None = None


@dataclass(frozen=True)
class PlannedStep:
    """One step of a run's plan: a registered step (its key, or the step function itself),
    with an optional title and params of its own. A `decision` known when the run is
    planned (a confirmation gate) is shown from the start, before the step first runs."""

    key: str | StepFunc
    title: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    decision: Decide | None = None

    @property
    def step_key(self) -> str:
        return self.key if isinstance(self.key, str) else step_key(self.key)


@dataclass(frozen=True)
class RunKindSpec:
    """A declared run kind. `str(kind)` is its key."""

    key: str
    title: str
    plan: Callable[[dict[str, Any]], Sequence[PlannedStep]]
    start_roles: tuple[Role, ...]
    # Who may retry, skip, cancel or decide; defaults to the roles that may start it.
    operate_roles: tuple[Role, ...]

    def __str__(self) -> str:
        return self.key


STEPS: dict[str, StepSpec] = {}
RUN_KINDS: dict[str, RunKindSpec] = {}
_KEYS: dict[Callable[..., Any], str] = {}


def step(
    key: str, *, title: str, max_attempts: int | None = None
) -> Callable[[StepFunc], StepFunc]:
    def decorator(func: StepFunc) -> StepFunc:
        if key in STEPS and STEPS[key].func is not func:
            raise ValueError(f"step {key!r} is registered twice")
        STEPS[key] = StepSpec(key=key, title=title, func=func, max_attempts=max_attempts)
        _KEYS[func] = key
        return func

    return decorator


def run_kind(
    key: str,
    *,
    title: str,
    start_roles: Sequence[Role],
    operate_roles: Sequence[Role] | None = None,
) -> Callable[[Callable[[dict[str, Any]], Sequence[PlannedStep]]], RunKindSpec]:
    """Declare a run kind on its plan function; the decorated name becomes the kind, which
    services pass to `run_start` and readers to `runs_of` (its key is written only here)."""

    def decorator(plan: Callable[[dict[str, Any]], Sequence[PlannedStep]]) -> RunKindSpec:
        if key in RUN_KINDS and RUN_KINDS[key].plan is not plan:
            raise ValueError(f"run kind {key!r} is declared twice")
        spec = RunKindSpec(
            key=key,
            title=title,
            plan=plan,
            start_roles=tuple(start_roles),
            operate_roles=tuple(operate_roles or start_roles),
        )
        RUN_KINDS[key] = spec
        return spec

    return decorator


def step_key(func: Callable[..., Any]) -> str:
    """The key a step function was registered under."""
    try:
        return _KEYS[func]
    except KeyError:
        raise ValueError(f"{func.__qualname__} is not a registered step") from None


def get_step(key: str) -> StepSpec:
    try:
        return STEPS[key]
    except KeyError:
        raise PermanentStepError(f"No step is registered under {key!r}.") from None


def kind_key(kind: str | RunKindSpec) -> str:
    return kind.key if isinstance(kind, RunKindSpec) else kind


def get_run_kind(kind: str | RunKindSpec) -> RunKindSpec | None:
    return RUN_KINDS.get(kind_key(kind))
