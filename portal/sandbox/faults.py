"""Fault injection for the sandbox: make the next N calls of an operation fail.

The server side is `FaultStore` (kept by the sandbox middleware) and `error_response`,
which shapes an AWS error the way the service's protocol does, so botocore parses it into
a ClientError with the right Code and Message. The client side is `inject` and `clear`,
which talk to the sandbox over HTTP at ``/_sandbox/faults``:

    POST   /_sandbox/faults  {"service": "sts", "operation": "GetCallerIdentity",
                              "code": "AccessDenied", "message": "...", "status": 403,
                              "count": 1}          count -1 = until cleared
    GET    /_sandbox/faults  the active faults, with what remains of their counts
    DELETE /_sandbox/faults  clear all (or only {"service": ..., "operation": ...})

`service` is botocore's name (``stepfunctions``) or the signing name (``states``);
`operation` is the API name (``DescribeStateMachine``), or ``*`` for every operation.

A fault on a HEAD request (S3 HeadBucket, HeadObject) has no body, exactly as in AWS, so
botocore reports the HTTP status as the code ("403", "404"), whatever code was injected.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from typing import Any
from xml.sax.saxutils import escape

# SigV4 signing names that differ from botocore's service names.
SIGNING_NAMES = {
    "states": "stepfunctions",
    "monitoring": "cloudwatch",
    "eventbridge": "events",
    "email": "ses",
    "execute-api": "apigateway",
}

CONTROL_PATH = "/_sandbox/faults"


def service_name(name: str) -> str:
    """botocore's service name for a signing name or a service name."""
    name = name.strip().lower()
    return SIGNING_NAMES.get(name, name)


@dataclass
class Fault:
    id: int
    service: str
    operation: str
    code: str
    message: str
    status: int
    remaining: int  # -1: until cleared

    def matches(self, service: str, operation: str) -> bool:
        return self.service == service and self.operation in ("*", operation)


class FaultStore:
    """The active faults. Thread-safe: the sandbox serves requests on many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(
        self,
        *,
        service: str,
        operation: str,
        code: str,
        message: str = "",
        status: int = 400,
        count: int = 1,
    ) -> Fault:
        if not service or not operation or not code:
            raise ValueError("A fault needs a service, an operation and an error code.")
        if count == 0 or count < -1:
            raise ValueError("count is a positive number of calls, or -1 for until cleared.")
        if not 400 <= int(status) <= 599:
            raise ValueError("status must be an HTTP error status (400-599).")
        with self._lock:
            fault = Fault(
                id=next(self._ids),
                service=service_name(service),
                operation=operation,
                code=code,
                message=message or f"Injected {code} by the sandbox",
                status=int(status),
                remaining=int(count),
            )
            self._faults.append(fault)
            return fault

    def take(self, service: str, operation: str) -> Fault | None:
        """The first fault matching the call, its count decremented; None to serve it."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(service, operation):
                    if fault.remaining > 0:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return Fault(**asdict(fault))
        return None

    def clear(self, service: str = "", operation: str = "") -> int:
        with self._lock:
            keep = [
                f
                for f in self._faults
                if (service and f.service != service_name(service))
                or (operation and f.operation != operation)
            ]
            removed = len(self._faults) - len(keep)
            self._faults = keep
            return removed

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]


# --- Shaping errors per protocol ------------------------------------------------------------


def error_response(
    *, protocol: str, code: str, message: str, status: int, json_version: str = "1.1"
) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) of an AWS error in `protocol`, as botocore expects it."""
    request_id = str(uuid.uuid4())
    headers = [("x-amzn-RequestId", request_id)]
    if protocol == "query":
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
        headers.append(("Content-Type", "text/xml"))
    elif protocol == "rest-xml":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers += [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
    elif protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers += [
            ("Content-Type", f"application/x-amz-json-{json_version}"),
            ("x-amzn-ErrorType", code),
        ]
    elif protocol == "rest-json":
        body = json.dumps({"Type": "User", "message": message}).encode()
        headers += [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    elif protocol == "smithy-rpc-v2-cbor":
        body = _cbor_map({"__type": code, "message": message})
        headers += [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


def _cbor_text(value: str) -> bytes:
    data = value.encode()
    n = len(data)
    if n < 24:
        head = bytes([0x60 | n])
    elif n < 0x100:
        head = bytes([0x78, n])
    elif n < 0x10000:
        head = bytes([0x79]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x7A]) + n.to_bytes(4, "big")
    return head + data


def _cbor_map(values: dict[str, str]) -> bytes:
    """A CBOR map of text to text: all an RPCv2 CBOR error body needs."""
    out = bytes([0xA0 | len(values)])
    for key, value in values.items():
        out += _cbor_text(key) + _cbor_text(value)
    return out


# --- Client helpers (tests, demos) -----------------------------------------------------------


def _call(endpoint: str, method: str, payload: dict[str, Any] | None = None) -> Any:
    url = endpoint.rstrip("/") + CONTROL_PATH
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) sandbox endpoint: {endpoint!r}")
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read() or b"null")


def inject(endpoint: str, **fault: Any) -> dict[str, Any]:
    """Make the next `count` calls (-1: all until cleared) of service/operation fail. The
    fault's fields are those of `FaultStore.add` (service, operation, code, and optionally
    message, status, count); the sandbox checks them and answers 400 when one is wrong."""
    return _call(endpoint, "POST", fault)


def clear(endpoint: str, *, service: str = "", operation: str = "") -> int:
    """Remove injected faults (all, or those of one service/operation); how many went."""
    payload = {"service": service, "operation": operation} if service or operation else None
    return int(_call(endpoint, "DELETE", payload)["cleared"])


def active(endpoint: str) -> list[dict[str, Any]]:
    """The faults still active, with their remaining counts."""
    return list(_call(endpoint, "GET")["faults"])
