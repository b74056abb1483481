"""A columnar screen in front of the record validator, for NDJSON and Parquet.

Most records of a sample are valid, and proving that one at a time (orjson builds Python
objects, jsonschema-rs converts and walks them) costs about twice what parsing alone does.
For schemas made of plain keywords the screen proves it a chunk at a time instead: pyarrow's
JSON reader parses the chunk into typed columns (C++, on Arrow's thread pool, without the
GIL), and vectorised checks over those columns (``is_in`` for enums, RE2 for patterns and
formats, comparisons for bounds and lengths) mark every row they cannot vouch for. Only
those rows go through the record validator (``orjson.loads`` + jsonschema-rs), which also
gives their error details, so the report is the same as the record path's. The work is a
pipeline on three threads: one parses chunk k+1 while another checks chunk k, and the caller
splits the next chunk into lines, runs its text checks and validates the unsure rows.

The screen may only err on the side of caution: a row it passes must be one the record
validator accepts. So the chunk takes the record path whenever the screen is unsure of the
chunk, and a row goes to the record validator whenever the screen is unsure of the row:

* Schemas: ``compile_screen`` returns None unless every keyword is one it checks exactly:
  ``type`` (one type, optionally with ``null``), string ``enum``/``const``, ``minLength``,
  ``maxLength``, ``pattern`` (a subset of regex syntax on which RE2 agrees with the
  validator's dialect or is the stricter), ``format`` (date-time, date, email, uuid, ipv4,
  with RE2 patterns for a strict subset of what the validator accepts), numeric bounds,
  ``properties``/``required``/``additionalProperties`` (true or false), ``items``,
  ``minItems``/``maxItems``/``uniqueItems``, and annotations. No ``$ref``, no combinators.
* Parsing: the reader's types are strict: a number in a string column, 1.0 in an integer
  column, a duplicate key or a field the schema does not name fails the read, and the chunk
  takes the record path. What the reader accepts beyond JSON is caught: invalid UTF-8 (the
  chunk is decoded first), NaN and Infinity (a number column vouches only for magnitudes
  below 2**63, which also leaves long integers to the record path's exact parse), lines
  holding anything but one object (each line must start with ``{`` and end with ``}`` and
  rows must equal lines). A chunk with a line nested deeper than the limit never reaches
  Arrow, whose parser recurses; the record path refuses the file.
* Missing and null look alike in a column, so a null is unsure unless both readings are
  valid (an optional field whose type allows null), or the chunk holds no ``null`` at all
  (then every null is a missing field).
* A chunk of more than ``MAX_ROWS`` lines (tiny records) takes the record path too.

When three chunks in a row were given back or had most rows unsure, the sink drops the
screen for the rest of the sample (``engine.SCREEN_MISSES``): a sample it cannot help with
then costs a few chunks more than the record path, not twice as much.

A file refused for its record count or for time may be refused one chunk later than on the
record path (the screen reads 4 MiB chunks, the record path 1 MiB), with the same message.

Parquet batches are typed columns already (no parse): ``Screen.batch_unsure_rows`` checks
them the same way, with two differences. A Parquet row holds every column, so a null is an
explicit null (valid where the type allows null). And the file's own types must be ones the
record path hands the validator unchanged (strings, whole numbers up to 32-bit unsigned,
floats, booleans, structs, lists); a batch with a timestamp, decimal, binary or map column
where the schema checks it, a column a closed object does not name, or a required column
missing, takes the record path. String columns read as dictionaries are checked once per
distinct value.

``tests/onboarding/test_validation_screen.py`` compares the screen's results with the record
path's on generated, mutated and hostile lines.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from operator import methodcaller
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from onboarding.validation.jsontext import deep_line, has_long_digits
from onboarding.validation.schema import ErrorSink

CHUNK_BYTES = 4 * 1024 * 1024  # what the NDJSON reader hands the screen at a time
# A chunk of more lines (shorter than 64 bytes on average) takes the record path: small
# records parse fast there, and Arrow's columns would cost more memory than the chunk.
MAX_ROWS = 65_536
BLOCK_BYTES = 1024 * 1024  # Arrow parses blocks of this size in parallel
MAX_SCHEMA_DEPTH = 16
# The C library's allocator gives a chunk's columns back once they are checked; Arrow's
# default (mimalloc) keeps them, which doubled the peak memory of a validation.
POOL = pa.system_memory_pool()

_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "$defs",
        "definitions",
        "title",
        "description",
        "examples",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
_COMMON = frozenset({"type", "enum", "const"}) | _ANNOTATIONS
_KEYWORDS = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset(),
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "minItems", "maxItems", "uniqueItems"}),
}
_SCALAR_ARROW = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}
_BOUNDS = {
    "minimum": pc.greater_equal,
    "maximum": pc.less_equal,
    "exclusiveMinimum": pc.greater,
    "exclusiveMaximum": pc.less,
}


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _is_whole(kind: pa.DataType) -> bool:
    return pa.types.is_signed_integer(kind) or kind in (pa.uint8(), pa.uint16(), pa.uint32())


# Parquet column types the record path hands the validator unchanged (str, int, float,
# bool, dict, list); anything else (timestamps, decimals, binary, maps) it converts, and a
# batch holding one where the schema has a check takes the record path.
_ACCEPTS = {
    "string": _is_text,
    "integer": _is_whole,
    "number": lambda k: _is_whole(k) or k in (pa.float32(), pa.float64()),
    "boolean": pa.types.is_boolean,
    "object": pa.types.is_struct,
    "array": lambda k: pa.types.is_list(k) or pa.types.is_large_list(k),
}
_EXACT_FLOAT = 2**53  # bounds beyond this could round differently in a double column
_BIG = pa.scalar(2.0**63)
_NONE = pa.array([], pa.int64())

# Formats, each as an RE2 pattern for a strict subset of the values the validator accepts;
# anything else is left to the validator (so 29-31 of a month, leap seconds and lower-case
# separators are checked there, not here).
_DAY = (
    r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])"  # any month, 1-28
    r"|(?:0[13-9]|1[0-2])-(?:29|30)"  # not February, 29-30
    r"|(?:0[13578]|1[02])-31)"  # the long months, 31
)
_DATE = r"(?:19|20)[0-9]{2}-" + _DAY
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
_OFFSET = r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,48}[A-Za-z0-9])?"
_LOCAL = r"[A-Za-z0-9_+-]{1,20}(?:\.[A-Za-z0-9_+-]{1,20}){0,2}"  # dot-atom, at most 62
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_FORMATS = {
    "date-time": f"^{_DATE}T{_TIME}{_OFFSET}$",
    "date": f"^{_DATE}$",
    "email": rf"^{_LOCAL}@(?:{_LABEL}\.){{1,3}}[A-Za-z]{{2,24}}$",
    "uuid": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    "ipv4": rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$",
}

# A pattern is screened only when it is made of these pieces, on which RE2 and the
# validator's regex dialect agree (or RE2 is the stricter one: \d and \w are ASCII in RE2).
_PATTERN_PIECE = re.compile(
    r"""
      [A-Za-z0-9 _@:,;=/'"<>!%&~`#-]      # a literal
    | \\[.\-+*?()\[\]{}|^$/\\]             # an escaped metacharacter
    | \\[dw]                               # ASCII digit or word character
    | \[(?:[A-Za-z0-9 _@:,;=/.+*?()|-]|\\[.\-\]\\^dw])+\]   # a class, not negated
    | \((?:\?:)?  | \)  | \|                # groups and alternation
    | [*+?](?:\?)?                         # quantifiers
    | \{[0-9]{1,4}(?:,[0-9]{0,4})?\}\??
    | ^\^ | \$$                            # anchors, at the ends only
    """,
    re.VERBOSE,
)


_STARTS = methodcaller("startswith", b"{")
_ENDS = methodcaller("endswith", (b"}", b"}\r"))


class Unsupported(Exception):
    """The schema uses something the screen cannot check exactly."""


class GiveUp(Exception):
    """This chunk is for the record path."""


@dataclass
class Node:
    """What the screen checks at one place in the schema."""

    kind: str
    nullable: bool
    enum: pa.Array | None = None
    min_length: int | None = None
    max_length: int | None = None
    regexes: list[str] = field(default_factory=list)
    bounds: list[tuple[Any, Any]] = field(default_factory=list)
    properties: dict[str, Node] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    closed: bool = False  # additionalProperties: false
    items: Node | None = None
    min_items: int | None = None
    max_items: int | None = None
    unique: bool = False

    def arrow_type(self) -> pa.DataType:
        if self.kind == "object":
            return pa.struct([pa.field(k, v.arrow_type()) for k, v in self.properties.items()])
        if self.kind == "array":
            assert self.items is not None
            return pa.list_(self.items.arrow_type())
        return _SCALAR_ARROW[self.kind]


# --- compiling ------------------------------------------------------------------------------


def compile_screen(schema: Any) -> Screen | None:
    """The screen for records of `schema` (an object schema), or None when it cannot
    check the schema exactly."""
    try:
        root = _node(schema, 0)
    except Unsupported:
        return None
    if root.kind != "object" or root.nullable:
        return None
    return Screen(root)


def _node(schema: Any, depth: int) -> Node:
    if not isinstance(schema, dict) or depth > MAX_SCHEMA_DEPTH:
        raise Unsupported
    types = _types(schema.get("type"))
    choices = _choices(schema)
    if choices is not None:
        if types is not None and "string" not in types:
            raise Unsupported
        kind = "string"
        nullable = None in choices and (types is None or "null" in types)
    else:
        if types is None:
            raise Unsupported
        rest = types - {"null"}
        if len(rest) != 1:
            raise Unsupported
        kind = rest.pop()
        nullable = "null" in types
    if kind not in _KEYWORDS or set(schema) - _COMMON - _KEYWORDS[kind]:
        raise Unsupported
    node = Node(kind=kind, nullable=nullable)
    if choices is not None:
        node.enum = pa.array([c for c in choices if c is not None], pa.string())
    if kind == "string":
        _string(node, schema)
    elif kind in ("integer", "number"):
        _number(node, schema)
    elif kind == "object":
        _object(node, schema, depth)
    elif kind == "array":
        _array(node, schema, depth)
    return node


def _types(value: Any) -> set[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {value}
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, str) for v in value)
        and len(set(value)) == len(value)
    ):
        return set(value)
    raise Unsupported


def _choices(schema: dict) -> list[Any] | None:
    if "const" in schema:
        if "enum" in schema:
            raise Unsupported
        choices = [schema["const"]]
    elif "enum" in schema:
        choices = schema["enum"]
    else:
        return None
    if not isinstance(choices, list) or not choices:
        raise Unsupported
    if not all(c is None or isinstance(c, str) for c in choices):
        raise Unsupported
    if all(c is None for c in choices):
        raise Unsupported
    return choices


def _count(schema: dict, key: str) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Unsupported
    return value


def _string(node: Node, schema: dict) -> None:
    node.min_length = _count(schema, "minLength")
    node.max_length = _count(schema, "maxLength")
    if "pattern" in schema:
        node.regexes.append(safe_pattern(schema["pattern"]))
    if "format" in schema:
        name = schema["format"]
        if name not in _FORMATS:
            raise Unsupported
        node.regexes.append(_FORMATS[name])


def safe_pattern(pattern: Any) -> str:
    """`pattern` when RE2 reads it the way the validator does (or more strictly)."""
    if not isinstance(pattern, str) or len(pattern) > 200:
        raise Unsupported
    position = 0
    depth = 0
    while position < len(pattern):
        piece = _PATTERN_PIECE.match(pattern, position)
        if (
            piece is None
            or (piece.group() == "^" and position)
            or (piece.group() == "$" and piece.end() != len(pattern))
        ):
            raise Unsupported
        text = piece.group()
        if text.startswith("("):
            depth += 1
        elif text == ")":
            depth -= 1
            if depth < 0:
                raise Unsupported
        position = piece.end()
    if depth:
        raise Unsupported
    try:
        pc.match_substring_regex(pa.array([""]), pattern)  # RE2 must compile it too
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise Unsupported from None
    return pattern


def _number(node: Node, schema: dict) -> None:
    for key, compare in _BOUNDS.items():
        if key not in schema:
            continue
        bound = schema[key]
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise Unsupported
        if not -_EXACT_FLOAT < bound < _EXACT_FLOAT:
            raise Unsupported
        if node.kind == "integer" and isinstance(bound, int):
            scalar = pa.scalar(bound, pa.int64())
        else:
            scalar = pa.scalar(float(bound), pa.float64())
        node.bounds.append((compare, scalar))


def _object(node: Node, schema: dict, depth: int) -> None:
    properties = schema.get("properties", {})
    if not isinstance(properties, dict) or not properties:
        raise Unsupported
    node.properties = {name: _node(sub, depth + 1) for name, sub in properties.items()}
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(r in properties for r in required):
        raise Unsupported
    node.required = frozenset(required)
    extra = schema.get("additionalProperties", True)
    if not (extra is False or extra is True or extra == {}):
        raise Unsupported
    node.closed = extra is False


def _array(node: Node, schema: dict, depth: int) -> None:
    node.items = _node(schema.get("items"), depth + 1)
    node.min_items = _count(schema, "minItems")
    node.max_items = _count(schema, "maxItems")
    unique = schema.get("uniqueItems", False)
    if not isinstance(unique, bool) or (unique and node.items.kind in ("object", "array")):
        raise Unsupported
    node.unique = unique


# --- screening ------------------------------------------------------------------------------


class Screen:
    """Screens chunks of NDJSON lines and batches of Parquet rows for one compiled schema."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.arrow_schema = pa.schema(
            [pa.field(k, v.arrow_type()) for k, v in root.properties.items()]
        )
        self.parse_options = pj.ParseOptions(
            explicit_schema=self.arrow_schema,
            newlines_in_values=False,
            # A field the schema does not name fails the read, so no value goes unseen
            # (where the schema allows extra fields, such a chunk takes the record path).
            unexpected_field_behavior="error",
        )

    def read(self, chunk: bytes) -> pa.StructArray:
        options = pj.ReadOptions(use_threads=True, block_size=BLOCK_BYTES)
        try:
            table = pj.read_json(
                pa.BufferReader(chunk),
                read_options=options,
                parse_options=self.parse_options,
                memory_pool=POOL,
            )
        except (pa.ArrowException, ValueError):
            raise GiveUp from None
        if not table.num_rows:
            raise GiveUp
        return table.to_struct_array().combine_chunks()

    def unsure_rows(self, rows: pa.StructArray, *, absent: bool = False) -> list[int]:
        """Indices of the rows the screen cannot vouch for. `absent`: the chunk holds no
        null literal, so a null in a column is a field the record does not have."""
        return _failing(_ok(self.root, rows, null_ok=False, absent=absent))

    def batch_unsure_rows(self, batch: pa.RecordBatch) -> list[int] | None:
        """For a batch of Parquet rows: the rows the screen cannot vouch for, or None when
        the whole batch is for the record path."""
        rows = pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema))
        try:
            return _failing(_ok(self.root, rows, null_ok=False, columns=True))
        except (GiveUp, pa.ArrowException):
            return None

    def _check(self, parsed: Future, chunk: bytes) -> tuple[int, list[int]]:
        rows = parsed.result()
        return len(rows), self.unsure_rows(rows, absent=b"null" not in chunk)

    def start(self, chunk: bytes, *, max_depth: int) -> Job:
        """Start parsing and checking `chunk` on the screen's threads (Arrow works without
        the GIL) and run the text checks it needs here meanwhile; ``Job.finish`` takes it
        from there. A chunk with a line nested deeper than `max_depth` never reaches Arrow
        (its parser recurses, and the record path refuses the file anyway)."""
        return Job(self, chunk, max_depth)


