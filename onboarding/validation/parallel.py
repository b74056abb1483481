"""A second core for large NDJSON samples.

Validation costs about twice what parsing does (the validator walks every record), so on its
own one process reaches a little under half of orjson's parse-only throughput. Chunks of lines
are independent (``ndjson.ndjson_chunk``), so when ``Limits.workers`` is above 1 (opt-in:
``ONBOARDING_SAMPLE_WORKERS=2``) and the sample does not go through the columnar screen
(``screen.py``, which has Arrow's threads), after ``PARALLEL_AFTER`` bytes the sink starts one
helper process per extra worker and hands it every other chunk while this process validates
the next one. It pays off only when a core is free: on a busy machine it costs ~20% more CPU in
all for the same wall time. Results are merged strictly in file order, so the
report is identical to the one-process report (tests compare them).

The helper is a plain ``python -c`` child talking over its stdin/stdout pipes with
length-prefixed frames (no multiprocessing, so it also works inside a daemonic Celery worker).
It holds one chunk at a time. If it cannot start, answers garbage or dies, its chunk is
validated here and the rest of the file too; if it does not answer before the deadline,
the file is refused for taking too long. It is always stopped (stdin closed, then killed
after a grace period) before ``validate_sample`` returns.
"""

from __future__ import annotations

import dataclasses
import os
import select
import struct
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from onboarding.validation.ndjson import ChunkResult, ndjson_chunk
from onboarding.validation.schema import compile_validator
from onboarding.validation.types import MAX_REPORTED_ERRORS, Limits, Rejected

_ROOT = str(Path(__file__).resolve().parents[2])
_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from onboarding.validation.parallel import helper_main; helper_main()"
)
_LENGTH = struct.Struct(">I")
_JOB = struct.Struct(">Id")  # room for errors, seconds left
START_TIMEOUT = 15.0
PIPE_UNIT = 1024 * 1024


class _Helper:
    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.fd = process.stdout.fileno()  # type: ignore[union-attr]
        self.buffer = bytearray()
        self.job: tuple[bytes, int] | None = None  # (chunk, lines_before) being validated

    def send(self, payload: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(_LENGTH.pack(len(payload)) + payload)
        stdin.flush()

    def receive(self, timeout: float | None) -> bytes | None:
        """One frame; None if none arrived within `timeout`. EOFError if the helper died."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 4:
                (length,) = _LENGTH.unpack_from(self.buffer)
                if len(self.buffer) >= 4 + length:
                    frame = bytes(self.buffer[4 : 4 + length])
                    del self.buffer[: 4 + length]
                    return frame
            wait = None if deadline is None else max(deadline - time.monotonic(), 0)
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return None
            data = os.read(self.fd, 1024 * 1024)
            if not data:
                raise EOFError("the helper process ended")
            self.buffer += data

    def stop(self) -> None:
        try:
            if self.process.stdin:
                self.process.stdin.close()
            self.process.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        finally:
            if self.process.stdout:
                self.process.stdout.close()


class Helpers:
    """Round-robin over helper processes and this one, merging in order."""

    def __init__(self, sink: Any, helpers: list[_Helper]) -> None:
        self.sink = sink
        self.helpers = helpers
        self.queue: deque[tuple[_Helper | None, int, ChunkResult | None]] = deque()

    @classmethod
    def start(cls, sink: Any) -> Helpers | None:
        helpers = []
        schema_json = orjson.dumps(
            {"schema": sink.validator_schema, "limits": dataclasses.asdict(sink.limits)}
        )
        for _ in range(sink.limits.workers - 1):
            helper = _spawn(schema_json)
            if helper is not None:
                helpers.append(helper)
        return cls(sink, helpers) if helpers else None

    def submit(self, chunk: bytes, lines_before: int) -> None:
        idle = next((h for h in self.helpers if h.job is None), None)
        if idle is not None:
            idle.job = (chunk, lines_before)
            try:
                idle.send(_JOB.pack(self._room(), self._seconds_left()) + chunk)
                self.queue.append((idle, lines_before, None))
            except OSError:
                self._drop(idle)
                self.queue.append((None, lines_before, self.sink.run_chunk(chunk)))
        else:
            self.queue.append((None, lines_before, self.sink.run_chunk(chunk)))
        self._merge(block=False)

    def drain(self) -> None:
        self._merge(block=True)

    def stop(self) -> None:
        for helper in self.helpers:
            helper.stop()
        self.helpers = []

    def _merge(self, block: bool) -> None:
        while self.queue:
            helper, lines_before, result = self.queue[0]
            if result is None:
                assert helper is not None
                result = self._collect(helper, block)
                if result is None:
                    return
            self.queue.popleft()
            self.sink.merge(result, lines_before)

    def _collect(self, helper: _Helper, block: bool) -> ChunkResult | None:
        assert helper.job is not None
        chunk, _ = helper.job
        try:
            frame = helper.receive(self._seconds_left() + 1.0 if block else 0)
            if frame is None:
                if block:
                    raise Rejected(self.sink.timeout_message())
                return None
            result = ChunkResult.from_wire(orjson.loads(frame))
        except (EOFError, OSError, ValueError, TypeError):
            self._drop(helper)
            return self.sink.run_chunk(chunk)
        helper.job = None
        return result

    def _drop(self, helper: _Helper) -> None:
        helper.stop()
        self.helpers = [h for h in self.helpers if h is not helper]
        helper.job = None

    def _room(self) -> int:
        return max(MAX_REPORTED_ERRORS - self.sink.errors_so_far(), 0)

    def _seconds_left(self) -> float:
        return max(self.sink.deadline - time.monotonic(), 0.0)


def _spawn(init: bytes) -> _Helper | None:
    try:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and code, no user input
            [sys.executable, "-c", _BOOT, _ROOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
    except OSError:
        return None
    helper = _Helper(process)
    _widen_pipe(process.stdin)
    try:
        helper.send(init)
        if helper.receive(START_TIMEOUT) == b"ready":
            return helper
    except (OSError, EOFError):
        pass
    helper.stop()
    return None


def _widen_pipe(stream: Any) -> None:
    """Let a whole chunk sit in the pipe, so sending it never waits for the helper to be
    scheduled (on a busy machine that wait cost more than the helper saved)."""
    try:
        # import here: fcntl exists only on Unix; elsewhere the pipe keeps its size
        import fcntl

        fd = stream.fileno()
        for size in (4 * PIPE_UNIT, 2 * PIPE_UNIT, PIPE_UNIT):
            try:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
                return
            except OSError:
                continue
    except (ImportError, AttributeError, OSError, ValueError):
        pass  # not Linux: sends may wait, results are the same


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (length,) = _LENGTH.unpack(header)
    payload = stream.read(length)
    return payload if len(payload) == length else None


def _write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


def helper_main() -> None:
    """The helper process: an init frame (schema, limits), then chunk frames until EOF."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    init = _read_frame(stdin)
    if init is None:
        return
    settings = orjson.loads(init)
    limits = Limits(**settings["limits"])
    try:
        validator = compile_validator(settings["schema"])
    except Rejected:
        _write_frame(stdout, b"no")
        return
    _write_frame(stdout, b"ready")
    while True:
        frame = _read_frame(stdin)
        if frame is None:
            return
        room, seconds = _JOB.unpack_from(frame)
        chunk = frame[_JOB.size :]
        result = ndjson_chunk(
            chunk,
            validator=validator,
            limits=limits,
            room=room,
            deadline=time.monotonic() + seconds,
        )
        _write_frame(stdout, orjson.dumps(result.to_wire()))
