"""Streaming readers for the text formats (NDJSON, one JSON document, CSV).

A reader pushes what it finds into a sink (``RecordSink``): ``record(value)`` for each record,
``bad_record(message)`` for one it cannot parse, ``flag(text)`` for something worth a look,
and raises ``Rejected`` for a problem with the file as a whole. Nothing is read twice and no
more than one record (at most ``max_line_bytes``) plus one read buffer is held at a time.

CSV values are strings. Where the schema's top-level ``properties`` give a column a ``type``
without ``"string"``, a cell is converted when that is unambiguous, and kept as the string
otherwise (so the validator reports the type error with the original text):

* ``integer``: an optional sign and digits (``-12``, ``007``) → int;
* ``number``: that, or a decimal / exponent form (``3.5``, ``.5``, ``1e3``) → int or float;
* ``boolean``: ``true`` / ``false`` in any letter case → bool;
* an empty cell → ``null`` when the type allows null, otherwise the key is left out (so
  ``required`` catches it). A column whose type includes ``"string"`` keeps every cell as
  text, the empty cell as ``""``; so does a column with no ``type`` (local ``$ref``\\ s are
  followed to find one).

A cell that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return (spreadsheet
formula injection) is flagged, per column, unless it is a plain number such as ``-12``.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any, BinaryIO, Protocol

import orjson

from onboarding.validation.formats import BOM
from onboarding.validation.jsontext import careful_loads, has_long_digits
from onboarding.validation.types import Limits, Rejected, human_bytes

READ_SIZE = 1024 * 1024
_SKIP = re.compile(rb'(?:[^"\[\]{}]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_SCALAR = re.compile(rb'(?:[^"\[\]{},]++|"(?:[^"\\]++|\\.)*+")*+', re.DOTALL)
_WS = re.compile(rb"[ \t\r\n]*+")


def _skip(pattern: re.Pattern[bytes], buffer: bytes | bytearray, pos: int) -> int:
    """Where a run of `pattern` starting at `pos` ends (each pattern above matches the
    empty string, so there is always a match)."""
    found = pattern.match(buffer, pos)
    return found.end() if found is not None else pos


class RecordSink(Protocol):
    records: int
    chunk_bytes: int  # how much NDJSON to read before handing the sink its whole lines
    screen: Any  # the columnar screen (screen.py) Parquet batches go through, or None

    def vouched(self, n: int) -> None: ...

    def record(self, value: Any) -> None: ...
    def bad_record(self, message: str, path: str = "$") -> None: ...
    def flag(self, text: str) -> None: ...
    def ndjson_lines(self, chunk: bytes, lines_before: int) -> int: ...
    def finish(self) -> None: ...


class Source(io.RawIOBase):
    """The caller's stream, counted, refusing to read past ``max_bytes``; `prefix` holds
    bytes already taken from the stream (the head used to detect the format)."""

    def __init__(self, stream: BinaryIO, max_bytes: int, prefix: bytes = b"") -> None:
        super().__init__()
        self._stream = stream
        self._prefix = memoryview(prefix)
        self._max = max_bytes
        self.bytes_read = len(prefix)
        self._check()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(view))
        if not data:
            return 0
        n = len(data)
        view[:n] = data
        self.bytes_read += n
        self._check()
        return n

    def read_some(self, size: int = READ_SIZE) -> bytes:
        """Up to `size` bytes, b"" only at the end of the stream."""
        if self._prefix:
            data = bytes(self._prefix[:size])
            self._prefix = self._prefix[size:]
            return data
        data = self._stream.read(size) or b""
        self.bytes_read += len(data)
        self._check()
        return data

    def _check(self) -> None:
        if self.bytes_read > self._max:
            raise Rejected(f"The file is larger than the limit of {human_bytes(self._max)}.")


def read_ndjson(source: Source, sink: RecordSink, limits: Limits) -> None:
    """Hand the sink chunks of whole lines (it answers how many lines each held); a line
    longer than the limit refuses the file as soon as that many bytes have been read without
    a newline."""
    size = min(sink.chunk_bytes, limits.max_line_bytes)
    carry = b""
    lines_before = 0
    first = True
    while True:
        data = source.read_some(size)
        if first:
            data, first = data.removeprefix(BOM), False
        if not data:
            if carry:
                sink.ndjson_lines(carry, lines_before)
            break
        cut = data.rfind(b"\n")
        if cut < 0:
            carry += data
            _check_line_length(len(carry), lines_before, limits)
            continue
        # Every line but the first lies inside `data`, which is no longer than the limit.
        _check_line_length(len(carry) + data.find(b"\n"), lines_before, limits)
        chunk = b"".join((carry, memoryview(data)[:cut])) if carry else data[:cut]
        carry = data[cut + 1 :]
        lines_before += sink.ndjson_lines(chunk, lines_before)
    sink.finish()


def _check_line_length(length: int, lines_before: int, limits: Limits) -> None:
    if length > limits.max_line_bytes:
        raise Rejected(
            f"Line {lines_before + 1} is longer than the limit of "
            f"{human_bytes(limits.max_line_bytes)}."
        )


def read_json_document(source: Source, sink: RecordSink, limits: Limits) -> None:
    """One JSON document: an array of records (each element one record) or one object.

    The document is split into elements by a string-aware scanner without parsing it, so
    memory holds one element at a time and nesting is measured before any parser sees it.
    """
    scanner = _Scanner(source, limits)
    scanner.skip_ws()
    opener = scanner.peek()
    if opener not in (b"[", b"{"):
        raise Rejected("A JSON sample must be an array of records or one object.")
    if opener == b"{":
        _take(sink, scanner.container(record=1), limits, 1)
    else:
        scanner.advance(1)
        scanner.skip_ws()
        if scanner.peek() == b"]":
            scanner.advance(1)
        else:
            while True:
                record = sink.records + 1
                if scanner.peek() in (b"[", b"{"):
                    element = scanner.container(record)
                else:
                    element = scanner.scalar(record)
                _take(sink, element, limits, record)
                scanner.skip_ws()
                token = scanner.peek()
                scanner.advance(1)
                if token == b"]":
                    break
                if token != b",":
                    raise scanner.malformed("expected , or ] after a record")
                scanner.skip_ws()
    scanner.skip_ws()
    if scanner.peek():
        raise scanner.malformed("unexpected content after the end of the document")
    sink.finish()


def _take(sink: RecordSink, element: bytes, limits: Limits, record: int) -> None:
    try:
        if has_long_digits(element):
            value = careful_loads(element, limits)
        else:
            try:
                value = orjson.loads(element)
            except orjson.JSONDecodeError:
                value = careful_loads(element, limits)
    except Rejected as exc:
        raise Rejected(f"Record {record} {exc.message}.") from None
    except ValueError as exc:
        sink.bad_record(str(exc))
        return
    sink.record(value)


class _Scanner:
    """A window over the stream holding the current element; offsets are absolute."""

    def __init__(self, source: Source, limits: Limits) -> None:
        self.source = source
        self.limits = limits
        self.buffer = b""
        self.base = 0  # absolute offset of buffer[0]
        self.pos = 0  # index into buffer
        self.eof = False
        self.first = True

    def _more(self) -> bool:
        if self.eof:
            return False
        data = self.source.read_some(READ_SIZE)
        if self.first:
            data, self.first = data.removeprefix(BOM), False
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    def _release(self) -> None:
        """Drop what lies before the current position."""
        if self.pos > READ_SIZE:
            self.base += self.pos
            self.buffer = self.buffer[self.pos :]
            self.pos = 0

    def peek(self) -> bytes:
        while self.pos >= len(self.buffer):
            if not self._more():
                return b""
        return self.buffer[self.pos : self.pos + 1]

    def advance(self, n: int) -> None:
        self.pos += n

    def skip_ws(self) -> None:
        while True:
            self.pos = _skip(_WS, self.buffer, self.pos)
            if self.pos < len(self.buffer) or not self._more():
                return

    def malformed(self, what: str) -> Rejected:
        return Rejected(
            f"The JSON document is malformed at byte {self.base + self.pos + 1}: {what}."
        )

    def _grow(self, start: int, record: int) -> None:
        if len(self.buffer) - start > self.limits.max_line_bytes:
            raise Rejected(
                f"Record {record} is larger than the limit of "
                f"{human_bytes(self.limits.max_line_bytes)}."
            )
        if not self._more():
            raise Rejected(f"The JSON document is cut off: it ends inside record {record}.")

    def container(self, record: int) -> bytes:
        self._release()
        start = self.pos
        depth = 0
        limit = self.limits.max_depth
        while True:
            self.pos = _skip(_SKIP, self.buffer, self.pos)
            if self.pos >= len(self.buffer) or self.buffer[self.pos] == 0x22:  # end or open "
                self._grow(start, record)
                continue
            byte = self.buffer[self.pos]
            self.pos += 1
            if byte in (0x5B, 0x7B):  # [ {
                depth += 1
                if depth > limit:
                    raise Rejected(f"Record {record} is nested more than {limit} levels deep.")
            else:
                depth -= 1
                if depth == 0:
                    return self.buffer[start : self.pos]
                if depth < 0:  # pragma: no cover - the scanner only enters on [ or {
                    raise self.malformed("unbalanced brackets")

    def scalar(self, record: int) -> bytes:
        self._release()
        start = self.pos
        while True:
            self.pos = _skip(_SCALAR, self.buffer, self.pos)
            if self.pos >= len(self.buffer) or self.buffer[self.pos] == 0x22:
                self._grow(start, record)
                continue
            if self.buffer[self.pos] not in (0x2C, 0x5D):  # , ]
                raise self.malformed("a bracket inside a value")
            return self.buffer[start : self.pos]


# --- CSV -----------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?\d+\Z")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")
_FORMULA_START = frozenset("=+-@\t\r")
_MAX_FLAG_ROWS = 10
MAX_CSV_COLUMNS = 10_000


def column_types(schema: dict) -> dict[str, set[str]]:
    """The declared types of each top-level property (local $refs followed)."""
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    found = {}
    for name, node in properties.items():
        node = _follow(schema, node)
        kind = node.get("type") if isinstance(node, dict) else None
        if isinstance(kind, str):
            found[name] = {kind}
        elif isinstance(kind, list) and all(isinstance(k, str) for k in kind):
            found[name] = set(kind)
    return found


def _follow(schema: dict, node: Any) -> Any:
    for _ in range(8):
        if not isinstance(node, dict) or not isinstance(node.get("$ref"), str):
            return node
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return node
        target: Any = schema
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or part not in target:
                return node
            target = target[part]
        node = target
    return node


class _Converter:
    def __init__(self, types: set[str], limits: Limits) -> None:
        self.types = types
        self.max_digits = limits.max_int_digits

    def __call__(self, cell: str) -> tuple[bool, Any]:
        """(keep, value): keep False leaves the key out of the record."""
        types = self.types
        if cell == "":
            return ("null" in types, None)
        if _INT.match(cell) and types & {"integer", "number"}:
            if len(cell.lstrip("+-")) > self.max_digits:
                raise Rejected(f"has an integer with more than {self.max_digits} digits")
            return True, int(cell)
        if "number" in types and _NUMBER.match(cell):
            value = float(cell)
            return True, (value if value not in (float("inf"), float("-inf")) else cell)
        if "boolean" in types and cell.lower() in ("true", "false"):
            return True, cell.lower() == "true"
        return True, cell


def read_csv(source: Source, sink: RecordSink, limits: Limits, schema: dict) -> None:
    buffered = io.BufferedReader(source, READ_SIZE)
    line_no = 0

    def lines() -> Any:
        nonlocal line_no
        while True:
            raw = buffered.readline(limits.max_line_bytes + 1)
            if not raw:
                return
            line_no += 1
            if len(raw) > limits.max_line_bytes:
                raise Rejected(
                    f"Line {line_no} is longer than the limit of "
                    f"{human_bytes(limits.max_line_bytes)}."
                )
            if line_no == 1:
                raw = raw.removeprefix(BOM)
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Rejected(
                    f"Line {line_no} is not valid UTF-8 (at its byte {exc.start + 1})."
                ) from None

    reader = csv.reader(lines(), strict=True)
    header = _next_row(reader, lambda: line_no)
    if header is None:
        raise Rejected("The CSV file has no header row.")
    _check_header(header)
    width = len(header)
    types = column_types(schema)
    converters = [
        (i, name, _Converter(types[name], limits))
        for i, name in enumerate(header)
        if name in types and "string" not in types[name]
    ]
    formulas: dict[int, list[int]] = {}
    formula_counts: dict[int, int] = {}
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            if "field limit" in str(exc):
                raise Rejected(
                    f"Line {line_no} has a field longer than the CSV limit ({exc})."
                ) from None
            sink.bad_record(f"line {line_no} is not valid CSV: {exc}")
            continue
        if row is None:
            break
        if not row:
            continue  # a blank line
        record = sink.records + 1
        if len(row) != width:
            sink.bad_record(f"the row has {len(row)} cells but the header has {width}")
            continue
        for i, cell in enumerate(row):
            if cell and cell[0] in _FORMULA_START and not _NUMBER.match(cell):
                rows = formulas.setdefault(i, [])
                if len(rows) < _MAX_FLAG_ROWS:
                    rows.append(record)
                formula_counts[i] = formula_counts.get(i, 0) + 1
        value = dict(zip(header, row, strict=True))
        try:
            for i, name, convert in converters:
                keep, converted = convert(row[i])
                if keep:
                    value[name] = converted
                else:
                    del value[name]
        except Rejected as exc:
            raise Rejected(f"Record {record} (line {line_no}) {exc.message}.") from None
        sink.record(value)
    for i in sorted(formulas):
        listed = ", ".join(str(r) for r in formulas[i])
        more = formula_counts[i] - len(formulas[i])
        extra = f" and {more} more" if more else ""
        plural = "s" if formula_counts[i] > 1 else ""
        sink.flag(f"CSV formula cells in row{plural} {listed}{extra} (column {header[i]!r})")
    sink.finish()


def _next_row(reader: Any, line: Any) -> list[str] | None:
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            raise Rejected(f"The CSV header (line {line()}) cannot be read: {exc}.") from None
        if row is None or row:
            return row


def _check_header(header: list[str]) -> None:
    if len(header) > MAX_CSV_COLUMNS:
        raise Rejected(
            f"The CSV header has {len(header):,} columns, more than the limit of "
            f"{MAX_CSV_COLUMNS:,}."
        )
    seen = set()
    for i, name in enumerate(header, start=1):
        if not name.strip():
            raise Rejected(f"The CSV header has no name for column {i}.")
        if name in seen:
            raise Rejected(f"The CSV header repeats the column name {name[:80]!r}.")
        seen.add(name)
