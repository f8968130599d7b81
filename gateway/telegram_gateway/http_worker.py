"""The gunicorn worker class: gevent, serving HTTP with gevent's own WSGI server (pywsgi).

gunicorn's plain ``gevent`` worker parses requests with gunicorn's parser and writes every
response in two ``send`` calls (the headers, then the body). Profiling ``POST /send`` under load
put about a fifth of a worker's CPU there; gevent's ``pywsgi`` writes headers and body in one
call and parsed the same requests for less (see the README's outbound benchmark). Everything
else is gunicorn's ``gevent`` worker unchanged: monkey-patching before the app loads, the
heartbeat that gets a blocked worker restarted, graceful shutdown, ``worker_connections``.

Three changes to pywsgi's handler:

* an idle keep-alive connection is closed: the wait for the next request line is bounded by
  gunicorn's ``keepalive`` setting, as with gunicorn's own parser (reading a request body and
  writing the answer are not bounded by it);
* request headers are read by :class:`RequestHeaders` instead of the standard library's email
  parser (a sixth of pywsgi's cost per request), and stricter: a folded (obsolete) header
  line, a line without a colon, whitespace before the colon, more than ``MAX_HEADERS`` lines,
  a line longer than ``MAX_HEADER_LINE``, a field name that is not an RFC 9110 token or two
  different Content-Length values get a 400;
* nothing is computed for the access log when gunicorn's access log is off (the default).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

MAX_HEADERS = 100  # header lines per request, as the standard library's parser
MAX_HEADER_LINE = 65536  # bytes
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token


class RequestHeaders:
    """The request's header lines, with the interface pywsgi's handler uses (``get``,
    ``getheader``, ``typeheader``, ``headers``, ``del``, and ``status``: empty, or why the
    headers are unacceptable, which pywsgi answers with 400)."""

    __slots__ = ("_pairs", "status")

    def __init__(self, rfile: BinaryIO, *_: Any) -> None:
        self._pairs: list[tuple[str, str]] = []
        self.status = ""
        while True:
            raw = rfile.readline(MAX_HEADER_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            if len(raw) > MAX_HEADER_LINE:
                self.status = "Line too long"
                break
            if len(self._pairs) >= MAX_HEADERS:
                self.status = "Too many headers"
                break
            line = raw.decode("latin-1")
            name, colon, value = line.partition(":")
            if not colon or _FIELD_NAME.fullmatch(name) is None:
                self.status = "Malformed header line"
                break
            self._pairs.append((name, value.strip(" \t\r\n")))
        if not self.status and len(set(self.get_all("content-length"))) > 1:
            self.status = "Conflicting Content-Length"

    def get(self, name: str, default: Any = None) -> Any:
        wanted = name.lower()
        for key, value in self._pairs:
            if key.lower() == wanted:
                return value
        return default

    getheader = get

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._pairs if key.lower() == wanted]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_all(name))

    def __delitem__(self, name: str) -> None:
        wanted = name.lower()
        self._pairs = [(key, value) for key, value in self._pairs if key.lower() != wanted]

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")  # type: ignore[no-any-return]

    @property
    def headers(self) -> Iterator[str]:
        for key, value in self._pairs:
            yield f"{key}: {value}\r\n"


class IdleClosingHandler(PyWSGIHandler):  # type: ignore[misc]
    """pywsgi's handler, closing a connection that sends no request line for ``idle_timeout``
    seconds (a timed-out read ends the connection quietly, like a client hanging up)."""

    idle_timeout: float | None = 5.0

    MessageClass = RequestHeaders  # pywsgi calls self.MessageClass(rfile, 0)

    def log_request(self) -> None:
        if self.server.log.access_log_enabled:
            super().log_request()

    def read_requestline(self) -> str:
        self.socket.settimeout(self.idle_timeout)
        try:
            line: str = super().read_requestline()
        finally:
            if self.socket is not None:
                self.socket.settimeout(None)
        return line


class GatewayWorker(GeventPyWSGIWorker):  # type: ignore[misc]
    """``worker_class`` of gateway/gunicorn.conf.py."""

    wsgi_handler = IdleClosingHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # one worker per process: the class attribute is this worker's setting
        IdleClosingHandler.idle_timeout = float(self.cfg.keepalive) or None
