"""gunicorn settings for the telegram gateway, driven by the environment.

    PYTHONPATH=gateway gunicorn -c gateway/gunicorn.conf.py telegram_gateway.wsgi:app

GATEWAY_BIND     listen address (default 127.0.0.1:8000; keep it on loopback)
GATEWAY_WORKERS  number of worker processes (default 2); every worker serves HTTP and NATS
                 requests, and per bot exactly one of them polls Telegram
GATEWAY_STATE_DIR  state directory; metrics of all workers are aggregated in <dir>/metrics,
                 multipart uploads are spooled in <dir>/uploads

HTTP is served by gunicorn's stock ``gevent`` worker with gunicorn's own HTTP/1.1 parser: no
HTTP code of the gateway's. What that parser already refuses with a 4xx before the app runs:
a malformed request line (also HTTP/0.9's ``GET /``), a header name that is not a token, CR,
LF, NUL or another control character in a header value, a folded header line, a bare LF,
``Content-Length`` together with ``Transfer-Encoding``, a ``Content-Length`` that is not
plain digits (``+5``, ``1_0``, ``-5``) or given twice, ``chunked`` twice, a transfer coding
it does not know (501). A chunked body with an invalid chunk size fails when the app reads it
(the app answers 400) and gunicorn never reuses that connection.
The one thing it accepts that we do not is a ``Transfer-Encoding`` other than exactly
``chunked`` (``gzip, chunked``; ``identity`` or ``gzip`` in a second header line): it would
hand a compressed body to the app. ``pre_request`` answers that with 400.

The bounds, each enforced by gunicorn or gevent (the README's "HTTP server" paragraph):

* a request head must arrive within ``keepalive`` seconds: the gevent worker reads every head,
  the first one on a connection included, under ``gevent.Timeout(keepalive)`` and closes the
  connection when it fires -- an idle keep-alive connection and a client that sent part of a
  head and stopped are both closed after 5 s;
* a request head is at most 64 KiB: ``limit_request_line`` + CRLF, then at most
  ``limit_request_fields`` lines of at most ``limit_request_field_size`` bytes (gunicorn
  stops reading a head at ``fields * (field_size + 2) + 4`` bytes); see HEAD_LIMIT below;
* ``worker_connections`` greenlets per worker: enough that 2,000 clients stuck in a request
  head (each closed after ``keepalive``) leave room for ``/healthz``; the open-files limit
  is raised to fit (below);
* a request body that stalls, and the connection after a 401/413 the app answers before
  reading the body: the app's business (``telegram_gateway.web.request_body``), with the
  ``pre_request`` hook below giving it gunicorn's request so it can close the connection.

The app is loaded in each worker after fork (``preload_app = False``) so that gevent patches
first; background work (NATS loop, pollers, probes) starts in ``post_worker_init`` and stops
in ``worker_exit``.
"""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path
from typing import Any

from gunicorn.http.errors import InvalidHeader

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
worker_class = "gevent"
# gunicorn's Python parser, the one the tests exercise ("auto" would switch to the optional C
# parser gunicorn_h1c whenever that package happens to be installed; it measured no faster)
http_parser = "python"
# connections (greenlets) per worker; a full pool stops accepting, so it must hold every stuck
# client (each closed after `keepalive`) plus the requests that matter
worker_connections = 4096
preload_app = False
# a worker whose hub is blocked this long is restarted; the gevent worker heartbeats from
# its hub, so this catches a blocked event loop, not a slow Telegram
timeout = 30
graceful_timeout = 10
# seconds to wait for a whole request head, also for the next one on a keep-alive connection
keepalive = 5
# the request head: at most 64 KiB in total
HEAD_LIMIT = 64 * 1024
limit_request_line = 8190  # gunicorn's maximum
limit_request_fields = 50
limit_request_field_size = 1024  # bytes of one header line (a bearer token needs ~60)
assert limit_request_line + 2 + limit_request_fields * (limit_request_field_size + 2) + 4 <= (
    HEAD_LIMIT
), "the request head limits add up to more than HEAD_LIMIT"
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GATEWAY_LOG_LEVEL", "info").lower()
proc_name = "telegram-gateway"

_state_dir = Path(os.environ.get("GATEWAY_STATE_DIR", "/var/lib/telegram-gateway"))
_metrics_dir = _state_dir / "metrics"
_uploads_dir = _state_dir / "uploads"


def _raise_open_files_limit(wanted: int) -> None:
    """Every connection is a file descriptor: raise the soft limit (1024 by default under
    systemd) towards ``wanted``, within the hard limit, which needs no privilege."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


_raise_open_files_limit(worker_connections + 1024)


def on_starting(server: Any) -> None:
    """Fresh multiprocess metrics directory for this master (prometheus_client reads
    PROMETHEUS_MULTIPROC_DIR when workers import it), and no upload left over from a
    previous run in the spool directory."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
    shutil.rmtree(_uploads_dir, ignore_errors=True)


def when_ready(server: Any) -> None:
    """Under systemd: the health summary in ``systemctl status`` and the watchdog's pings,
    from a thread of this arbiter (``telegram_gateway.systemd_status``)."""
    from telegram_gateway.systemd_status import start_for

    start_for(server)


def post_worker_init(worker: Any) -> None:
    """Start the NATS loop, pollers and probes inside the (gevent-patched) worker. Then move
    everything built so far out of the garbage collector's sight (``gc.freeze``): it lives as
    long as the worker, and with a thousand bots a full collection that walks it all stalled
    every request of the worker for tens of milliseconds."""
    import gc

    from telegram_gateway.app import gateway_of

    gateway_of(worker.wsgi).start()
    gc.freeze()


def pre_request(worker: Any, req: Any) -> None:
    """Refuse a Transfer-Encoding other than exactly ``chunked`` (gunicorn accepts ``gzip,
    chunked`` and passes the compressed body on); then hand gunicorn's request to the app so
    that it can have the connection closed after its answer
    (``telegram_gateway.web.connection``)."""
    codings = [value for name, value in req.headers if name == "TRANSFER-ENCODING"]
    if codings and [value.strip().lower() for value in codings] != ["chunked"]:
        raise InvalidHeader("TRANSFER-ENCODING", req=req)  # gunicorn answers 400 and closes
    from telegram_gateway.web.connection import SERVER_REQUEST

    SERVER_REQUEST.set(req)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    from telegram_gateway.web.connection import SERVER_REQUEST

    SERVER_REQUEST.set(None)


def worker_exit(server: Any, worker: Any) -> None:
    wsgi = getattr(worker, "wsgi", None)
    if wsgi is None:
        return
    from telegram_gateway.app import gateway_of

    gateway_of(wsgi).stop()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the aggregated metrics and the uploads it was
    spooling (their names start with its pid, see telegram_gateway.web.uploads)."""
    for leftover in _uploads_dir.glob(f"{worker.pid}.*"):
        leftover.unlink(missing_ok=True)
    try:
        from prometheus_client import multiprocess
    except ImportError:  # pragma: no cover
        return
    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))
