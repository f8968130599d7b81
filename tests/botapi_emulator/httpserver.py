"""HTTP/1.1 (asyncio.Protocol): keep-alive, Content-Length and chunked bodies, multipart."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botapi_emulator.constants import (
    HTTP_REASONS,
    MAX_HEADER_BYTES,
    UPLOAD_LIMIT_LOCAL,
    UPLOAD_LIMIT_REMOTE,
)
from botapi_emulator.logs import log
from botapi_emulator.protocol import Request, Response, error_response
from botapi_emulator.tokens import redact_text

if TYPE_CHECKING:
    from botapi_emulator.service import Service


class HttpError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@dataclass
class MultipartPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


DISPOSITION_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_*.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _disposition(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for match in DISPOSITION_PARAM_RE.finditer(value):
        key, raw = match.group(1).lower(), match.group(2).strip()
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        if key.endswith("*"):
            key = key[:-1]
            _, _, encoded = raw.partition("''")
            raw = urllib.parse.unquote(encoded or raw)
        params[key] = raw
    return params


def parse_multipart(body: bytes, boundary: bytes) -> list[MultipartPart]:
    """multipart/form-data (RFC 7578) into parts; raises ValueError when malformed."""
    dash = b"--" + boundary
    pos = body.find(dash)
    if pos < 0:
        raise ValueError("boundary not found")
    pos += len(dash)
    parts: list[MultipartPart] = []
    while True:
        if body.startswith(b"--", pos):
            return parts
        line_end = body.find(b"\r\n", pos)
        if line_end < 0 or body[pos:line_end].strip():
            raise ValueError("malformed boundary line")
        pos = line_end + 2
        end = body.find(b"\r\n" + dash, pos)
        if end < 0:
            raise ValueError("unterminated part")
        if body.startswith(b"\r\n", pos):
            head, data_start = b"", pos + 2
        else:
            head_end = body.find(b"\r\n\r\n", pos, end + 2)
            if head_end < 0:
                raise ValueError("part without header end")
            head, data_start = body[pos:head_end], head_end + 4
        parts.append(_multipart_part(head, body[data_start:end]))
        pos = end + 2 + len(dash)


def _multipart_part(head: bytes, data: bytes) -> MultipartPart:
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    disposition = _disposition(headers.get("content-disposition", ""))
    if "name" not in disposition:
        raise ValueError("part without a name")
    return MultipartPart(
        name=disposition["name"],
        filename=disposition.get("filename"),
        content_type=headers.get("content-type"),
        data=data,
    )


@dataclass
class _Head:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    keep_alive: bool
    length: int
    chunked: bool
    expect_continue: bool


def parse_head(raw: bytes, max_body: Callable[[str], int]) -> _Head:
    lines = raw.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise HttpError(400, "Bad Request: invalid HTTP request line")
    method, target, version = request_line
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise HttpError(400, "Bad Request: invalid HTTP header")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection
    if version == "HTTP/1.0":
        keep_alive = "keep-alive" in connection
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = 0
    if not chunked and "content-length" in headers:
        text = headers["content-length"].strip()
        if not text.isdigit():
            raise HttpError(400, "Bad Request: invalid Content-Length")
        length = int(text)
    if length > max_body(target):
        raise HttpError(413, "Request Entity Too Large")
    expect = headers.get("expect", "").lower() == "100-continue"
    return _Head(method, target, version, headers, keep_alive, length, chunked, expect)


class HttpConnection(asyncio.Protocol):
    """One client connection: requests handled strictly in order (pipelining allowed)."""

    def __init__(self, service: Service, kind: str) -> None:
        self.service = service
        self.kind = kind  # "api", "control" or "stat"
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.buffer = bytearray()
        self.head: _Head | None = None
        self.chunks: list[bytes] = []
        self.chunk_pos = 0
        self.chunk_total = 0
        self.task: asyncio.Future[Response] | None = None
        self.current: Request | None = None
        self.closed = False
        self.paused = False
        self.close_after_answer = False

    # asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else ""
        self.service.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.service.connections.discard(self)
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.task is None:
            self._process()
        elif len(self.buffer) > (1 << 20) and not self.paused and self.transport:
            self.transport.pause_reading()
            self.paused = True

    # requests ---------------------------------------------------------------------------
    def _process(self) -> None:
        while self.task is None and not self.closed:
            try:
                request = self._next_request()
            except HttpError as exc:
                self._write(error_response(exc.status, exc.description), keep_alive=False)
                return
            if request is None:
                return
            self._dispatch(request)

    def _max_body(self, target: str) -> int:
        if self.kind != "api" or target.startswith("/_emulator"):
            return 1 << 30
        limit = UPLOAD_LIMIT_LOCAL if self.service.opts.local else UPLOAD_LIMIT_REMOTE
        return limit + (1 << 20)

    def _next_request(self) -> Request | None:
        buffer = self.buffer
        if self.head is None:
            while buffer[:2] == b"\r\n":
                del buffer[:2]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    raise HttpError(431, "Request Header Fields Too Large")
                return None
            self.head = parse_head(bytes(buffer[:end]), self._max_body)
            del buffer[: end + 4]
            head = self.head
            if head.expect_continue and (head.chunked or head.length > len(buffer)):
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        head = self.head
        body = self._take_chunked() if head.chunked else self._take_body(head.length)
        if body is None:
            return None
        self.head = None
        path, _, query = head.target.partition("?")
        return Request(
            method=head.method,
            path=urllib.parse.unquote(path),
            query=query,
            version=head.version,
            headers=head.headers,
            body=body,
            keep_alive=head.keep_alive,
            peer=self.peer,
        )

    def _take_body(self, length: int) -> bytes | None:
        if len(self.buffer) < length:
            return None
        if not length:
            return b""
        with memoryview(self.buffer) as view:
            body = bytes(view[:length])
        del self.buffer[:length]
        return body

    def _take_chunked(self) -> bytes | None:
        buffer = self.buffer
        while True:
            line_end = buffer.find(b"\r\n", self.chunk_pos)
            if line_end < 0:
                return None
            size_text = bytes(buffer[self.chunk_pos : line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(400, "Bad Request: invalid chunk size") from None
            if size == 0:
                end = buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return None
                body = b"".join(self.chunks)
                del buffer[: end + 4]
                self.chunks, self.chunk_pos, self.chunk_total = [], 0, 0
                return body
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return None
            self.chunks.append(bytes(buffer[start : start + size]))
            self.chunk_total += size
            assert self.head is not None
            if self.chunk_total > self._max_body(self.head.target):
                raise HttpError(413, "Request Entity Too Large")
            self.chunk_pos = start + size + 2

    def _dispatch(self, request: Request) -> None:
        self.current = request
        try:
            result = self.service.handle(request, self)
        except Exception:
            log.exception("internal error while handling %s", redact_text(request.path))
            result = error_response(500, "Internal Server Error")
        if isinstance(result, Response):
            self._finish(result)
            return
        task = asyncio.ensure_future(result)
        self.task = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Response]) -> None:
        if task is not self.task:
            return
        self.task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("internal error: %s", redact_text(repr(error)))
            response = error_response(500, "Internal Server Error")
        else:
            response = task.result()
        self._finish(response)
        if self.paused and self.transport and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        self._process()

    # responses --------------------------------------------------------------------------
    def _finish(self, response: Response, force_close: bool = False) -> None:
        request, self.current = self.current, None
        if self.closed or self.transport is None:
            return
        if response.drop:
            self.transport.abort()
            self.closed = True
            return
        self.service.flush_journal()
        keep = (
            request is not None
            and request.keep_alive
            and not response.close
            and not force_close
            and not self.close_after_answer
            and not self.service.stopping
        )
        self._write(response, keep)

    def _write(self, response: Response, keep_alive: bool) -> None:
        if self.transport is None or self.closed:
            return
        lines = [
            f"HTTP/1.1 {response.status} {HTTP_REASONS.get(response.status, 'Unknown')}\r\n",
            f"Content-Type: {response.content_type}\r\n",
            f"Content-Length: {len(response.body)}\r\n",
            "Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n",
        ]
        lines.extend(f"{name}: {value}\r\n" for name, value in response.headers)
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if len(response.body) < 65536:
            self.transport.write(head + response.body)
        else:
            self.transport.write(head)
            self.transport.write(response.body)
        if not keep_alive:
            self.transport.close()
            self.closed = True

    def shutdown(self, response: Response | None) -> None:
        """Stop: answer the in-flight request with ``response`` (if any), then close."""
        if self.closed or self.transport is None:
            return
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
        if self.current is not None and response is not None:
            self.service.emu.stats.count_response(response.status)
            self._finish(response, force_close=True)
        else:
            self.transport.close()
            self.closed = True
