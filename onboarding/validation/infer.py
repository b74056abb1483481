"""A draft 2020-12 schema inferred from sample files, for a requester without one to edit.

Rules (each sample read with the same bounded readers as validation, at most
``INFER_MAX_RECORDS`` records per sample):

* ``type``: every JSON type seen at that place; integers and numbers together are
  ``number``; a CSV cell is read as an integer (digits, no leading zero), a number, a boolean
  (``true``/``false``) or a string, and an empty cell as an absent key.
* ``required``: the keys present in every record (every object seen at that place).
* ``format``: ``date-time``, ``date``, ``email``, ``uuid``, ``ipv4``, ``ipv6`` or ``uri``
  (with ``://``) when every string seen there has it.
* ``enum``: for strings without a format, when there are at most 10 distinct values of at
  most 64 characters and each was seen at least twice on average.
* objects get ``properties``, arrays ``items``; no ``additionalProperties`` (the requester
  decides whether to close the schema).
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO

import jsonschema_rs
import orjson

from onboarding.validation.columnar import read_avro, read_parquet
from onboarding.validation.engine import choose_format, read_head, read_records, rewound
from onboarding.validation.jsontext import careful_loads, has_long_digits
from onboarding.validation.readers import READ_SIZE, Source
from onboarding.validation.types import Limits, Rejected, SampleFormat

INFER_MAX_RECORDS = 20_000
MAX_ENUM = 10
MAX_ENUM_LENGTH = 64
MAX_DEPTH = 32
_FORMATS = ["date-time", "date", "email", "uuid", "ipv4", "ipv6", "uri"]
_CHECKERS = {
    name: jsonschema_rs.Draft202012Validator({"format": name}, validate_formats=True)
    for name in _FORMATS
}
_CSV_INT = re.compile(r"-?(?:0|[1-9]\d*)\Z")
_CSV_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?\Z")


class _Enough(Exception):
    pass


class _Node:
    __slots__ = ("distinct", "formats", "items", "objects", "props", "seen", "strings", "types")

    def __init__(self) -> None:
        self.types: set[str] = set()
        self.objects = 0  # objects seen here
        self.seen = 0  # times this key was present in its parent object
        self.props: dict[str, _Node] = {}
        self.items: _Node | None = None
        self.strings = 0
        self.distinct: set[str] | None = set()  # None once past MAX_ENUM
        self.formats: set[str] | None = None  # None until the first string

    def add(self, value: Any, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            return
        if value is None:
            self.types.add("null")
        elif isinstance(value, bool):
            self.types.add("boolean")
        elif isinstance(value, int):
            self.types.add("integer")
        elif isinstance(value, float):
            self.types.add("integer" if value.is_integer() and abs(value) < 2**53 else "number")
        elif isinstance(value, str):
            self._add_string(value)
        elif isinstance(value, dict):
            self.types.add("object")
            self.objects += 1
            for key, child in value.items():
                node = self.props.setdefault(str(key), _Node())
                node.seen += 1
                node.add(child, depth + 1)
        elif isinstance(value, list):
            self.types.add("array")
            if self.items is None:
                self.items = _Node()
            for child in value:
                self.items.add(child, depth + 1)
        else:
            self.types.add("number")  # Decimal

    def _add_string(self, value: str) -> None:
        self.types.add("string")
        self.strings += 1
        if self.distinct is not None:
            self.distinct.add(value)
            if len(self.distinct) > MAX_ENUM or len(value) > MAX_ENUM_LENGTH:
                self.distinct = None
        candidates = set(_FORMATS) if self.formats is None else self.formats
        if candidates:
            self.formats = {
                name
                for name in candidates
                if _CHECKERS[name].is_valid(value) and (name != "uri" or "://" in value)
            }

    def schema(self) -> dict[str, Any]:
        types = set(self.types)
        if {"integer", "number"} <= types:
            types.discard("integer")
        out: dict[str, Any] = {}
        if not types:
            return out
        ordered = sorted(
            types, key=["object", "array", "string", "integer", "number", "boolean", "null"].index
        )
        out["type"] = ordered[0] if len(ordered) == 1 else ordered
        if "string" in types:
            fmt = next((f for f in _FORMATS if self.formats and f in self.formats), None)
            if fmt:
                out["format"] = fmt
            elif (
                self.distinct
                and types <= {"string", "null"}
                and self.strings >= 2 * len(self.distinct)
            ):
                enum: list[Any] = sorted(self.distinct)
                if "null" in types:
                    enum.append(None)
                out["enum"] = enum
        if "object" in types:
            out["properties"] = {name: node.schema() for name, node in self.props.items()}
            required = [name for name, node in self.props.items() if node.seen >= self.objects]
            if required:
                out["required"] = required
        if "array" in types and self.items is not None and self.items.types:
            out["items"] = self.items.schema()
        return out


class _InferSink:
    chunk_bytes = READ_SIZE
    screen = None

    def __init__(self, root: _Node, limits: Limits, csv: bool) -> None:
        self.root = root
        self.limits = limits
        self.csv = csv
        self.records = 0

    def record(self, value: Any) -> None:
        if self.records >= INFER_MAX_RECORDS:
            raise _Enough
        self.records += 1
        if self.csv and isinstance(value, dict):
            value = {k: _csv_value(v, self.limits) for k, v in value.items() if v != ""}
        self.root.add(value)

    def vouched(self, n: int) -> None:
        pass  # the columnar screen is off for inference (screen = None): never called

    def bad_record(self, message: str, path: str = "$") -> None:
        pass  # a sample with broken records still tells us about its good ones

    def flag(self, text: str) -> None:
        pass

    def ndjson_lines(self, chunk: bytes, lines_before: int) -> int:
        lines = chunk.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                if has_long_digits(line):
                    value = careful_loads(line, self.limits)
                else:
                    try:
                        value = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        value = careful_loads(line, self.limits)
            except ValueError:
                continue
            self.record(value)
        return len(lines)

    def finish(self) -> None:
        pass


def _csv_value(cell: str, limits: Limits) -> Any:
    if _CSV_INT.match(cell) and len(cell.lstrip("-")) <= limits.max_int_digits:
        return int(cell)
    if _CSV_NUMBER.match(cell):
        value = float(cell)
        return value if value not in (float("inf"), float("-inf")) else cell
    if cell.lower() in ("true", "false"):
        return cell.lower() == "true"
    return cell


def infer_schema(
    streams: list[BinaryIO],
    *,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so one shared default is safe
) -> dict:
    """A draft 2020-12 schema that every record of the samples validates against (see the
    module's rules). ValueError when a sample cannot be read or there are no records."""
    root = _Node()
    total = 0
    for number, stream in enumerate(streams, start=1):
        try:
            head = read_head(stream)
            fmt = choose_format(head, None)
            sink = _InferSink(root, limits, csv=fmt is SampleFormat.CSV)
            try:
                if fmt is SampleFormat.PARQUET:
                    read_parquet(rewound(stream, head), sink, limits)
                elif fmt is SampleFormat.AVRO:
                    read_avro(Source(stream, limits.max_file_bytes, head), sink, limits)
                else:
                    read_records(fmt, Source(stream, limits.max_file_bytes, head), sink, limits, {})
            except _Enough:
                pass
        except Rejected as exc:
            raise ValueError(f"sample {number} cannot be read: {exc.message}") from None
        total += sink.records
    if not total:
        raise ValueError("the samples hold no records")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    schema.update(root.schema())
    return schema
