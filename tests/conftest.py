from __future__ import annotations

import pytest

from tests.personas import PERSONAS, make_persona
from tests.sandbox_fixtures import *  # noqa: F403

# ONRAMP_FAIL_ON_SKIP=1 (set by .ci/run) turns any skipped test into a failed run.
from tests.skip_gate import (  # noqa: F401 - pytest hooks
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
from tests.workers import cluster  # noqa: F401 - fixture


@pytest.fixture
def personas(db):
    """Every persona user, keyed by username (see tests/personas.py)."""
    return {name: make_persona(name) for name in PERSONAS}
