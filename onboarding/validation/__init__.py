"""Sample validation for onboarding requests: pure functions over the streams passed in.

The schema is checked against its meta-schema with remote references refused
(``check_schema``); each sample is read streaming with bounded memory and time and
validated record by record, formats asserted (``validate_sample``); a report says what
was checked and what was wrong (``SampleReport``); ``sample_passes`` applies the
expected-malformed rule; ``infer_schema`` offers a schema from samples; ``safe_filename``
cleans an uploaded file's name.
"""

from onboarding.validation.engine import validate_sample
from onboarding.validation.files import check_sample_files, safe_filename
from onboarding.validation.formats import detect_format
from onboarding.validation.infer import infer_schema
from onboarding.validation.schema import check_schema, schema_dialect
from onboarding.validation.types import (
    MAX_REPORTED_ERRORS,
    Limits,
    RecordError,
    SampleFormat,
    SampleReport,
    SchemaProblem,
    sample_passes,
)

__all__ = [
    "MAX_REPORTED_ERRORS",
    "Limits",
    "RecordError",
    "SampleFormat",
    "SampleReport",
    "SchemaProblem",
    "check_sample_files",
    "check_schema",
    "detect_format",
    "infer_schema",
    "safe_filename",
    "sample_passes",
    "schema_dialect",
    "validate_sample",
]
