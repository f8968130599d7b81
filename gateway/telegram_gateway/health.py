"""Health checks: small named facts with a human reason, gathered for ``/healthz``.

Components (bus, Bot API probe, pollers, sender) each report :class:`Check` entries; the
gateway is healthy when every check is ok. Checks are computed from state that background
work keeps current, so ``/healthz`` never does I/O and answers in microseconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
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


def _everywhere(bot_id: int) -> bool:
    return True


def _unknown(bot_id: int) -> Check | None:
    return None


def _ignore(bot_id: int, check: Check) -> None:
    pass


class BotApiProbe:
    """Calls ``getMe`` for every bot in the background, spread over the probe period;
    ``/healthz`` reads the last outcome. The period is ``interval`` (every bot that often)
    unless that takes more than :data:`PROBES_PER_SECOND`.

    Only bots whose instance runs on this host's Bot API server are probed (``local``: their
    owner polls here), since a request launches the instance; for the others ``remote`` gives
    what their owner's host last found (None: nothing yet), and ``on_result`` hands each result
    on (the owner writes it into its record)."""

    def __init__(
        self,
        clients: list[BotApiClient],
        interval: float,
        timeout: float,
        local: Callable[[int], bool] = _everywhere,
        remote: Callable[[int], Check | None] = _unknown,
        on_result: Callable[[int, Check], None] = _ignore,
    ) -> None:
        self.clients = clients
        self.interval = interval
        self.timeout = timeout
        self.local, self.remote, self.on_result = local, remote, on_result
        self._unprobed = Check(False, "not probed yet")
        self._results: dict[int, Check] = {c.bot.bot_id: self._unprobed for c in clients}
        self._skipped: set[int] = set()  # bots passed over while not local
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
        by_id = {client.bot.bot_id: client for client in self.clients}
        while True:
            probed = False
            self._probe_newly_local(by_id)
            for client in self.clients:
                if not self.local(client.bot.bot_id):
                    self._skipped.add(client.bot.bot_id)
                    continue
                if self._stop.wait(pause):
                    return
                self._probe_newly_local(by_id)  # (once per pause: cheap)
                self._probe(client)
                probed = True
            # nothing polled here yet (a worker starting): look again soon
            if not probed and self._stop.wait(min(pause, 0.25 if self._skipped else 1.0)):
                return

    def _probe_newly_local(self, by_id: dict[int, BotApiClient]) -> None:
        """Bots passed over that are polled on this host now: probed at once (a worker that
        took a bot reports its Bot API check within moments, not after a whole period)."""
        for bot_id in [b for b in self._skipped if self.local(b)]:
            self._skipped.discard(bot_id)
            self._probe(by_id[bot_id])

    def probe_once(self) -> None:
        for client in self.clients:
            if self.local(client.bot.bot_id):
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
        self.on_result(bot_id, check)

    def _check(self, bot_id: int, own: Check) -> Check:
        local = self.local(bot_id)
        if local and own is not self._unprobed:
            return own
        # polled on another host, or here but not probed by this worker yet: what the
        # owner found (its record)
        return self.remote(bot_id) or (
            own
            if local
            else Check(False, "not probed yet (probed on the host whose gateway polls the bot)")
        )

    @property
    def ok(self) -> bool:
        return all(self._check(bot_id, c).ok for bot_id, c in self._results.items())

    def checks(self) -> dict[str, Check]:
        return {
            f"telegram_api:{bot_id}": self._check(bot_id, check)
            for bot_id, check in self._results.items()
        }
