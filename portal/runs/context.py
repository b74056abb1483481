"""What a step function receives: its run, its params, a log, AWS clients and, at a
decision, the choice that was made."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from portal import aws
from portal.models import Environment
from portal.runs.models import Decision, Run, Step
from portal.runs.outcomes import PermanentStepError

LOG_LIMIT = 500  # entries kept per step; the oldest are dropped beyond that
LOG_ACTIONS = ("read", "created", "updated", "unchanged", "deleted", "info", "warning")


@dataclass(frozen=True)
class Chosen:
    """The choice made at this step's decision."""

    choice: str
    by: str  # a username, or "" when the default applied once the time limit passed
    reason: str
    at: datetime
    by_default: bool


@dataclass
class StepContext:
    """What a step function receives: its run, its params, a log and AWS clients."""

    run: Run
    step: Step
    token: str
    entries: list[dict[str, str]] = field(default_factory=list)
    lease_lost: threading.Event = field(default_factory=threading.Event)
    environments: dict[str, Any] = field(default_factory=dict)
    _dirty: bool = False

    @property
    def params(self) -> dict[str, Any]:
        return {**self.run.params, **self.step.params}

    def log(self, action: str, message: str) -> None:
        """Record what was read or changed: read, created, updated, unchanged, deleted…"""
        if action not in LOG_ACTIONS:
            raise ValueError(f"unknown log action {action!r}")
        self.entries.append(
            {"at": timezone.now().isoformat(), "action": action, "message": message}
        )
        del self.entries[:-LOG_LIMIT]
        self._dirty = True

    def environment(self) -> Environment:
        name = self.params.get("environment")
        if not name:
            raise PermanentStepError("This step needs an environment and none was given.")
        if name not in self.environments:  # cached for the rest of this worker's slice
            try:
                self.environments[name] = Environment.objects.get(name=name)
            except Environment.DoesNotExist:
                raise PermanentStepError(f"There is no environment called {name!r}.") from None
        return self.environments[name]

    def aws(self, service: str, environment: Environment | None = None) -> Any:
        """A boto3 client for `service` in the step's environment (portal/aws.py)."""
        return aws.client(service, environment or self.environment())

    def still_leased(self) -> bool:
        """False once another worker has taken the run over; a long step should stop."""
        return not self.lease_lost.is_set()

    @property
    def decision(self) -> Chosen | None:
        """The choice made at this step's decision, or None while nobody has chosen."""
        found = Decision.objects.filter(step_id=self.step.pk).select_related("chosen_by").first()
        if found is None:
            return None
        return Chosen(
            choice=found.choice,
            by=found.chosen_by.get_username() if found.chosen_by else "",
            reason=found.reason,
            at=found.created_at,
            by_default=found.by_default,
        )
