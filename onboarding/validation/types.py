"""The value types of sample validation: formats, limits and reports.

Plain data only; nothing here reads a file or touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

MAX_REPORTED_ERRORS = 20


class SampleFormat(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"
    CSV = "csv"
    PARQUET = "parquet"
    AVRO = "avro"


@dataclass(frozen=True)
class Limits:
    """Bounds that keep one sample from exhausting a worker.

    ``max_line_bytes`` bounds one NDJSON/CSV line and one JSON-document record; an Avro
    block may be 4x that compressed and decompressed. ``max_files`` is for
    ``check_sample_files``. ``workers`` above 1 lets a large NDJSON sample (past 8 MiB) be
    validated by helper processes as well (see ``parallel.py``); the default, 1, keeps
    everything in the calling process (on the shared 2-core machine the helper measured no
    faster, see benchmarks/validation_bench.py). ``screen`` sends NDJSON and Parquet
    through the columnar screen first when the schema allows it (``screen.py``); NDJSON
    helpers are not used then (Arrow's threads take the second core).

    ``from_settings()`` reads ``ONBOARDING_SAMPLE_<FIELD>`` (for example
    ``ONBOARDING_SAMPLE_MAX_FILE_BYTES``, ``ONBOARDING_SAMPLE_WORKERS``,
    ``ONBOARDING_SAMPLE_SCREEN``) from Django settings when they are configured.
    """

    max_file_bytes: int = 100 * 1024 * 1024
    max_seconds: float = 120.0
    max_depth: int = 64
    max_line_bytes: int = 8 * 1024 * 1024
    max_int_digits: int = 100
    max_decompressed_bytes: int = 1024 * 1024 * 1024
    max_records: int = 10_000_000
    # Added beyond the first draft of the API (defaults keep old callers working):
    max_files: int = 50  # sample files in one request
    workers: int = 1  # processes for one large NDJSON sample; 2 adds a helper (opt-in)
    screen: bool = True  # NDJSON and Parquet go through the columnar screen when possible

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"Limits.{f.name} must be True or False, not {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"Limits.{f.name} must be a positive number, not {value!r}")

    @classmethod
    def from_settings(cls) -> Limits:
        try:
            # import here: the validation package is pure and runs without Django configured
            from django.conf import settings

            configured = settings.configured
        except ImportError:  # pragma: no cover - Django is a dependency of the project
            return cls()
        if not configured:
            return cls()
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"ONBOARDING_SAMPLE_{f.name.upper()}"
            if hasattr(settings, name):
                kind = {"float": float, "bool": bool}.get(str(f.type), int)
                values[f.name] = kind(getattr(settings, name))
        return cls(**values)


@dataclass
class SchemaProblem:
    path: str
    message: str


@dataclass
class RecordError:
    record: int  # from 1
    path: str  # a JSON path such as "$.address.zip"
    message: str


@dataclass
class SampleReport:
    format: SampleFormat | None
    records_checked: int = 0
    invalid_count: int = 0
    errors: list[RecordError] = field(default_factory=list)  # at most MAX_REPORTED_ERRORS
    rejected: str = ""  # why the file as a whole was refused; empty when it was read
    flags: list[str] = field(default_factory=list)  # worth a look, not a failure
    bytes_read: int = 0
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format.value if self.format is not None else None,
            "records_checked": self.records_checked,
            "invalid_count": self.invalid_count,
            "errors": [
                {"record": e.record, "path": e.path, "message": e.message} for e in self.errors
            ],
            "rejected": self.rejected,
            "flags": list(self.flags),
            "bytes_read": self.bytes_read,
            "duration_seconds": round(self.duration_seconds, 6),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SampleReport:
        fmt = d.get("format")
        return cls(
            format=SampleFormat(fmt) if fmt else None,
            records_checked=int(d.get("records_checked", 0)),
            invalid_count=int(d.get("invalid_count", 0)),
            errors=[
                RecordError(record=int(e["record"]), path=str(e["path"]), message=str(e["message"]))
                for e in d.get("errors", [])
            ],
            rejected=str(d.get("rejected", "")),
            flags=[str(f) for f in d.get("flags", [])],
            bytes_read=int(d.get("bytes_read", 0)),
            duration_seconds=float(d.get("duration_seconds", 0.0)),
        )


def sample_passes(report: SampleReport, *, expected_malformed: bool) -> bool:
    """A malformed sample passes only when the schema rejects it; any other sample only
    when every record is valid. A refused or empty file never passes."""
    if report.rejected or report.records_checked <= 0:
        return False
    if expected_malformed:
        return report.invalid_count > 0
    return report.invalid_count == 0


class Rejected(Exception):
    """The file as a whole is refused; the message is the sentence shown to the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            if unit == "bytes":
                return f"{int(n)} bytes"
            return f"{n:.0f} {unit}" if float(n).is_integer() else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover
