"""NDJSON: one record per line, read in chunks of whole lines.

The chunk loop is the hot path of the benchmark. Lines that orjson reads and that need no
careful parse (``jsontext`` decides that for the whole chunk with two C-speed scans) run
through ``map(is_valid, map(orjson.loads, lines))`` with no Python code per record; a line
that orjson refuses (a blank line, broken JSON) or that the validator cannot take stops that
run and is handled on its own (a blank line is skipped, a long-digit line takes the careful
parse, broken JSON is one invalid record), then the run goes on from the next line. Error
details are asked of the validator (``iter_errors``) only for invalid records and only while
the report still has room for them. A chunk is self-contained (its record and line numbers
are relative), so the same function runs in this process or in a helper process
(``parallel.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from onboarding.validation.jsontext import careful_loads, deep_line, has_long_digits
from onboarding.validation.schema import ErrorSink
from onboarding.validation.types import Limits, Rejected

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


class _NeedsCare(ValueError):
    """A line with a long run of digits: it takes the careful parse, not the fast run."""


def _quick_loads(line: bytes) -> Any:
    """orjson for the lines of a chunk that has long digit runs somewhere."""
    if has_long_digits(line):
        raise _NeedsCare
    return orjson.loads(line)


_BLANK = object()


def _slow_loads(line: bytes, careful: bool, limits: Limits) -> Any:
    """One line the fast run stopped at: its value, ``_BLANK`` for a blank line; Rejected
    for a file-level problem, ValueError (with the message for the user) for broken JSON."""
    if not (careful and has_long_digits(line)):
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    if not line.strip():
        return _BLANK
    return careful_loads(line, limits)


def ndjson_chunk(
    chunk: bytes, *, validator: Any, limits: Limits, room: int, deadline: float
) -> ChunkResult:
    """Validate the lines of `chunk` (whole lines; the last one needs no newline)."""
    lines = chunk.split(b"\n")
    total = len(lines)
    result = ChunkResult(lines=total)
    deep = deep_line(chunk, limits.max_depth)
    if deep >= 0:
        result.rejected = f"Line {{line}} is nested more than {limits.max_depth} levels deep."
        result.reject_line = deep + 1
        return result
    careful = has_long_digits(chunk)
    loads = _quick_loads if careful else orjson.loads
    is_valid = validator.is_valid
    sink = ErrorSink(validator, room)
    errors = sink.errors
    records = invalid = 0
    pending = iter(lines)
    done = 0  # lines accounted for
    while done < total:
        outcomes: list[bool] = []
        try:
            # list.extend keeps what it appended before an exception, so `outcomes` holds
            # one result per line up to the one that stopped the run.
            outcomes.extend(map(is_valid, map(loads, pending)))
            stopped = False
        except (ValueError, TypeError, OverflowError):  # orjson.JSONDecodeError included
            stopped = True
        ran = len(outcomes)
        bad = ran - sum(outcomes)
        if bad:
            invalid += bad
            if len(errors) < room:
                for i in range(outcomes.index(False), ran):
                    if not outcomes[i]:
                        sink.add(records + i + 1, loads(lines[done + i]))
                        if len(errors) >= room:
                            break
        records += ran
        done += ran
        if stopped:
            line = lines[done]
            done += 1
            try:
                value = _slow_loads(line, careful, limits)
            except Rejected as exc:
                result.rejected = f"Line {{line}} {exc.message}."
                result.reject_line = done
                break
            except ValueError as exc:
                records += 1
                invalid += 1
                sink.add_message(records, "$", str(exc))
            else:
                if value is not _BLANK:
                    records += 1
                    try:
                        ok = is_valid(value)
                    except (ValueError, TypeError, OverflowError):
                        ok = False
                    if not ok:
                        invalid += 1
                        sink.add(records, value)
        if time.monotonic() > deadline:
            result.rejected = TIMEOUT
            result.reject_line = done
            break
    result.records, result.invalid, result.errors = records, invalid, errors
    return result
