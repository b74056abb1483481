"""``validate_sample``: one stream in, one report out, whatever the stream holds."""

from __future__ import annotations

import logging
import time
from typing import Any, BinaryIO, cast

from onboarding.validation.columnar import read_avro, read_parquet
from onboarding.validation.formats import HEAD_BYTES, compatible, describe_binary, detect_format
from onboarding.validation.ndjson import TIMEOUT, ChunkResult, ndjson_chunk
from onboarding.validation.parallel import Helpers
from onboarding.validation.readers import (
    READ_SIZE,
    Source,
    read_csv,
    read_json_document,
    read_ndjson,
)
from onboarding.validation.schema import ErrorSink, compile_validator
from onboarding.validation.screen import CHUNK_BYTES as SCREEN_CHUNK_BYTES
from onboarding.validation.screen import Job, Screen, compile_screen
from onboarding.validation.types import (
    MAX_REPORTED_ERRORS,
    Limits,
    RecordError,
    Rejected,
    SampleFormat,
    SampleReport,
)

logger = logging.getLogger(__name__)

CHECK_EVERY = 1024
_NAMES = {
    SampleFormat.JSON: "JSON",
    SampleFormat.NDJSON: "NDJSON",
    SampleFormat.CSV: "CSV",
    SampleFormat.PARQUET: "Parquet",
    SampleFormat.AVRO: "Avro",
}


def validate_sample(
    stream: BinaryIO,
    *,
    schema: dict,
    declared_format: SampleFormat | None = None,
    limits: Limits = Limits(),  # noqa: B008 - frozen, so one shared default is safe
) -> SampleReport:
    """Validate every record of one sample against `schema`. Never raises for bad input:
    file-level problems are ``rejected``, bad records are counted and the first
    ``MAX_REPORTED_ERRORS`` described."""
    started = time.monotonic()
    report = SampleReport(format=declared_format)
    sink: ValidationSink | None = None
    source: Source | None = None
    head = b""
    size = 0
    try:
        validator = compile_validator(schema)
        head = read_head(stream)
        fmt = choose_format(head, declared_format)
        report.format = fmt
        sink = ValidationSink(validator, report, limits, started + limits.max_seconds)
        sink.validator_schema = schema
        if fmt in (SampleFormat.NDJSON, SampleFormat.PARQUET) and limits.screen:
            sink.use_screen(compile_screen(schema), fmt)
        if fmt is SampleFormat.PARQUET:
            size = read_parquet(rewound(stream, head), sink, limits)
        else:
            source = Source(stream, limits.max_file_bytes, prefix=head)
            read_records(fmt, source, sink, limits, schema)
    except Rejected as exc:
        report.rejected = exc.message
    except MemoryError:
        report.rejected = "The file needs more memory to read than this worker has."
    except RecursionError:
        report.rejected = f"The file is nested more than {limits.max_depth} levels deep."
    except Exception as exc:  # never a crash for bad input; the log keeps the detail
        logger.exception("Sample validation failed unexpectedly")
        report.rejected = f"The file could not be read ({type(exc).__name__})."
    finally:
        if sink is not None:
            sink.close()
    report.bytes_read = source.bytes_read if source is not None else max(size, len(head))
    report.duration_seconds = time.monotonic() - started
    return report


def read_head(stream: BinaryIO) -> bytes:
    head = b""
    while len(head) < HEAD_BYTES:
        data = stream.read(HEAD_BYTES - len(head))
        if not data:
            break
        head += data
    return head


def rewound(stream: BinaryIO, head: bytes) -> BinaryIO:
    """The whole stream again for a reader that needs to seek (Parquet)."""
    try:
        if stream.seekable():
            stream.seek(stream.tell() - len(head))
            return stream
    except (OSError, ValueError):
        pass
    # _Prefixed has the part of BinaryIO the Parquet reader uses: seekable() and read().
    return cast(BinaryIO, _Prefixed(head, stream))


