"""Parquet and Avro samples, read with their amplification bounded.

Values become JSON-like before validation: timestamps become RFC 3339 strings (a timestamp
without a time zone is taken as UTC and written with ``Z``), dates and times ISO 8601
strings, UUIDs strings, bytes base64 strings, Avro/Parquet maps objects; decimals stay
``Decimal`` (the validator compares them exactly); a Parquet null is ``null``.

Parquet: the footer is read first and the file is refused when its row count, its declared
uncompressed size, or the decoded size of its fixed-width columns is over the limits. Rows are
then read in small batches, string and binary columns as dictionaries (a value repeated a
million times is decoded once), the decoded bytes are counted against
``max_decompressed_bytes``, and after the first batch the total is projected from it. When the
schema allows a columnar screen (``screen.py``), a batch is checked as columns and only the
rows the screen cannot vouch for become Python objects for the validator (batches are then
bigger: the 8 MiB target, up to 65,536 rows).

Avro: the object container is parsed here, block by block: declared record counts and block
sizes are checked, each block is decompressed with an output cap (deflate, bzip2, xz; null
codec too), the sync marker is checked, and only then does fastavro decode the records of
that block. A writer schema with arrays of zero-size items (``null``, empty records), which
could expand without limit, is refused.
"""

from __future__ import annotations

import base64
import bz2
import datetime as dt
import io
import lzma
import uuid
import zlib
from decimal import Decimal
from typing import Any, BinaryIO

import orjson

from onboarding.validation.readers import RecordSink
from onboarding.validation.types import Limits, Rejected, human_bytes

BATCH_TARGET_BYTES = 8 * 1024 * 1024
MAX_BATCH_ROWS = 4096
SCREEN_BATCH_ROWS = 65_536
MAX_AVRO_HEADER_BYTES = 1024 * 1024
MAX_AVRO_META_ENTRIES = 1000
_FIXED_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


def jsonable(value: Any) -> Any:
    """A value from pyarrow or fastavro as the validator should see it."""
    if value is None or isinstance(value, str | bool | int | float | Decimal):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): jsonable(v) for k, v in value}  # a map, as pyarrow lists it
        return [jsonable(v) for v in value]
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat() + "Z"
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"PT{value.total_seconds():g}S"
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


# --- Parquet -------------------------------------------------------------------------------


def seekable_copy(stream: BinaryIO, limits: Limits) -> tuple[BinaryIO, int]:
    """The stream itself when it can seek (with its size), else its bytes in memory."""
    try:
        if stream.seekable():
            start = stream.tell()
            size = stream.seek(0, io.SEEK_END) - start
            stream.seek(start)
            if start:
                data = stream.read(limits.max_file_bytes + 1)
                return io.BytesIO(data), len(data)
            return stream, size
    except (OSError, ValueError):
        pass
    data = stream.read(limits.max_file_bytes + 1)
    return io.BytesIO(data), len(data)