class Job:
    """One chunk on its way through the screen."""

    def __init__(self, screen: Screen, chunk: bytes, max_depth: int) -> None:
        self.chunk = chunk
        self.future: Future | None = None
        self.line_count = chunk.count(b"\n") + 1
        self.unsure = 0  # rows the screen could not vouch for, once finished
        self.lines: list[bytes] = []
        self.usable = False
        if self.line_count > MAX_ROWS or deep_line(chunk, max_depth) >= 0:
            return
        # Two stages on two threads: this chunk's parse can run while the previous one's
        # checks do. Each is a queue of one thread, so chunks keep their order.
        parsed = _executor("parse").submit(screen.read, chunk)
        self.future = _executor("check").submit(screen._check, parsed, chunk)
        self.lines = chunk.split(b"\n")
        self.expected = len(self.lines) - (self.lines[-1] == b"")
        # Lines that are not one object each and invalid UTF-8 are for the record path.
        self.usable = (
            self.expected > 0 and _one_object_per_line(self.lines, self.expected) and _utf8(chunk)
        )

    def finish(
        self, validator: Any, room: int
    ) -> tuple[int, int, list[tuple[int, str, str]]] | None:
        """(records, invalid, errors) of the chunk, or None when it is for the record path."""
        if self.future is None:
            return None
        try:
            count, unsure = self.future.result()
        except GiveUp:
            return None
        if not self.usable or count != self.expected:
            return None
        self.unsure = len(unsure)
        sink = ErrorSink(validator, room)
        if not unsure:
            return self.expected, 0, sink.errors
        picked = [self.lines[i] for i in unsure]
        if has_long_digits(b"\n".join(picked)):
            return None  # orjson would round such a number; the record path parses it exactly
        try:
            values = list(map(orjson.loads, picked))
            outcomes = list(map(validator.is_valid, values))
        except (ValueError, TypeError, OverflowError):
            return None  # the record path knows what to say about these lines
        invalid = outcomes.count(False)
        for index, ok, value in zip(unsure, outcomes, values, strict=True):
            if len(sink.errors) >= room:
                break
            if not ok:
                sink.add(index + 1, value)
        return self.expected, invalid, sink.errors

    def wait(self) -> None:
        if self.future is not None:
            wait([self.future])


