"""Closing the client's connection after an answer, under gunicorn.

gunicorn decides whether a connection stays open for the next request; an application cannot
say ``Connection: close`` (it drops hop-by-hop headers). After refusing a request before
reading its body (401, 411, 413, an upload refused with 503) or when the body could not be
read (400, 408), the rest of that body must not be read as the next request, nor read at all:
:func:`close_after_answer` asks gunicorn to answer with ``Connection: close`` and close.

``gunicorn.conf.py``'s ``pre_request`` hook puts gunicorn's request object into
:data:`SERVER_REQUEST` (a context variable: every connection is served by its own greenlet).
Outside gunicorn (Flask's test client) it is unset and closing is left to the server.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

SERVER_REQUEST: ContextVar[Any] = ContextVar("gunicorn_request", default=None)


def close_after_answer() -> None:
    """Have the server close the connection after this request's answer."""
    request = SERVER_REQUEST.get()
    if request is not None:
        request.force_close()  # gunicorn.http.message.Message.force_close