def read_parquet(stream: BinaryIO, sink: RecordSink, limits: Limits) -> int:
    """Push the rows of a Parquet file into `sink`; returns the file's size."""
    # import here: pyarrow is slow to import and only Parquet samples need it
    import pyarrow as pa
    import pyarrow.parquet as pq

    source, size = seekable_copy(stream, limits)
    if size > limits.max_file_bytes:
        raise Rejected(
            f"The file is larger than the limit of {human_bytes(limits.max_file_bytes)}."
        )
    try:
        probe = pq.ParquetFile(
            source,
            pre_buffer=False,
            thrift_string_size_limit=16 * 1024 * 1024,
            thrift_container_size_limit=1_000_000,
        )
        _check_parquet_metadata(probe.metadata, probe.schema, limits, size)
        arrow_schema = probe.schema_arrow
        as_dictionary = [
            f.name
            for f in arrow_schema
            if pa.types.is_string(f.type)
            or pa.types.is_large_string(f.type)
            or pa.types.is_binary(f.type)
            or pa.types.is_large_binary(f.type)
        ]
        source.seek(0)
        parquet = pq.ParquetFile(
            source,
            pre_buffer=False,
            read_dictionary=as_dictionary,
            thrift_string_size_limit=16 * 1024 * 1024,
            thrift_container_size_limit=1_000_000,
        )
        rows = max(parquet.metadata.num_rows, 1)
        estimate = _decoded_estimate(parquet.metadata, parquet.schema)
        # Rows become Python objects one batch at a time, unless the screen vouches for
        # them (then only its unsure rows do, and bigger batches cost less per row).
        cap = SCREEN_BATCH_ROWS if sink.screen else MAX_BATCH_ROWS
        batch_rows = max(1, min(cap, BATCH_TARGET_BYTES * rows // max(estimate, 1)))
        convert = {f.name: _needs_conversion(f.type, pa) for f in arrow_schema}
        decoded = 0
        dictionaries: dict[tuple, list] = {}
        lengths: dict[tuple, Any] = {}
        for batch in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
            decoded += _batch_bytes(batch, pa, lengths)
            if decoded > limits.max_decompressed_bytes:
                raise Rejected(_expands(decoded, limits))
            if sink.records == 0 and batch.num_rows:
                projected = decoded * rows // batch.num_rows
                if projected > limits.max_decompressed_bytes:
                    raise Rejected(_expands(projected, limits, about=True))
            unsure = sink.screen.batch_unsure_rows(batch) if sink.screen else None
            if unsure is None:
                for row in _rows(batch, pa, convert, dictionaries):
                    sink.record(row)
                continue
            # The screen vouched for the other rows; these go through the validator.
            done = 0
            for index, row in zip(unsure, _picked_rows(batch, unsure, pa, convert), strict=True):
                sink.vouched(index - done)
                sink.record(row)
                done = index + 1
            sink.vouched(batch.num_rows - done)
    except Rejected:
        raise
    except (pa.ArrowException, OSError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise Rejected(f"The file is not a readable Parquet file: {_brief(exc)}") from None
    sink.finish()
    return size


def _check_parquet_metadata(metadata: Any, schema: Any, limits: Limits, size: int) -> None:
    if metadata.num_rows > limits.max_records:
        raise Rejected(
            f"The Parquet file declares {metadata.num_rows:,} rows, more than the limit of "
            f"{limits.max_records:,}."
        )
    declared = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            declared += max(chunk.total_uncompressed_size, 0)
            if chunk.total_compressed_size > size or chunk.total_compressed_size < 0:
                raise Rejected("The Parquet file's metadata does not match its size (truncated?).")
    if declared > limits.max_decompressed_bytes:
        raise Rejected(_expands(declared, limits))
    estimate = _decoded_estimate(metadata, schema)
    if estimate > limits.max_decompressed_bytes:
        raise Rejected(_expands(estimate, limits, about=True))


def _decoded_estimate(metadata: Any, schema: Any) -> int:
    """Bytes once decoded: exact for fixed-width columns, the declared size for others."""
    total = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            physical = chunk.physical_type
            if physical in _FIXED_WIDTH:
                total += chunk.num_values * _FIXED_WIDTH[physical]
            elif physical == "FIXED_LEN_BYTE_ARRAY":
                total += chunk.num_values * max(schema.column(c).length or 0, 1)
            else:
                total += max(chunk.total_uncompressed_size, 0)
    return total


def _expands(n: int, limits: Limits, about: bool = False) -> str:
    return (
        f"The file would expand to {'about ' if about else ''}{human_bytes(n)} when decompressed, "
        f"more than the limit of {human_bytes(limits.max_decompressed_bytes)} "
        "(a decompression bomb?)."
    )


def _needs_conversion(kind: Any, pa: Any) -> bool:
    if pa.types.is_dictionary(kind):
        return _needs_conversion(kind.value_type, pa)
    if pa.types.is_struct(kind):
        return any(_needs_conversion(kind.field(i).type, pa) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _needs_conversion(kind.value_type, pa)
    return not (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_null(kind)
        or pa.types.is_decimal(kind)
    )


def _dictionary_key(array: Any) -> tuple:
    addresses = [b.address if b is not None else 0 for b in array.dictionary.buffers()]
    return (*addresses, len(array.dictionary))


def _batch_bytes(batch: Any, pa: Any, lengths: dict) -> int:
    """Bytes the batch stands for once decoded; a dictionary column counts the length of the
    value each row refers to (that is what a row becomes), not the dictionary once."""
    # import here: pyarrow is slow to import and only Parquet samples need it
    import pyarrow.compute as pc

    total = 0
    for column in batch.columns:
        if pa.types.is_dictionary(column.type):
            key = _dictionary_key(column)
            if key not in lengths:
                if len(lengths) > 64:
                    lengths.clear()
                lengths[key] = pc.binary_length(column.dictionary)
            referred = pc.sum(pc.take(lengths[key], column.indices)).as_py() or 0
            total += column.indices.nbytes + referred
        else:
            total += column.nbytes
    return total


def _rows(batch: Any, pa: Any, convert: dict[str, bool], dictionaries: dict) -> Any:
    names = batch.schema.names
    columns = []
    for name, column in zip(names, batch.columns, strict=True):
        if pa.types.is_dictionary(column.type):
            key = _dictionary_key(column)
            values = dictionaries.get(key)
            if values is None:
                if len(dictionaries) > 64:
                    dictionaries.clear()
                values = dictionaries[key] = column.dictionary.to_pylist()
                if convert.get(name):
                    values[:] = [jsonable(v) for v in values]
            data = [None if i is None else values[i] for i in column.indices.to_pylist()]
        else:
            data = column.to_pylist()
            if convert.get(name):
                data = [jsonable(v) for v in data]
        columns.append(data)
    for values in zip(*columns, strict=True):
        yield dict(zip(names, values, strict=True))


def _picked_rows(batch: Any, indices: list[int], pa: Any, convert: dict[str, bool]) -> Any:
    """The rows at `indices`, as ``_rows`` gives them (dictionaries decoded first: a few rows
    need a few values, not the whole dictionary as Python objects)."""
    if not indices:
        return iter(())
    taken = batch.take(pa.array(indices, pa.int64()))
    columns = [
        c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in taken.columns
    ]
    plain = pa.RecordBatch.from_arrays(columns, names=taken.schema.names)
    return _rows(plain, pa, convert, {})


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


# --- Avro ----------------------------------------------------------------------------------


class _Reader:
    def __init__(self, source: Any) -> None:
        self.source = source

    def exactly(self, n: int, what: str) -> bytes:
        data = self.source.read(n)
        if len(data) != n:
            raise Rejected(f"The Avro file is cut off inside {what}.")
        return data

    def long(self, what: str) -> int:
        value = self.long_or_end(what)
        if value is None:
            raise Rejected(f"The Avro file is cut off inside {what}.")
        return value

    def long_or_end(self, what: str) -> int | None:
        """A zig-zag varint, or None at a clean end of the file."""
        shift = result = 0
        for _ in range(10):
            byte = self.source.read(1)
            if not byte:
                if shift == 0:
                    return None
                raise Rejected(f"The Avro file is cut off inside {what}.")
            b = byte[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
        raise Rejected(f"The Avro file has a malformed number in {what}.")


def read_avro(source: Any, sink: RecordSink, limits: Limits) -> None:
    """`source` is a counting, size-limited binary reader positioned at the start."""
    # import here: only Avro samples need fastavro
    import fastavro

    reader = _Reader(io.BufferedReader(source, 256 * 1024))
    if reader.exactly(4, "its header") != b"Obj\x01":
        raise Rejected("The file is not an Avro object container file.")
    meta = _avro_metadata(reader)
    sync = reader.exactly(16, "its header")
    codec = meta.get("avro.codec", b"null").decode("ascii", "replace")
    if codec not in ("null", "deflate", "bzip2", "xz"):
        raise Rejected(
            f"The Avro codec {codec!r} is not supported here; write the sample with the "
            "null, deflate, bzip2 or xz codec."
        )
    try:
        writer_schema = orjson.loads(meta.get("avro.schema", b""))
        parsed = fastavro.parse_schema(writer_schema)
    except (ValueError, TypeError, KeyError, fastavro.schema.SchemaParseException) as exc:
        raise Rejected(f"The Avro file's schema cannot be read: {_brief(exc)}") from None
    zero = _zero_width_problem(parsed)
    if zero:
        raise Rejected(zero)
    convert = _avro_needs_conversion(parsed)
    block_cap = 4 * limits.max_line_bytes
    decoded = 0
    block_no = 0
    while True:
        count = reader.long_or_end("a block header")
        if count is None:
            break
        block_no += 1
        size = reader.long("a block header")
        if count < 0 or size < 0:
            raise Rejected(f"Avro block {block_no} has a negative record count or size.")
        if sink.records + count > limits.max_records:
            raise Rejected(f"The file holds more than {limits.max_records:,} records.")
        if size > block_cap:
            raise Rejected(
                f"Avro block {block_no} is {human_bytes(size)}, more than the limit of "
                f"{human_bytes(block_cap)}."
            )
        data = reader.exactly(size, f"block {block_no}")
        if reader.exactly(16, f"block {block_no}") != sync:
            raise Rejected(f"Avro block {block_no} is corrupt (its sync marker does not match).")
        raw = _inflate(
            codec, data, min(block_cap, limits.max_decompressed_bytes - decoded), block_no, limits
        )
        decoded += len(raw)
        block = io.BytesIO(raw)
        try:
            for _ in range(count):
                value = fastavro.schemaless_reader(block, parsed, None)
                sink.record(jsonable(value) if convert else value)
        except Rejected:
            raise
        except Exception as exc:  # fastavro raises many kinds on corrupt data
            raise Rejected(
                f"Avro block {block_no} cannot be decoded (at record {sink.records + 1}): "
                f"{_brief(exc)}"
            ) from None
        if block.tell() != len(raw):
            raise Rejected(f"Avro block {block_no} holds more data than its {count} records.")
    sink.finish()


def _avro_metadata(reader: _Reader) -> dict[str, bytes]:
    meta: dict[str, bytes] = {}
    total = 0
    while True:
        count = reader.long("its header")
        if count == 0:
            return meta
        if count < 0:
            count = -count
            reader.long("its header")
        for _ in range(count):
            key_len = reader.long("its header")
            if key_len < 0 or key_len > MAX_AVRO_HEADER_BYTES:
                raise Rejected("The Avro file's header is malformed.")
            key = reader.exactly(key_len, "its header").decode("utf-8", "replace")
            value_len = reader.long("its header")
            total += key_len + value_len
            if value_len < 0 or total > MAX_AVRO_HEADER_BYTES or len(meta) >= MAX_AVRO_META_ENTRIES:
                raise Rejected("The Avro file's header is malformed or too large.")
            meta[key] = reader.exactly(value_len, "its header")


def _inflate(codec: str, data: bytes, cap: int, block_no: int, limits: Limits) -> bytes:
    bomb = Rejected(
        f"Avro block {block_no} expands to more than {human_bytes(max(cap, 0))} when "
        f"decompressed (limit {human_bytes(limits.max_decompressed_bytes)} in all; a "
        "decompression bomb?)."
    )
    if cap <= 0:
        raise bomb
    if codec == "null":
        return data
    try:
        if codec == "deflate":
            inflater = zlib.decompressobj(-15)
            out = inflater.decompress(data, cap + 1)
            if len(out) > cap or inflater.unconsumed_tail:
                raise bomb
            return out
        stream: Any = bz2.BZ2Decompressor() if codec == "bzip2" else lzma.LZMADecompressor()
        out = stream.decompress(data, max_length=cap + 1)
        if len(out) > cap or not stream.eof:
            raise bomb
        return out
    except (zlib.error, OSError, lzma.LZMAError, EOFError) as exc:
        raise Rejected(f"Avro block {block_no} cannot be decompressed: {_brief(exc)}") from None


def _walk_avro(schema: Any) -> Any:
    stack, seen = [schema], set()
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        kind = node.get("type")
        if kind == "record":
            stack.extend(f.get("type") for f in node.get("fields", []))
        elif kind == "array":
            stack.append(node.get("items"))
        elif kind == "map":
            stack.append(node.get("values"))
        elif isinstance(kind, dict | list):
            stack.append(kind)


def _zero_width(schema: Any, named: dict, depth: int = 0) -> bool:
    if depth > 32:
        return False
    if isinstance(schema, str):
        if schema == "null":
            return True
        return schema in named and _zero_width(named[schema], named, depth + 1)
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            return all(
                _zero_width(f.get("type"), named, depth + 1) for f in schema.get("fields", [])
            )
        if kind == "fixed":
            return schema.get("size") == 0
        if isinstance(kind, dict | str) and kind not in ("array", "map", "enum"):
            return _zero_width(kind, named, depth + 1)
    return False


def _zero_width_problem(parsed: Any) -> str:
    named = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
    if _zero_width(parsed, named):
        return "The Avro schema's records have no data (zero bytes each); refusing to read it."
    for node in _walk_avro(parsed):
        if node.get("type") == "array" and _zero_width(node.get("items"), named):
            return (
                "The Avro schema has an array of zero-size items (such as null), which could "
                "expand without limit; refusing to read it."
            )
    return ""


def _avro_needs_conversion(parsed: Any) -> bool:
    text = orjson.dumps(parsed, default=str).decode()
    return any(marker in text for marker in ('"bytes"', '"fixed"', '"logicalType"'))
