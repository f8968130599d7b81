"""gunicorn settings for the telegram gateway, driven by the environment.

    PYTHONPATH=gateway gunicorn -c gateway/gunicorn.conf.py telegram_gateway.wsgi:app

GATEWAY_BIND     listen address (default 127.0.0.1:8000; keep it on loopback)
GATEWAY_WORKERS  number of worker processes (default 2); every worker serves HTTP and NATS
                 requests, and per bot exactly one of them polls Telegram (a file lock)
GATEWAY_STATE_DIR  state directory; metrics of all workers are aggregated in <dir>/metrics

Workers are gevent workers: one process serves many slow requests cooperatively. The app is
loaded in each worker after fork (``preload_app = False``) so that gevent patches first;
background work (NATS loop, pollers, probes) starts in ``post_worker_init`` and stops in
``worker_exit``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

bind = os.environ.get("GATEWAY_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
# gunicorn's gevent worker, serving HTTP with gevent's pywsgi (see telegram_gateway/http_worker.py)
worker_class = "telegram_gateway.http_worker.GatewayWorker"
worker_connections = 1000
preload_app = False
# a worker whose hub is blocked this long is restarted; the gevent worker heartbeats from
# its hub, so this catches a blocked event loop, not a slow Telegram
timeout = 30
graceful_timeout = 10
# seconds an idle keep-alive connection waits for its next request before it is closed
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GATEWAY_LOG_LEVEL", "info").lower()
proc_name = "telegram-gateway"

_state_dir = Path(os.environ.get("GATEWAY_STATE_DIR", "/var/lib/telegram-gateway"))
_metrics_dir = _state_dir / "metrics"


def on_starting(server: Any) -> None:
    """Fresh multiprocess metrics directory for this master (prometheus_client reads
    PROMETHEUS_MULTIPROC_DIR when workers import it)."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    _metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)


def post_worker_init(worker: Any) -> None:
    """Start the NATS loop, pollers and probes inside the (gevent-patched) worker."""
    from telegram_gateway.app import gateway_of

    gateway_of(worker.wsgi).start()


def worker_exit(server: Any, worker: Any) -> None:
    wsgi = getattr(worker, "wsgi", None)
    if wsgi is None:
        return
    from telegram_gateway.app import gateway_of

    gateway_of(wsgi).stop()


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the aggregated metrics."""
    try:
        from prometheus_client import multiprocess
    except ImportError:  # pragma: no cover
        return
    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))
