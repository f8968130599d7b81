"""A request as the HTTP layer hands it over, and the Bot API's answer envelopes."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from botapi_emulator.encoding import json_bytes
from botapi_emulator.errors import ApiError


@dataclass
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    peer: str = ""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    close: bool = False
    drop: bool = False


Handled = Response | Awaitable[Response]
Params = dict[str, Any]

OK_TRUE = b'{"ok":true,"result":true}'


def ok_response(result: Any, description: str | None = None) -> Response:
    envelope: dict[str, Any] = {"ok": True, "result": result}
    if description:
        envelope["description"] = description
    return Response(200, json_bytes(envelope))


def ok_raw(result_json: bytes) -> Response:
    return Response(200, b'{"ok":true,"result":' + result_json + b"}")


def error_response(
    code: int, description: str, parameters: dict[str, Any] | None = None
) -> Response:
    envelope: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    headers: tuple[tuple[str, str], ...] = ()
    if parameters:
        envelope["parameters"] = parameters
        if "retry_after" in parameters:
            headers = (("Retry-After", str(parameters["retry_after"])),)
    return Response(code, json_bytes(envelope), headers)


def control_response(result: Any, status: int = 200) -> Response:
    return Response(status, json_bytes({"ok": True, "result": result}))


def control_error(message: str, status: int = 400) -> Response:
    return Response(status, json_bytes({"ok": False, "error": message}))


def flood_error(wait: float) -> ApiError:
    retry_after = max(1, math.ceil(wait - 1e-9))
    return ApiError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


# parameter access (values are strings from query/form/multipart, any JSON type from JSON)
