"""The sandbox's WSGI middleware around moto's server.

Every request is identified — service from the SigV4 credential scope, operation from
X-Amz-Target (json), the Action form field (query), or method + path matched against
botocore's model (rest-json, rest-xml) — then:

1. an injected fault for that service/operation is answered in the protocol's error shape;
2. Cost Explorer GetCostAndUsage is answered by the stand-in in `costs.py` (moto's CE
   only replays canned results);
3. anything else goes to moto unchanged.

``/_sandbox/faults`` is the control endpoint (see faults.py); ``/_sandbox/health`` answers
200 once the server is up; ``/_sandbox/state`` says how many calls that may have changed
something it has served (``writes``), so a test fixture can skip re-seeding when nothing
changed since it last seeded; ``/_sandbox/pipeline[?wait=S]`` reports the pipeline stand-in
(pipeline.py). Calls the stand-in makes itself carry ``x-onramp-sandbox-internal`` and get no
injected faults. Every call moto serves is treated as made over TLS (patches.py).
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

import botocore.session
from botocore.exceptions import DataNotFoundError, UnknownServiceError

from portal.sandbox import costs, patches, pipeline, state
from portal.sandbox.faults import CONTROL_PATH, FaultStore, error_response, service_name

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_botocore_lock = threading.Lock()
_botocore = botocore.session.get_session()


_READ_PREFIXES = (
    "Describe",
    "Get",
    "List",
    "Head",
    "Lookup",
    "Search",
    "Query",
    "Scan",
    "BatchGet",
    "Select",
    "AssumeRole",
)


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    protocol: str
    json_version: str = "1.1"

    @property
    def is_read(self) -> bool:
        return self.operation.startswith(_READ_PREFIXES)


@dataclass(frozen=True)
class _Route:
    operation: str
    method: str
    path: re.Pattern[str]
    query: tuple[tuple[str, str | None], ...]
    literal_length: int


@lru_cache(maxsize=64)
def _model(service: str) -> Any:
    with _botocore_lock:
        try:
            return _botocore.get_service_model(service)
        except (UnknownServiceError, DataNotFoundError):
            return None  # an unknown service is simply not identified


@lru_cache(maxsize=64)
def _routes(service: str) -> tuple[_Route, ...]:
    model = _model(service)
    if model is None:
        return ()
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        uri = http.get("requestUri", "/")
        path, _, query = uri.partition("?")
        pattern = ""
        literal = 0
        for part in re.split(r"(\{[^}]+\})", path):
            if part.startswith("{"):
                pattern += ".+" if part.endswith("+}") else "[^/]+"
            else:
                pattern += re.escape(part)
                literal += len(part)
        required: list[tuple[str, str | None]] = []
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            required.append((key, value if eq else None))
        routes.append(
            _Route(
                operation=name,
                method=http.get("method", "POST").upper(),
                path=re.compile(pattern.rstrip("/") + "/?"),
                query=tuple(required),
                literal_length=literal,
            )
        )
    return tuple(routes)


def _rest_operation(service: str, method: str, path: str, query: dict[str, list[str]]) -> str:
    best: tuple[int, int] | None = None
    found = ""
    for route in _routes(service):
        if route.method != method or not route.path.fullmatch(path):
            continue
        if not all(
            key in query and (value is None or value in query[key]) for key, value in route.query
        ):
            continue
        score = (len(route.query), route.literal_length)
        if best is None or score > best:
            best, found = score, route.operation
    return found


def identify(environ: dict[str, Any], body: bytes | None) -> Call | None:
    """Which service and operation a request calls, and in which protocol it is spoken."""
    match = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if not match:
        return None
    service = service_name(match.group(2))
    model = _model(service)
    json_version = (model.metadata.get("jsonVersion") if model else None) or "1.1"
    if environ.get("HTTP_SMITHY_PROTOCOL", "").lower() == "rpc-v2-cbor":
        operation = environ.get("PATH_INFO", "").rstrip("/").rsplit("/", 1)[-1]
        return Call(service, operation, "smithy-rpc-v2-cbor")
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return Call(service, target.rsplit(".", 1)[-1], "json", json_version)
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if body is not None:
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        if "Action" in form:
            return Call(service, form["Action"][0], "query")
    if "Action" in query:
        return Call(service, query["Action"][0], "query")
    if model is None:
        return None
    protocol = model.metadata.get("protocol", "")
    if protocol not in ("rest-json", "rest-xml"):
        return None
    method = environ.get("REQUEST_METHOD", "GET").upper()
    operation = _rest_operation(service, method, environ.get("PATH_INFO", "/"), query)
    return Call(service, operation, protocol) if operation else None


def _is_form(environ: dict[str, Any]) -> bool:
    return environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded")


def _read_body(environ: dict[str, Any]) -> bytes:
    """Read the request body and put it back so moto can read it again."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


