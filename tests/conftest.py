from __future__ import annotations

import pytest

from tests.personas import PERSONAS, make_persona
from tests.workers import cluster  # noqa: F401 - fixture


@pytest.fixture
def personas(db):
    """Every persona user, keyed by username (see tests/personas.py)."""
    return {name: make_persona(name) for name in PERSONAS}
