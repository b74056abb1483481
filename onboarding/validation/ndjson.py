"""NDJSON: one record per line, read in chunks of whole lines.

The chunk loop is the hot path of the benchmark, so it keeps everything in local names, asks
the validator ``is_valid`` first and ``iter_errors`` only while the report still has room for
error details. A chunk is self-contained (its record and line numbers are relative), so the
same function runs in this process or in a helper process (``parallel.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from onboarding.validation.jsontext import careful_loads, deep_line, has_long_digits
from onboarding.validation.schema import ErrorSink
from onboarding.validation.types import Limits, Rejected

CHECK_EVERY = 1024  # records between looks at the clock
TIMEOUT = "timeout"


@dataclass
class ChunkResult:
    """What one chunk of lines contributed; record and line numbers are relative to it."""

    lines: int = 0
    records: int = 0
    invalid: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    rejected: str = ""  # "Line {line} …" with the absolute line filled in later, or TIMEOUT
    reject_line: int = 0

    def to_wire(self) -> list[Any]:
        return [
            self.lines,
            self.records,
            self.invalid,
            self.errors,
            self.rejected,
            self.reject_line,
        ]

    @classmethod
    def from_wire(cls, data: list[Any]) -> ChunkResult:
        lines, records, invalid, errors, rejected, reject_line = data
        return cls(lines, records, invalid, [tuple(e) for e in errors], rejected, reject_line)


def ndjson_chunk(
    chunk: bytes, *, validator: Any, limits: Limits, room: int, deadline: float
) -> ChunkResult:
    """Validate the lines of `chunk` (whole lines; the last one needs no newline)."""
    lines = chunk.split(b"\n")
    result = ChunkResult(lines=len(lines))
    deep = deep_line(chunk, limits.max_depth)
    if deep >= 0:
        result.rejected = f"Line {{line}} is nested more than {limits.max_depth} levels deep."
        result.reject_line = deep + 1
        return result
    careful = has_long_digits(chunk)
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    is_valid = validator.is_valid
    sink = ErrorSink(validator, room)
    missing = sink  # any object that a record can never be
    records = invalid = 0
    for index, line in enumerate(lines):
        if careful and has_long_digits(line):
            value: Any = missing
        else:
            try:
                value = loads(line)
            except decode_error:
                value = missing
        if value is missing:
            if not line.strip():
                continue
            try:
                value = careful_loads(line, limits)
            except Rejected as exc:
                result.rejected = f"Line {{line}} {exc.message}."
                result.reject_line = index + 1
                break
            except ValueError as exc:
                records += 1
                invalid += 1
                sink.add_message(records, "$", str(exc))
                continue
        records += 1
        try:
            ok = is_valid(value)
        except (ValueError, TypeError, OverflowError):
            ok = False
        if not ok:
            invalid += 1
            sink.add(records, value)
        if not records % CHECK_EVERY and time.monotonic() > deadline:
            result.rejected = TIMEOUT
            result.reject_line = index + 1
            break
    result.records, result.invalid, result.errors = records, invalid, sink.errors
    return result