class SandboxMiddleware:
    """Faults and stand-ins in front of moto's DomainDispatcherApplication."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.faults = FaultStore()
        self.pipeline: pipeline.Pipeline | None = None  # set by the server that runs one
        # Set by a server that keeps its state: called after each write, before the answer
        # goes out, so an acknowledged write survives a SIGKILL (as AWS never forgets one).
        self.persist: Callable[[], object] | None = None
        self._writes = 0
        self._writes_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == CONTROL_PATH:
            return self._control(environ, start_response)
        if path == "/_sandbox/health":
            return _json(start_response, 200, {"status": "ok"})
        if path == "/_sandbox/state":
            return _json(start_response, 200, {"writes": self._writes})
        if path == pipeline.STATUS_PATH:
            return self._pipeline_status(environ, start_response)
        body = _read_body(environ) if _is_form(environ) else None
        call = identify(environ, body)
        # The pipeline stand-in's own calls (etl.py) are not the portal's: no faults for them.
        if call is not None and not environ.get("HTTP_X_ONRAMP_SANDBOX_INTERNAL"):
            fault = self.faults.take(call.service, call.operation)
            if fault is not None:
                logger.info("fault %s on %s:%s", fault.code, call.service, call.operation)
                status, headers, payload = error_response(
                    protocol=call.protocol,
                    code=fault.code,
                    message=fault.message,
                    status=fault.status,
                    json_version=call.json_version,
                )
                start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
                return [payload]
            if call.service == "ce" and call.operation == "GetCostAndUsage":
                return self._cost_and_usage(environ, start_response)
        write = call is None or not call.is_read
        if write:
            with self._writes_lock:
                self._writes += 1
            state.mark_changed()
        # Real clients reach AWS over TLS; the sandbox's loopback HTTP stands in for it.
        # A snapshot (state.py) waits for calls in progress and holds new ones back.
        with state.GATE.shared(), patches.secure_transport():
            response = self.app(environ, start_response)
            if not write or self.persist is None:
                return response
            # Hold the answer to a write until it is saved (moto answers writes whole).
            answer = list(response)
            close = getattr(response, "close", None)
            if close is not None:
                close()
        self.persist()  # outside the shared gate: a save takes it exclusively
        return answer

    def _cost_and_usage(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        try:
            request = json.loads(_read_body(environ) or b"{}")
            result = costs.get_cost_and_usage(request)
        except costs.CostExplorerError as exc:
            status, headers, payload = error_response(
                protocol="json", code=exc.code, message=str(exc), status=400
            )
            start_response(f"{status} Bad Request", headers)
            return [payload]
        except ValueError as exc:
            status, headers, payload = error_response(
                protocol="json", code="ValidationException", message=str(exc), status=400
            )
            start_response(f"{status} Bad Request", headers)
            return [payload]
        return _json(start_response, 200, result, content_type="application/x-amz-json-1.1")

    def _pipeline_status(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        if self.pipeline is None:
            return _json(start_response, 404, {"error": "This sandbox runs no pipeline."})
        try:
            wait = float(parse_qs(environ.get("QUERY_STRING", "")).get("wait", ["0"])[0])
        except ValueError:
            return _json(start_response, 400, {"error": "wait is a number of seconds"})
        if wait > 0:
            self.pipeline.wait_idle(min(wait, 300.0))
        return _json(start_response, 200, self.pipeline.status())

    def _control(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            raw = _read_body(environ)
            payload = json.loads(raw) if raw.strip() else {}
            if method == "GET":
                return _json(start_response, 200, {"faults": self.faults.list()})
            if method == "POST":
                fault = self.faults.add(
                    service=str(payload.get("service", "")),
                    operation=str(payload.get("operation", "")),
                    code=str(payload.get("code", "")),
                    message=str(payload.get("message", "")),
                    status=int(payload.get("status", 400)),
                    count=int(payload.get("count", 1)),
                )
                return _json(start_response, 201, {"fault": fault.__dict__})
            if method == "DELETE":
                cleared = self.faults.clear(
                    str(payload.get("service", "")), str(payload.get("operation", ""))
                )
                return _json(start_response, 200, {"cleared": cleared})
        except (ValueError, TypeError) as exc:
            return _json(start_response, 400, {"error": str(exc)})
        return _json(start_response, 405, {"error": f"{method} is not allowed here"})


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _json(
    start_response: StartResponse,
    status: int,
    payload: Any,
    *,
    content_type: str = "application/json",
) -> Iterable[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        f"{status} {_REASONS.get(status, 'Error')}",
        [("Content-Type", content_type), ("Content-Length", str(len(body)))],
    )
    return [body]
