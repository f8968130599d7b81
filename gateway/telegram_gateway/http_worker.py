"""The gunicorn worker class: gevent, serving HTTP with gevent's own WSGI server (pywsgi).

gunicorn's plain ``gevent`` worker parses requests with gunicorn's parser and writes every
response in two ``send`` calls (the headers, then the body). Profiling ``POST /send`` under load
put about a fifth of a worker's CPU there; gevent's ``pywsgi`` writes headers and body in one
call and parsed the same requests for less (see the README's outbound benchmark). Everything
else is gunicorn's ``gevent`` worker unchanged: monkey-patching before the app loads, the
heartbeat that gets a blocked worker restarted, graceful shutdown, ``worker_connections``.

One thing pywsgi does not do by itself is close an idle keep-alive connection. Here the wait
for the next request line is bounded by gunicorn's ``keepalive`` setting, as with gunicorn's
own parser; reading a request body and writing the answer are not bounded by it.
"""

from __future__ import annotations

from typing import Any

from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler


class IdleClosingHandler(PyWSGIHandler):  # type: ignore[misc]
    """pywsgi's handler, closing a connection that sends no request line for ``idle_timeout``
    seconds (a timed-out read ends the connection quietly, like a client hanging up)."""

    idle_timeout: float | None = 5.0

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
