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


class BotApiProbe:
    """Calls ``getMe`` for every bot in the background; ``/healthz`` reads the last outcome."""

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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.probe_once()

    def probe_once(self) -> None:
        for client in self.clients:
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
