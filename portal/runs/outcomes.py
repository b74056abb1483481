"""What a step returns or raises, and how the engine reads a failure.

A step function returns `Done` (finished, with output), `Wait` (look again later) or
`Decide` (stop at a decision people make), or raises `TransientStepError` (retried with
backoff, bounded), `PermanentStepError` (the run fails; a person retries or skips) or any
other exception (classified by `classify_error`; AWS errors through `portal.aws`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from portal.aws import describe_error, is_aws_error
from portal.roles import Role


@dataclass(frozen=True)
class Done:
    """The step finished; `output` is stored on the step and shown on the run page."""

    output: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Not yet: free the worker and look at the step again later.

    When: after `seconds`, or at `until`; with neither, when a person acts and the service
    that records it calls `run_wake`. `reason` and `output` describe this tick ("canary:
    46 of 100 invocations needed, 0 errors") and are shown live on the run page. A
    `deadline` (a time, or a duration from the step's first tick) fails the step with
    `deadline_message` once it passes while the step still waits. Waiting ticks are not
    attempts: they never use up the step's retries.
    """

    until: datetime | None = None
    reason: str = ""
    seconds: float | None = None
    output: dict[str, Any] = field(default_factory=dict)
    deadline: datetime | timedelta | None = None
    deadline_message: str = ""

    def wake_at(self, now: datetime) -> datetime | None:
        if self.seconds is not None:
            return now + timedelta(seconds=max(0.0, self.seconds))
        return self.until


@dataclass(frozen=True)
class Choice:
    """One answer to a decision: its key (what the step reads), its button label, and
    "primary" or "danger" for how the button looks."""

    key: str
    label: str
    style: str = ""


@dataclass(frozen=True)
class Decide:
    """Stop at a decision: the run waits until someone allowed picks one of `choices`.

    `roles`: who may choose (default: whoever may operate runs of this kind).
    `not_starter`: the person who started the run may not choose (separation of duties).
    `reason_required`: the chooser must say why (at least 5 characters).
    `default` and `timeout`: the choice taken by itself when nobody chose in time
    (e.g. promote once the bake is over). `action` is the verb the page and its messages
    use ("decide", "confirm", "approve"). The step runs again once a choice is made and
    reads it as `ctx.decision`.
    """

    prompt: str
    choices: Sequence[Choice]
    roles: Sequence[Role] = ()
    not_starter: bool = False
    reason_required: bool = False
    default: str | None = None
    timeout: timedelta | None = None
    output: dict[str, Any] = field(default_factory=dict)
    action: str = "decide"

    def __post_init__(self) -> None:
        keys = [c.key for c in self.choices]
        if not keys or len(set(keys)) != len(keys):
            raise ValueError("a decision needs one or more choices with distinct keys")
        if self.default is not None and self.default not in keys:
            raise ValueError(f"the default {self.default!r} is not one of {keys}")
        if (self.default is None) != (self.timeout is None):
            raise ValueError("a default choice and its timeout go together")

    def spec(self, now: datetime | None = None) -> dict[str, Any]:
        """The decision as stored on its step (JSON)."""
        now = now or timezone.now()
        return {
            "prompt": self.prompt,
            "choices": [{"key": c.key, "label": c.label, "style": c.style} for c in self.choices],
            "roles": [str(r) for r in self.roles],
            "not_starter": self.not_starter,
            "reason_required": self.reason_required,
            "default": self.default,
            "decide_by": (now + self.timeout).isoformat() if self.timeout else None,
            "action": self.action,
        }


class TransientStepError(Exception):
    """Worth retrying as it is: throttling, 5xx, a timeout. Retried with backoff."""


class PermanentStepError(Exception):
    """Will fail again until a person fixes the cause. The run stops in `failed`."""


Outcome = Done | Wait | Decide | None


def classify_error(exc: BaseException) -> tuple[bool, str]:
    """(transient?, message a person can act on) for an exception a step raised."""
    if isinstance(exc, TransientStepError):
        return True, str(exc)
    if isinstance(exc, PermanentStepError):
        return False, str(exc)
    return describe_error(exc)


def is_expected(exc: BaseException) -> bool:
    """Errors a step means to raise, or AWS answers: no traceback in the worker's log."""
    return isinstance(exc, PermanentStepError | TransientStepError) or is_aws_error(exc)
