"""The gateway's health in ``systemctl status``, and systemd's watchdog.

Runs as one thread in gunicorn's arbiter (started by the ``when_ready`` hook in
``gunicorn.conf.py``; the arbiter is the unit's main process, so ``NotifyAccess=main`` lets
it talk to systemd). Every ``interval`` seconds it asks the workers for ``/healthz`` over
loopback HTTP and tells systemd, through gunicorn's own ``sd_notify``:

* ``STATUS=<summary>`` -- one line made of the same checks as ``/healthz``, e.g.
  ``2/2 bots polled, NATS connected, 0 failing``, which ``systemctl status`` shows as
  ``Status: "…"``;
* ``WATCHDOG=1`` -- only when a worker answered (200 or 503: an unhealthy dependency is not a
  stalled gateway). With ``WatchdogSec=`` in the unit, a gateway whose workers all stop
  answering (a blocked event loop) gets no more pings and systemd restarts it. One stalled
  worker of several is gunicorn's business (its ``timeout`` replaces the worker) while the
  others keep answering.

Without ``$NOTIFY_SOCKET`` (not run by systemd) nothing starts. The interval is a quarter of
``$WATCHDOG_USEC`` when systemd set one (so a ping is missed only after four failed probes),
else 10 s.
"""

from __future__ import annotations

# This thread runs in the arbiter, which forks the workers: a fork while the thread holds an
# import lock leaves the child a module it cannot import. urllib's first request imports the
# "idna" codec lazily; a worker forked during that import failed its boot with "unknown
# encoding: idna" (and the arbiter then stopped the service). So everything the thread uses
# is imported here, before it starts, and the children inherit it imported.
import encodings.idna  # noqa: F401
import http.client  # noqa: F401
import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from gunicorn.systemd import sd_notify

DEFAULT_INTERVAL = 10.0
MAX_PROBE_TIMEOUT = 5.0


def summary(body: dict[str, Any]) -> str:
    """One line from a ``/healthz`` body: bots polled, NATS, how many checks fail (and the
    first of them with its reason)."""
    checks: dict[str, dict[str, Any]] = body.get("checks") or {}
    pollers = [name for name in checks if name.startswith("poller:")]
    polled = sum(1 for name in pollers if checks[name].get("ok"))
    nats = checks.get("nats", {})
    nats_text = "NATS connected" if nats.get("ok") else f"NATS {nats.get('reason', 'unknown')}"
    failing = sorted(name for name, check in checks.items() if not check.get("ok"))
    line = f"{polled}/{len(pollers)} bots polled, {nats_text}, {len(failing)} failing"
    if failing:
        first = failing[0]
        line += f" ({first}: {checks[first].get('reason', '?')})"
    return line[:400]


def probe(url: str, timeout: float) -> str | None:
    """The summary line when a worker answered ``/healthz`` in time, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:  # 503: answered, unhealthy
        raw = exc.read()
    except (OSError, ValueError):
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return summary(body) if isinstance(body, dict) else None


class StatusNotifier:
    """The arbiter's thread: probe ``/healthz``, send ``STATUS=`` and ``WATCHDOG=1``."""

    def __init__(
        self,
        url: str,
        interval: float,
        notify: Callable[[str], None],
        log: Callable[[str], None],
        check: Callable[[str, float], str | None] = probe,
    ) -> None:
        self.url = url
        self.interval = interval
        self.notify = notify
        self.log = log
        self.check = check
        self._stop = threading.Event()
        self._last_status: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="systemd-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def tick(self) -> bool:
        """One probe; True when the workers answered (and the watchdog was fed)."""
        status = self.check(self.url, min(self.interval, MAX_PROBE_TIMEOUT))
        if status is None:
            status = "workers not answering /healthz"
            message = f"STATUS={status}"
        else:
            message = f"WATCHDOG=1\nSTATUS={status}"
        if status != self._last_status:
            self.log(f"status: {status}")
            self._last_status = status
        self.notify(message)
        return message.startswith("WATCHDOG=1")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval)


def interval_from_environment(environ: Mapping[str, str]) -> float:
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
        return int(usec) / 1_000_000 / 4
    return DEFAULT_INTERVAL


def start_for(server: Any) -> StatusNotifier | None:
    """From gunicorn's ``when_ready`` hook: the notifier for this arbiter, started; None when
    not run by systemd."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    address = server.address[0]
    if not isinstance(address, tuple):
        server.log.warning("no systemd status: the gateway does not listen on TCP")
        return None
    host, port = address[:2]
    host = f"[{host}]" if ":" in str(host) else host
    notifier = StatusNotifier(
        f"http://{host}:{port}/healthz",
        interval_from_environment(os.environ),
        lambda message: sd_notify(message, server.log),
        server.log.info,
    )
    notifier.start()
    return notifier