def _utf8(chunk: bytes) -> bool:
    if chunk.isascii():
        return True
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_EXECUTORS: dict[tuple[int, str], ThreadPoolExecutor] = {}
_EXECUTORS_LOCK = threading.Lock()


def _executor(stage: str) -> ThreadPoolExecutor:
    """One thread per stage and process (a forked Celery child makes its own)."""
    key = (os.getpid(), stage)
    with _EXECUTORS_LOCK:
        if key not in _EXECUTORS:
            _EXECUTORS[key] = ThreadPoolExecutor(1, thread_name_prefix=f"screen-{stage}")
        return _EXECUTORS[key]


def _one_object_per_line(lines: list[bytes], expected: int) -> bool:
    """Whether each of the first `expected` lines starts with ``{`` and ends with ``}``.
    Then no object spans two lines (after ``}`` JSON allows no ``{``, and a string cannot
    hold a newline), so with as many rows as lines, each line is exactly one row."""
    head = lines[:expected] if expected < len(lines) else lines
    return sum(map(_STARTS, head)) == expected and sum(map(_ENDS, head)) == expected


def _ok(node: Node, arr: Any, *, null_ok: bool, columns: bool = False, absent: bool = False) -> Any:
    """Per element of `arr`: True when the screen vouches for it, never null; None when it
    vouches for all of them. A null element is vouched for only when `null_ok`. With
    `columns` (Parquet), `arr` holds the file's own types, which must be ones the record
    path passes on unchanged. With `absent` (NDJSON without null literals), a null field is
    a missing one."""
    if columns and not _ACCEPTS[node.kind](arr.type):
        raise GiveUp
    checks: list[Any] = []
    kind = node.kind
    if kind == "string":
        if pa.types.is_dictionary(arr.type):
            # Check each distinct value once, then look the answers up per row.
            answers = _ok(node, arr.dictionary, null_ok=False)
            return _with_nulls(
                arr, None if answers is None else pc.take(answers, arr.indices), null_ok
            )
        if node.enum is not None:
            checks.append(pc.is_in(arr, value_set=node.enum))
        if node.min_length is not None or node.max_length is not None:
            checks.extend(_within(pc.utf8_length(arr), node.min_length, node.max_length))
        checks.extend(pc.match_substring_regex(arr, regex) for regex in node.regexes)
    elif kind in ("integer", "number"):
        if kind == "number":
            checks.append(_moderate(arr))
        checks.extend(compare(arr, bound) for compare, bound in node.bounds)
    elif kind == "object":
        checks.extend(_object_checks(node, arr, columns, absent))
    elif kind == "array":
        assert node.items is not None
        checks.extend(_list_checks(node, arr, columns, absent))
    return _with_nulls(arr, _all(checks), null_ok)


