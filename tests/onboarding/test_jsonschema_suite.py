"""The vendored subset of the official JSON-Schema-Test-Suite (see jsonschema_suite/README.md),
run through the validation path of ``validate_sample``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from onboarding.validation import Limits, check_schema
from onboarding.validation.ndjson import ndjson_chunk
from onboarding.validation.schema import compile_validator

SUITE = Path(__file__).parent / "jsonschema_suite"


def _cases() -> list:
    cases = []
    for path in sorted(SUITE.glob("*/*.json")):
        for group in json.loads(path.read_text(encoding="utf-8")):
            for test in group["tests"]:
                case_id = (
                    f"{path.parent.name}/{path.stem}: {group['description']}: {test['description']}"
                )
                cases.append(pytest.param(group["schema"], test["data"], test["valid"], id=case_id))
    return cases


CASES = _cases()


class JsonSchemaSuiteTests:
    def test_it_vendors_both_dialects(self):
        dialects = {p.parent.name for p in SUITE.glob("*/*.json")}
        assert dialects == {"draft7", "draft2020-12"}
        assert len(CASES) > 400

    @pytest.mark.parametrize(("schema", "data", "valid"), CASES)
    def test_it_agrees_with_the_official_suite(self, schema, data, valid):
        checked, problems = check_schema(json.dumps(schema))
        assert problems == []
        line = json.dumps(data).encode()  # the standard library writes integers of any size
        result = ndjson_chunk(
            line,
            validator=compile_validator(checked),
            limits=Limits(),
            room=20,
            deadline=time.monotonic() + 10,
        )
        assert result.rejected == ""
        assert result.records == 1
        assert (result.invalid == 0) is valid, result.errors
