"""Fixtures for tests that talk to the sandbox AWS (see portal/sandbox).

- ``sandbox`` (session): the sandbox server in a child process on a free port, with
  settings.AWS_ENDPOINT_URL (and the AWS_ENDPOINT_URL environment variable, which worker
  processes started by tests inherit) pointing at it. Yields a handle with ``.url``,
  ``.inject(...)``, ``.clear()`` and ``.faults()``.
- ``environments`` (db): the Environment rows of seed_environments, with the pipeline
  seeded in the sandbox for each (idempotent, so a test that deleted something gets it
  back), and no injected faults left over. Returns the rows in rollout order.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from portal import aws
from portal.sandbox import faults
from portal.sandbox.server import start_sandbox_server

__all__ = ["SandboxHandle", "environments", "sandbox"]


@dataclass
class SandboxHandle:
    url: str

    def inject(self, **kwargs: Any) -> dict[str, Any]:
        """faults.inject against this sandbox: service=, operation=, code=, message=…"""
        return faults.inject(self.url, **kwargs)

    def clear(self, **kwargs: Any) -> int:
        return faults.clear(self.url, **kwargs)

    def faults(self) -> list[dict[str, Any]]:
        return faults.active(self.url)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxHandle]:
    server = start_sandbox_server("127.0.0.1", 0, isolated=True)
    saved_setting = settings.AWS_ENDPOINT_URL
    saved_env = os.environ.get("AWS_ENDPOINT_URL")
    settings.AWS_ENDPOINT_URL = server.url
    os.environ["AWS_ENDPOINT_URL"] = server.url
    aws.reset_clients()
    try:
        yield SandboxHandle(url=server.url)
    finally:
        settings.AWS_ENDPOINT_URL = saved_setting
        if saved_env is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = saved_env
        aws.reset_clients()
        server.stop()


# (what the environments looked like, the sandbox's write count) right after the last seed
_last_seed: dict[str, Any] = {}


def _fingerprint(rows: list[Any]) -> str:
    from django.forms.models import model_to_dict

    return repr([model_to_dict(row, exclude=["id"]) for row in rows])


@pytest.fixture
def environments(db: None, sandbox: SandboxHandle) -> Iterator[list[Any]]:
    from portal.models import Environment
    from portal.sandbox.seed import seed
    from portal.sandbox.server import writes

    sandbox.clear()
    call_command("seed_environments", stdout=io.StringIO())
    rows = list(Environment.objects.all())
    # Seeding is idempotent but reads ~80 resources; skip it when nothing has called the
    # sandbox with a write since the last seed of the same environments.
    state = (_fingerprint(rows), sandbox.url)
    if _last_seed.get("state") != state or _last_seed.get("writes") != writes(sandbox.url):
        seed(rows)
        _last_seed.update(state=state, writes=writes(sandbox.url))
    yield rows
    sandbox.clear()
