"""The HTTP client of the outbound path: POST ``/bot<token>/<method>`` to the Bot API server.

Why not ``requests`` (the poller's client) or urllib3: sends are the hot path, and profiling the
gateway under load showed the generic clients spending more CPU than the whole request is
worth (two ``send`` syscalls per request, a ``poll`` before reusing a connection, the email
parser for headers). The local Bot API server speaks plain HTTP/1.1 on loopback, so this
client does only that: one keep-alive connection pool, each request written with one
``sendall`` (headers and body together), the answer read by ``Content-Length`` (or chunked),
and a pooled connection checked with one non-blocking ``MSG_PEEK`` before it is reused.

It tells failures apart, because the gateway's promises depend on it:

* :class:`BotApiUnreachable` -- no connection could be made: the request was certainly not
  sent (a retry is safe; an Idempotency-Key is released);
* :class:`BotApiUnavailable` -- the connection broke after the request went out, or the answer
  is not the Bot API's: Telegram may have acted on it;
* :class:`BotApiTimeout` -- no complete answer within the bound. Under gevent the whole call
  is also bounded by a ``gevent.Timeout``, so a server that trickles bytes cannot hold a
  greenlet longer than that.

A file uploaded to ``/send`` is streamed on as ``multipart/form-data`` (never in memory at
once). Only ``http://`` and ``https://`` base URLs are supported.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from telegram_gateway.errors import BotApiTimeout, BotApiUnavailable, BotApiUnreachable
from telegram_gateway.outbound import Upload
from telegram_gateway.redact import redact

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the (local) Bot API server
POOL_SIZE = 256  # open connections per worker process at most
IDLE_KEEP = 30.0  # seconds an idle pooled connection is kept
UPLOAD_CHUNK = 256 * 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass
class Reply:
    """One HTTP answer of the Bot API: its envelope, and the raw bytes it came as."""

    envelope: dict[str, Any]
    raw: bytes
    status: int = 200


class _Broken(Exception):
    """The connection failed after the request was (maybe) sent."""


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.idle_since = time.monotonic()

    def alive(self) -> bool:
        """A pooled connection the server has not closed (nothing to read, no EOF)."""
        raw = getattr(self.sock, "_sock", None)  # gevent's wrapper: the real, non-blocking one
        try:
            if raw is not None:
                data = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            elif isinstance(self.sock, ssl.SSLSocket):
                readable, _, _ = select.select([self.sock], [], [], 0)
                return not readable
            else:
                self.sock.setblocking(False)
                data = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except (OSError, ValueError):
            return False
        del data  # EOF, or bytes nobody asked for: either way unusable
        return False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    # ---- reading --------------------------------------------------------------------------
    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise _Broken("the Bot API closed the connection")
        self.buffer += chunk

    def read_until(self, marker: bytes, limit: int) -> bytes:
        start = 0
        while True:
            found = self.buffer.find(marker, start)
            if found >= 0:
                end = found + len(marker)
                data = bytes(self.buffer[:end])
                del self.buffer[:end]
                return data
            if len(self.buffer) > limit:
                raise _Broken("an HTTP header line is too long")
            start = max(0, len(self.buffer) - len(marker) + 1)
            self._fill()

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_to_end(self) -> bytes:
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                data = bytes(self.buffer)
                self.buffer.clear()
                return data
            self.buffer += chunk
            if len(self.buffer) > MAX_BODY_BYTES:
                raise _Broken("the answer is too large")

    def response(self) -> tuple[int, bytes, bool]:
        """(status, body, reusable)."""
        head = self.read_until(b"\r\n\r\n", MAX_HEADER_BYTES)
        lines = head.decode("latin-1").split("\r\n")
        try:
            version, status_text = lines[0].split(" ", 2)[:2]
            status = int(status_text)
        except ValueError:
            raise _Broken(f"not an HTTP answer: {lines[0][:60]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, self._chunked(), reusable
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise _Broken("a malformed Content-Length") from None
            if not 0 <= length <= MAX_BODY_BYTES:
                raise _Broken("the answer is too large")
            return status, self.read_exactly(length), reusable
        return status, self.read_to_end(), False

    def _chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_line = self.read_until(b"\r\n", 1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _Broken("a malformed chunk") from None
            if size == 0:
                while self.read_until(b"\r\n", MAX_HEADER_BYTES) != b"\r\n":
                    pass  # trailers
                return bytes(body)
            body += self.read_exactly(size + 2)[:-2]
            if len(body) > MAX_BODY_BYTES:
                raise _Broken("the answer is too large")


class BotApiTransport:
    """POSTs to one Bot API server over a pool of keep-alive connections. Thread- and
    greenlet-safe; one per worker process."""

    def __init__(self, base_url: str, pool_size: int = POOL_SIZE) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        self.base_url = base_url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._prefix = parts.path.rstrip("/")
        host_header = self.host if parts.port is None else f"{self.host}:{self.port}"
        self._host_header = f"Host: {host_header}\r\n"
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()  # gevent-patched in workers: cooperative
        self._slots = threading.BoundedSemaphore(pool_size)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def call(
        self,
        token: str,
        method: str,
        params: Mapping[str, Any],
        upload: Upload | None,
        timeout: float,
    ) -> Reply:
        """The Bot API's answer (``ok`` true or false); raises a ``BotApiError`` subclass for
        everything that is not an answer."""
        path = f"{self._prefix}/bot{token}/{method}"
        if upload is None:
            body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
            head = self._head(path, "application/json", len(body))
            chunks: Iterator[bytes] | None = None
            first = head + body
        else:
            content_type, length, chunks = multipart(params, upload)
            first = self._head(path, content_type, length)
        deadline = time.monotonic() + timeout
        if not self._slots.acquire(timeout=timeout):
            raise BotApiTimeout(method, f"{method}: no free connection within {timeout:g} s")
        try:
            with _bounded(timeout):
                status, raw = self._exchange(method, first, chunks, deadline)
        except _Expired:
            raise BotApiTimeout(
                method, f"{method}: no answer from the Bot API within {timeout:g} s"
            ) from None
        finally:
            self._slots.release()
        try:
            envelope = json.loads(raw)
            if not isinstance(envelope, dict) or "ok" not in envelope:
                raise ValueError("not a Bot API envelope")
        except ValueError:
            raise BotApiUnavailable(
                method,
                f"{method}: the Bot API answered HTTP {status} without a Bot API envelope; "
                "is TELEGRAM_API_URL a Bot API server?",
            ) from None
        return Reply(envelope, raw, status)

    def _head(self, path: str, content_type: str, length: int) -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\n{self._host_header}Content-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: keep-alive\r\n\r\n"
        ).encode()

    def _exchange(
        self, method: str, first: bytes, chunks: Iterator[bytes] | None, deadline: float
    ) -> tuple[int, bytes]:
        connection = self._connection(method, deadline)
        try:
            connection.sock.settimeout(max(0.001, deadline - time.monotonic()))
            connection.sock.sendall(first)
            for chunk in chunks or ():
                connection.sock.sendall(chunk)
            status, raw, reusable = connection.response()
        except TimeoutError:
            # the socket's own deadline: the same outcome as the overall bound expiring
            connection.close()
            raise _Expired from None
        except (OSError, _Broken) as exc:
            connection.close()
            raise BotApiUnavailable(
                method,
                f"{method}: the connection to the Bot API at {self.base_url} broke "
                f"({redact(str(exc))[:200] or type(exc).__name__})",
            ) from None
        except BaseException:
            connection.close()  # e.g. the overall gevent bound
            raise
        if reusable:
            connection.idle_since = time.monotonic()
            with self._lock:
                self._idle.append(connection)
        else:
            connection.close()
        return status, raw

    def _connection(self, method: str, deadline: float) -> _Connection:
        now = time.monotonic()
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                break
            if now - connection.idle_since < IDLE_KEEP and connection.alive():
                return connection
            connection.close()
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=max(0.001, min(CONNECT_TIMEOUT, deadline - now))
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except TimeoutError:
            raise BotApiUnreachable(
                method, f"{method}: connecting to the Bot API at {self.base_url} timed out"
            ) from None
        except OSError as exc:
            raise BotApiUnreachable(
                method,
                f"{method}: cannot connect to the Bot API at {self.base_url} "
                f"({type(exc).__name__}: {redact(str(exc))[:200]})",
            ) from None
        return _Connection(sock)


# ---- bounding a call under gevent -----------------------------------------------------------
class _Expired(Exception):
    """Raised inside a call when its overall bound has passed (gevent's timer or the
    socket's deadline); ``send`` turns it into one :class:`BotApiTimeout`."""


class _bounded:
    """``gevent.Timeout`` around a block when gevent has patched the process; otherwise
    nothing (the socket timeouts still bound every single read and write)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.timeout: Any = None

    def __enter__(self) -> None:
        if _gevent_active():
            import gevent

            self.timeout = gevent.Timeout(self.seconds, _Expired)
            self.timeout.start()

    def __exit__(self, *exc: object) -> None:
        if self.timeout is not None:
            self.timeout.close()


_GEVENT: bool | None = None


def _gevent_active() -> bool:
    global _GEVENT
    if _GEVENT is None:
        try:
            from gevent import monkey

            _GEVENT = bool(monkey.is_module_patched("socket"))
        except ImportError:  # pragma: no cover - gevent is a runtime dependency
            _GEVENT = False
    return _GEVENT


# ---- multipart/form-data, streamed ------------------------------------------------------------
def multipart(params: Mapping[str, Any], upload: Upload) -> tuple[str, int, Iterator[bytes]]:
    """Content-Type, Content-Length and the body as an iterator (a large file is never in
    memory at once)."""
    boundary = "gw" + secrets.token_hex(16)
    head = bytearray()
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + text.encode()
            + b"\r\n"
        )
    filename = upload.filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{upload.field}"; '
        f'filename="{filename}"\r\nContent-Type: {upload.content_type}\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def chunks() -> Iterator[bytes]:
        yield bytes(head)
        upload.stream.seek(0)
        while chunk := upload.stream.read(UPLOAD_CHUNK):
            yield chunk
        yield tail

    return (
        f"multipart/form-data; boundary={boundary}",
        len(head) + upload.size + len(tail),
        chunks(),
    )