class _Prefixed:
    """The head already read, then the rest of a stream that cannot seek back."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self.head, self.rest = head, rest

    def seekable(self) -> bool:
        return False

    def read(self, n: int | None = -1) -> bytes:
        n = -1 if n is None else n
        data, self.head = self.head, b""
        more = self.rest.read(-1 if n < 0 else max(n - len(data), 0))
        return data + (more or b"")


def choose_format(head: bytes, declared: SampleFormat | None) -> SampleFormat:
    if not head:
        raise Rejected("The file is empty.")
    detected = detect_format(head)
    if detected is None:
        what = describe_binary(head)
        expected = f"{_NAMES[declared]} " if declared else ""
        if what:
            raise Rejected(f"The file is {what}; upload the uncompressed {expected}file itself.")
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < len(head) - 3:
                raise Rejected(
                    f"The file is not valid UTF-8 text (at byte {exc.start + 1}) and not "
                    "Parquet or Avro."
                ) from None
        raise Rejected(
            "The file's format could not be recognised as JSON, NDJSON, CSV, Parquet or Avro."
        )
    if declared is None or compatible(declared, detected, head):
        return declared or detected
    raise Rejected(
        f"The file was declared as {_NAMES[declared]} but its content is {_NAMES[detected]}."
    )


def read_records(
    fmt: SampleFormat, source: Source, sink: Any, limits: Limits, schema: dict
) -> None:
    if fmt is SampleFormat.NDJSON:
        read_ndjson(source, sink, limits)
    elif fmt is SampleFormat.JSON:
        read_json_document(source, sink, limits)
    elif fmt is SampleFormat.CSV:
        read_csv(source, sink, limits, schema)
    elif fmt is SampleFormat.AVRO:
        read_avro(source, sink, limits)
    else:  # pragma: no cover - Parquet is read from the seekable stream
        raise Rejected(f"{fmt} cannot be read from a plain stream.")


class ValidationSink:
    """Counts and checks the records a reader finds, into `report`."""

    def __init__(
        self, validator: Any, report: SampleReport, limits: Limits, deadline: float
    ) -> None:
        self.validator = validator
        self.report = report
        self.limits = limits
        self.deadline = deadline
        self.records = 0
        self.invalid = 0
        self._is_valid = validator.is_valid
        self._errors = ErrorSink(validator, MAX_REPORTED_ERRORS)
        self._parallel: Any = None
        self._ndjson_bytes = 0
        self.validator_schema: dict = {}
        self.screen: Screen | None = None
        self.chunk_bytes = READ_SIZE
        self._screening: tuple[Job, int] | None = None  # the chunk in the screen, lines before
        self._screen_misses = 0

    def use_screen(self, screen: Screen | None, fmt: SampleFormat) -> None:
        """Screen Parquet batches or NDJSON chunks (``screen.py``); for NDJSON, bigger
        chunks, the next one's text checks overlapping the screen's work on this one, and no
        helper processes."""
        self.screen = screen
        if screen is not None and fmt is SampleFormat.NDJSON:
            self.chunk_bytes = SCREEN_CHUNK_BYTES

    # The generic path: one record at a time.
    def record(self, value: Any) -> None:
        self.records += 1
        try:
            ok = self._is_valid(value)
        except (ValueError, TypeError, OverflowError):
            ok = False
        if not ok:
            self.invalid += 1
            self._errors.add(self.records, value)
        if not self.records % CHECK_EVERY:
            self.tick()

    def vouched(self, n: int) -> None:
        """`n` records the screen vouched for (valid, so nothing else to do)."""
        if n:
            self.records += n
            self.tick()

    def bad_record(self, message: str, path: str = "$") -> None:
        self.records += 1
        self.invalid += 1
        self._errors.add_message(self.records, path, message)
        if not self.records % CHECK_EVERY:
            self.tick()

    def flag(self, text: str) -> None:
        self.report.flags.append(text)

    def tick(self) -> None:
        if self.records > self.limits.max_records:
            raise Rejected(f"The file holds more than {self.limits.max_records:,} records.")
        if time.monotonic() > self.deadline:
            raise Rejected(self.timeout_message())

    def timeout_message(self) -> str:
        return (
            f"Validation took longer than the limit of {self.limits.max_seconds:g} seconds "
            f"(stopped after {self.records:,} records)."
        )

    # The NDJSON path: whole chunks of lines, here or in a helper process.
    def ndjson_lines(self, chunk: bytes, lines_before: int) -> int:
        """Validate (or hand a helper) one chunk of lines; the number of lines it held."""
        self._ndjson_bytes += len(chunk)
        if self.screen is not None:
            job = self.screen.start(chunk, max_depth=self.limits.max_depth)
            previous, self._screening = self._screening, (job, lines_before)
            self._finish_screening(previous)
            return job.line_count
        if self._screening is not None:  # the screen was dropped: its last chunk first
            previous, self._screening = self._screening, None
            self._finish_screening(previous)
        if (
            self._parallel is None
            and self.screen is None
            and self.limits.workers > 1
            and self._ndjson_bytes > PARALLEL_AFTER
        ):
            self._parallel = Helpers.start(self) or False
        if self._parallel:
            self._parallel.submit(chunk, lines_before)
            return chunk.count(b"\n") + 1
        result = self.run_chunk(chunk)
        self.merge(result, lines_before)
        return result.lines

    def _finish_screening(self, screening: tuple[Job, int] | None) -> None:
        """Merge a chunk from the screen: its result, or the record path's when the screen
        gave it back."""
        if screening is None:
            return
        job, lines_before = screening
        room = MAX_REPORTED_ERRORS - len(self._errors.errors)
        screened = job.finish(self.validator, room)
        # A sample the screen does not help with (chunks it gives back, or most rows unsure)
        # is left to the record path after a few chunks, which would otherwise cost twice.
        helped = screened is not None and job.unsure * 2 <= job.line_count
        self._screen_misses = 0 if helped else self._screen_misses + 1
        if self._screen_misses >= SCREEN_MISSES:
            self.screen = None
        if screened is None:
            result = self.run_chunk(job.chunk)
        else:
            result = ChunkResult(lines=job.line_count)
            result.records, result.invalid, result.errors = screened
        self.merge(result, lines_before)

    def errors_so_far(self) -> int:
        return len(self._errors.errors)

    def run_chunk(self, chunk: bytes) -> ChunkResult:
        room = MAX_REPORTED_ERRORS - len(self._errors.errors)
        return ndjson_chunk(
            chunk, validator=self.validator, limits=self.limits, room=room, deadline=self.deadline
        )

    def merge(self, result: ChunkResult, lines_before: int) -> None:
        first = self.records
        for record, path, message in result.errors:
            self._errors.add_message(first + record, path, message)
        self.records += result.records
        self.invalid += result.invalid
        if result.rejected == TIMEOUT:
            raise Rejected(self.timeout_message())
        if result.rejected:
            raise Rejected(
                result.rejected.replace("{line}", str(lines_before + result.reject_line))
            )
        self.tick()

    def finish(self) -> None:
        last, self._screening = self._screening, None
        self._finish_screening(last)
        if self._parallel:
            self._parallel.drain()
        self.tick()

    def close(self) -> None:
        if self._screening is not None:
            self._screening[0].wait()  # the screen thread lets go of the chunk
            self._screening = None
        if self._parallel:
            self._parallel.stop()
        self.report.records_checked = self.records
        self.report.invalid_count = self.invalid
        self.report.errors = [RecordError(r, p, m) for r, p, m in self._errors.errors]


SCREEN_MISSES = 3  # chunks in a row the screen did not help with before it is dropped
PARALLEL_AFTER = 8 * 1024 * 1024  # bytes of NDJSON before a helper process is worth starting
