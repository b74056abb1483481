"""Bounded JSON text: depth and big-integer checks that run before any recursive parser,
the careful fallback parse, and the NDJSON chunk loop.

orjson is the parser. Before it sees a chunk of lines, two C-speed scans decide whether
anything in the chunk needs a closer look:

* depth: the chunk is reduced to its opening brackets and newlines (one ``bytes.translate``).
  A line can only be nested deeper than the limit if it holds more opening brackets than
  that, which a substring search finds; only such a line gets the exact, string-aware scan.
  A line nested deeper than ``max_depth`` refuses the file.
* integers: orjson reads an integer outside the 64-bit range as a (rounded) float. Any run
  of 20 or more digits, or of 19 after a minus sign (-9223372036854775809 is already out of
  range), sends its line to the careful parse (strings removed first; then the standard
  library's parser with an integer guard), so long integers stay exact and an integer with
  more than ``max_int_digits`` digits refuses the file.

A line orjson cannot read goes to the careful parse too: invalid UTF-8 refuses the file,
anything else is one invalid record with the parser's message.

The NDJSON loop that uses these lives in ``ndjson.py``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from onboarding.validation.types import Limits, Rejected

_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS_ONLY = bytes(b for b in range(256) if b not in b"[]{}\n")
_NOT_OPENING = bytes(b for b in range(256) if b not in b"[{\n")
_OPENING_AS_BRACE = bytes.maketrans(b"[", b"{")
# Digits as "0", the minus sign kept, anything else a space.
_DIGITS_AS_ZERO = bytes((48 if 48 <= b <= 57 else b if b == 45 else 32) for b in range(256))
_19_DIGITS = b"0" * 19
# orjson keeps -2**63 .. 2**64 - 1 exact: 2**64 has 20 digits, -2**63 - 1 has 19.
_20_DIGITS = b"0" * 20
_MINUS_19_DIGITS = b"-" + _19_DIGITS
_OPEN = frozenset(b"[{")


class _HugeInt(Exception):
    pass


class _BadNumber(ValueError):
    pass


def exact_depth(data: bytes) -> int:
    """The deepest bracket nesting outside strings (string-aware, no recursion)."""
    skeleton = _STRING.sub(b"", data).translate(None, _BRACKETS_ONLY + b"\n")
    depth = deepest = 0
    for byte in skeleton:
        if byte in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def depth_exceeds(data: bytes, limit: int) -> bool:
    return data.count(b"[") + data.count(b"{") > limit and exact_depth(data) > limit


def deep_line(chunk: bytes, limit: int) -> int:
    """Index (from 0) of the first line of `chunk` nested deeper than `limit`, or -1."""
    opening = chunk.translate(_OPENING_AS_BRACE, _NOT_OPENING)  # each line's [ and {, as {
    if b"{" * (limit + 1) not in opening:
        return -1
    lines = chunk.split(b"\n")
    for index, brackets in enumerate(opening.split(b"\n")):
        if len(brackets) > limit and exact_depth(lines[index]) > limit:
            return index
    return -1


def has_long_digits(data: bytes) -> bool:
    """Whether `data` holds a run of digits that orjson might round if it were an integer:
    20 or more digits, or 19 after a minus sign."""
    digits = data.translate(_DIGITS_AS_ZERO)
    return _19_DIGITS in digits and (_20_DIGITS in digits or _MINUS_19_DIGITS in digits)


def careful_loads(line: bytes, limits: Limits) -> Any:
    """Parse one record exactly. Raises Rejected for file-level problems and ValueError
    (with a message for the user) when the record is not valid JSON."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"is not valid UTF-8 (at its byte {exc.start + 1})") from None
    if has_long_digits(_STRING.sub(b'""', line)):
        return _stdlib_loads(text, limits)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc):
            raise Rejected(f"is nested more than {limits.max_depth} levels deep") from None
        try:
            return _stdlib_loads(text, limits)
        except ValueError:
            raise ValueError(f"invalid JSON: {_orjson_message(exc)}") from None


def _stdlib_loads(text: str, limits: Limits) -> Any:
    def parse_int(digits: str) -> int:
        if len(digits.lstrip("-")) > limits.max_int_digits:
            raise _HugeInt
        return int(digits)

    def parse_float(number: str) -> float:
        value = float(number)
        if value in (float("inf"), float("-inf")):
            raise _BadNumber(f"invalid JSON: the number {number[:40]} is out of range")
        return value

    def parse_constant(name: str) -> Any:
        raise _BadNumber(f"invalid JSON: {name} is not a JSON value")

    try:
        return json.loads(
            text, parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant
        )
    except _HugeInt:
        raise Rejected(f"has an integer with more than {limits.max_int_digits} digits") from None
    except _BadNumber:
        raise
    except RecursionError:
        raise Rejected(f"is nested more than {limits.max_depth} levels deep") from None
    except ValueError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None


def _orjson_message(exc: Exception) -> str:
    return str(exc).replace("line 1 column", "column")
