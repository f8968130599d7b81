"""Reading a request body within bounds, with werkzeug's own readers.

:func:`reading_body` wraps the app's reads of ``wsgi.input`` (``request.get_data``,
werkzeug's form parser):

* a body that stalls is cut off: under gunicorn, every read from the client's socket must get
  data within ``BODY_STALL_TIMEOUT`` seconds (a socket timeout on ``gunicorn.socket`` while
  the body is read), else 408 and the connection is closed;
* a body that cannot be read -- an invalid chunk size or other chunked framing error found by
  gunicorn's reader, or a client that closed before sending all of it -- is 400 and the
  connection is closed (gunicorn would not reuse it either);
* a body larger than the route allows is werkzeug's 413 (``max_content_length``), after which
  the connection is closed too (see :mod:`telegram_gateway.web.connection`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

from gunicorn.http.errors import ParseException
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestTimeout

from telegram_gateway.web.connection import close_after_answer

BODY_STALL_TIMEOUT = 10.0  # seconds one read of the request body may wait for data


@contextmanager
def reading_body(environ: Mapping[str, Any]) -> Iterator[None]:
    """Bound and classify the reads of the request body done inside the block."""
    sock = environ.get("gunicorn.socket")
    previous = sock.gettimeout() if sock is not None else None
    if sock is not None:
        sock.settimeout(BODY_STALL_TIMEOUT)
    try:
        yield
    except TimeoutError:
        close_after_answer()
        raise _stalled() from None
    except ClientDisconnected as exc:
        # werkzeug turns an error of the underlying read into ClientDisconnected
        close_after_answer()
        if isinstance(exc.__context__, TimeoutError):
            raise _stalled() from None
        raise BadRequest("body: the request body ended before its announced end") from None
    except ParseException as exc:
        close_after_answer()
        raise BadRequest(f"body: malformed request body ({exc})") from None
    finally:
        if sock is not None:
            with suppress(OSError):  # the connection is gone already
                sock.settimeout(previous)


def _stalled() -> RequestTimeout:
    return RequestTimeout(
        f"body: no data from the client for {BODY_STALL_TIMEOUT:g} s while reading the body"
    )