def _with_nulls(arr: Any, ok: Any, null_ok: bool) -> Any:
    """`ok` (the checks of the non-null elements; None: all passed) with the nulls decided."""
    if not arr.null_count:
        return ok
    valid = pc.is_valid(arr)
    ok = valid if ok is None else pc.and_(valid, ok)
    return pc.fill_null(pc.if_else(valid, ok, null_ok), False)


def _object_checks(node: Node, arr: Any, columns: bool, absent: bool) -> list[Any]:
    if not columns:  # NDJSON: the reader's types are the schema's, every field in place
        return [
            _ok(
                sub,
                pc.struct_field(arr, [i]),
                null_ok=(sub.nullable or absent) and name not in node.required,
                absent=absent,
            )
            for i, (name, sub) in enumerate(node.properties.items())
        ]
    # Parquet: a row holds every column, null or not, so a null is an explicit null.
    names = [arr.type.field(i).name for i in range(arr.type.num_fields)]
    if len(set(names)) != len(names) or (node.closed and set(names) - set(node.properties)):
        raise GiveUp
    checks = []
    for name, sub in node.properties.items():
        if name not in names:
            if name in node.required:
                raise GiveUp  # every row lacks it: the record path says so
            continue
        values = pc.struct_field(arr, [names.index(name)])
        checks.append(_ok(sub, values, null_ok=sub.nullable, columns=True))
    return checks


