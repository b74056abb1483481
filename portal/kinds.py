"""The run kinds of the portal itself (run kinds are declared in each app's kinds.py)."""

from __future__ import annotations

from typing import Any

from portal.errors import ApplicationError
from portal.models import Environment
from portal.roles import Role
from portal.runs.api import PlannedStep, run_kind
from portal.steps import CHECKS


@run_kind("environment.check", title="Environment check", start_roles=[Role.ENGINEER, Role.ADMIN])
def environment_check(params: dict[str, Any]) -> list[PlannedStep]:
    """Every check for each environment in params["environments"] (default: all)."""
    names = list(params.get("environments") or [])
    environments = list(Environment.objects.all())  # rollout order
    if names:
        known = {env.name for env in environments}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ApplicationError(f"There is no environment called {', '.join(unknown)}.")
        environments = [env for env in environments if env.name in names]
    return [
        PlannedStep(check, title=f"{env.name}: {label}", params={"environment": env.name})
        for env in environments
        for check, label in CHECKS
    ]
