"""Prometheus metrics of the gateway, defined in one place.

Under gunicorn every worker is a process of its own: ``gunicorn.conf.py`` points
``PROMETHEUS_MULTIPROC_DIR`` at ``<state dir>/metrics`` before the workers start, so
prometheus_client keeps each worker's values in files there and :func:`render` adds them
up (counters and histograms summed; gauges as their ``multiprocess_mode`` says; a dead
worker's live gauges are dropped by the ``child_exit`` hook). Without that variable (unit
tests, scripts) the process-local default registry is used.

Adding a metric: define it below with the ``telegram_gateway_`` prefix, the labels it needs
(bounded sets only: bot ids, update types, methods, codes; never chat ids or text) and, for
a gauge, the multiprocess mode that makes sense across workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

PREFIX = "telegram_gateway_"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# ---- inbound: poller -> JetStream ----------------------------------------------------------
UPDATES_RECEIVED = Counter(
    PREFIX + "updates_received",
    "Updates returned by getUpdates (a redelivered update counts again)",
    ["bot", "type"],
)
UPDATES_PUBLISHED = Counter(
    PREFIX + "updates_published",
    "Updates newly stored in JetStream (acknowledged, not a duplicate)",
    ["bot", "type"],
)
UPDATES_DUPLICATE = Counter(
    PREFIX + "updates_duplicate",
    "Updates JetStream acknowledged as duplicates (already stored; dropped by Nats-Msg-Id)",
    ["bot", "type"],
)
ROUTED_COPIES = Counter(
    PREFIX + "routed_copies",
    "Extra copies published to routing-rule subjects",
    ["bot", "route"],
)
PUBLISH_SECONDS = Histogram(
    PREFIX + "publish_seconds",
    "Time until JetStream acknowledged every update of one getUpdates batch",
    ["bot"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GETUPDATES_ERRORS = Counter(
    PREFIX + "getupdates_errors",
    "Failed getUpdates calls by error code (HTTP/Telegram code, 'unavailable', 'timeout')",
    ["bot", "code"],
)
POLLER_LAG = Gauge(
    PREFIX + "poller_lag_seconds",
    "Age of the oldest update received but not yet confirmed to the Bot API (0 = none)",
    ["bot"],
    multiprocess_mode="livemax",
)
POLLER_ACTIVE = Gauge(
    PREFIX + "poller_active",
    "1 in the worker that holds the bot's poller lock (sum over workers: 1)",
    ["bot"],
    multiprocess_mode="livesum",
)

# ---- NATS ----------------------------------------------------------------------------------
NATS_CONNECTED = Gauge(
    PREFIX + "nats_connected",
    "1 while this worker is connected to NATS (one sample per worker process)",
    multiprocess_mode="liveall",
)


# ---- outbound: /send and telegram.out.* -> Bot API ------------------------------------------
SENDS = Counter(
    PREFIX + "sends",
    "Outbound Bot API calls by method and outcome: 'ok', Telegram's error_code, 'timeout', "
    "'unavailable', or 'refused' (the gateway's pacing would have waited too long)",
    ["bot", "method", "status"],
)
BOTAPI_429 = Counter(
    PREFIX + "botapi_429",
    "429 Too Many Requests answers from the Bot API (stays 0 while pacing works)",
    ["bot"],
)
SEND_WAIT = Histogram(
    PREFIX + "send_wait_seconds",
    "Time a message waited for its slot under Telegram's limits before it was sent",
    ["bot"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
SEND_SECONDS = Histogram(
    PREFIX + "send_botapi_seconds",
    "Duration of one outbound Bot API call",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# ---- received files -> agents -----------------------------------------------------------------
FILES = Counter(
    PREFIX + "files",
    "Received files asked for, by path (nats, http, route) and outcome "
    "(stored, reused, streamed, too_large, failed)",
    ["bot", "via", "outcome"],
)
FILES_BYTES = Counter(
    PREFIX + "files_bytes",
    "Bytes of received files stored in TELEGRAM_FILES or streamed over HTTP",
    ["bot", "via"],
)
REPLY_REDACTIONS = Counter(
    PREFIX + "reply_redactions",
    "Bot API answers that held a configured bot token's secret and were redacted before "
    "being passed on (stays 0; see telegram_gateway.replies)",
    ["bot", "method"],
)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render() -> bytes:
    """All metrics in the Prometheus text format: every worker's, when under gunicorn."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