def _list_checks(node: Node, arr: Any, columns: bool, absent: bool) -> list[Any]:
    assert node.items is not None
    checks: list[Any] = []
    if node.min_items is not None or node.max_items is not None:
        checks.extend(_within(pc.list_value_length(arr), node.min_items, node.max_items))
    values = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr)
    if len(values) != len(parents):
        raise GiveUp
    if len(values):
        item_ok = _ok(
            node.items, values, null_ok=node.items.nullable, columns=columns, absent=absent
        )
        bad = _NONE if item_ok is None else pc.filter(parents, pc.invert(item_ok))
        if node.unique:
            bad = pa.concat_arrays([bad, _repeated(values, parents)])
        if len(bad):
            checks.append(pc.invert(pc.is_in(_positions(len(arr)), value_set=bad)))
    return checks


def _within(lengths: Any, low: int | None, high: int | None) -> list[Any]:
    """Checks that `lengths` lie within the bounds that are set."""
    checks = []
    if low is not None:
        checks.append(pc.greater_equal(lengths, low))
    if high is not None:
        checks.append(pc.less_equal(lengths, high))
    return checks


def _repeated(values: Any, parents: Any) -> pa.Int64Array:
    """The parents (lists) in which some value occurs twice. Each (list, value) pair becomes
    one integer; in the usual case they are all distinct and one ``unique`` shows it."""
    if pa.types.is_floating(values.type):
        values = pc.add(values, pa.scalar(0.0))  # -0.0 is 0 to JSON Schema
    codes = pc.dictionary_encode(values).indices.cast(pa.int64())  # a null is its own code
    codes = pc.fill_null(codes, -1)
    width = len(values) + 1
    keys = pc.add(pc.multiply(parents.cast(pa.int64()), width), pc.add(codes, 1))
    if len(pc.unique(keys)) == len(keys):
        return _NONE
    counts = pc.value_counts(keys)
    twice = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    return pc.divide(twice, width)


def _moderate(arr: Any) -> Any:
    """False for NaN, Infinity (JSON has neither, Arrow's parser reads them) and numbers
    from 2**63 on, which only a long run of digits can write: the record path parses those
    exactly (and refuses one longer than the limit)."""
    return pc.less(pc.abs(arr), _BIG)


def _failing(ok: Any) -> list[int]:
    """The positions `ok` does not vouch for (None vouches for all)."""
    return [] if ok is None else pc.indices_nonzero(pc.invert(ok)).to_pylist()


def _all(checks: list[Any]) -> Any:
    """All of `checks` (None among them: nothing to check), or None for none at all."""
    ok = None
    for check in checks:
        if check is not None:
            ok = check if ok is None else pc.and_(ok, check)
    return ok


def _trues(n: int) -> pa.BooleanArray:
    return pc.fill_null(pa.nulls(n, pa.bool_()), True)


def _positions(n: int) -> pa.Int64Array:
    return pc.indices_nonzero(_trues(n)).cast(pa.int64())
