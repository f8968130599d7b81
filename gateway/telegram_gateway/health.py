"""Health checks: small named facts with a human reason, gathered for ``/healthz``.

Components (bus, Bot API probe, pollers, sender) each report :class:`Check` entries; the
gateway is healthy when every check is ok. Checks are computed from state that background
work keeps current, so ``/healthz`` never does I/O and answers in microseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from telegram_gateway.botapi import BotApiClient
from telegram_gateway.errors import BotApiError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "reason": self.reason}


class Component(Protocol):
    """Something the gateway starts, stops and asks for health checks."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def checks(self) -> dict[str, Check]: ...


#: getMe calls per second per worker at most: with many bots each is probed less often
#: (every bots / PROBES_PER_SECOND seconds when that is longer than the interval) instead of
#: the probe keeping a worker busy (1,000 bots every 5 s were 200 getMe/s per worker; at 10/s
#: the probe was still a fifth of an idle worker's CPU). Each bot's owner proves its token and
#: the server with every getUpdates anyway (a failing one is the poller's check).
PROBES_PER_SECOND = 2.0


class BotApiProbe:
    """Calls ``getMe`` for every bot in the background, spread over the probe period;
    ``/healthz`` reads the last outcome. The period is ``interval`` (every bot that often)
    unless that takes more than :data:`PROBES_PER_SECOND`."""

    def __init__(self, clients: list[BotApiClient], interval: float, timeout: float) -> None:
        self.clients = clients
        self.interval = interval
        self.timeout = timeout
        self._results: dict[int, Check] = {
            c.bot.bot_id: Check(False, "not probed yet") for c in clients
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.probe_once()
        self._thread = threading.Thread(target=self._run, name="botapi-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def period(self) -> float:
        """Seconds between two probes of one bot."""
        return max(self.interval, len(self.clients) / PROBES_PER_SECOND)

    def _run(self) -> None:
        if not self.clients:
            return
        pause = self.period / len(self.clients)
        while True:
            for client in self.clients:
                if self._stop.wait(pause):
                    return
                self._probe(client)

    def probe_once(self) -> None:
        for client in self.clients:
            self._probe(client)

    def _probe(self, client: BotApiClient) -> None:
        bot_id = client.bot.bot_id
        started = time.monotonic()
        try:
            me = client.get_me(timeout=self.timeout)
        except BotApiError as exc:
            check = Check(False, f"getMe failed: {exc}")
        else:
            took = (time.monotonic() - started) * 1000
            check = Check(True, f"getMe ok as @{me.get('username', '?')} in {took:.0f} ms")
        previous = self._results.get(bot_id)
        if previous is not None and previous.ok != check.ok:
            log = logger.info if check.ok else logger.warning
            log("Bot API for bot %s: %s", client.bot.label, check.reason)
        self._results[bot_id] = check

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self._results.values())

    def checks(self) -> dict[str, Check]:
        return {f"telegram_api:{bot_id}": check for bot_id, check in self._results.items()}
