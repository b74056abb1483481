from typing import Any

from django.conf import settings
from django.http import HttpRequest

from portal.roles import roles_of


def portal(request: HttpRequest) -> dict[str, Any]:
    return {
        "SANDBOX": settings.SANDBOX,
        "user_roles": roles_of(getattr(request, "user", None)),
        "RUNS_POLL_SECONDS": settings.RUNS_POLL_SECONDS,
    }
