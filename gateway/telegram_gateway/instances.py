"""Which hosts' Bot API servers run an instance of each bot, and closing the ones not needed.

Every host runs its own Bot API server, and a request for a bot launches that server's
instance of it (telegram-bot-api creates a client for the token). A launched instance receives
the bot's updates from Telegram into its own queue, which the server keeps across restarts, and
Telegram does not promise which of several launched instances gets an update. So an instance
on a host whose gateway no longer polls the bot (the bot moved to another host, the host was
down) may hold, or keep receiving, updates that nobody would ever fetch. This module keeps
track of them and gets rid of them:

* ``instances.<bot_id>.<host>`` in ``TELEGRAM_OWNERS`` exists while the server of ``<host>``
  may run the bot's instance or keep updates for it. Its value names the worker of that host
  responsible for it. A worker writes it (naming itself) *before* its first request for the
  bot to the local server: :meth:`Instances.ensure`, called by :class:`~telegram_gateway
  .botapi.BotApi` before every request. The key is replicated with the bucket, so it outlives
  its host.
* While the bot's owner (:mod:`telegram_gateway.ownership`) is a worker of another host, or no
  worker at all, the named worker of this host *drains* the instance: ``getUpdates`` with no
  wait, every update published to JetStream like the poller does (its ``Nats-Msg-Id`` names
  this host, so what the host published before a crash is dropped as a repeat within the
  stream's duplicate window), confirmed, and once the queue is empty, ``close``. The server
  refuses ``close`` in the first 10 minutes of an instance launched more than 10 minutes after
  the server's start (429): the drain goes on meanwhile and closes when it may. Closed, the key
  is deleted (revision-checked: a worker that needed the instance again meanwhile renamed it,
  and the drain stops).
* A named worker that is gone (its lease expired) is replaced by a live worker of the same host
  (revision-checked update). A host that is down keeps its keys until it is back: then its
  workers drain what its server kept (see the README, "More than one host").
* A drain stops as soon as the bot's owner is a worker of this host again: the owner polls the
  same queue.

Runs on the NATS loop (the decisions) and in a greenlet per drained bot (the requests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from telegram_gateway.botapi import BotApiClient
from telegram_gateway.bus import Bus, Entry
from telegram_gateway.config import Settings
from telegram_gateway.errors import (
    BotApiError,
    BotApiUnreachable,
    BusError,
    RevisionMismatch,
    TelegramError,
)
from telegram_gateway.health import Check
from telegram_gateway.ownership import OWNERS_BUCKET

if TYPE_CHECKING:
    from telegram_gateway.files import ReceivedFiles
    from telegram_gateway.ownership import Ownership
    from telegram_gateway.routing import Router

logger = logging.getLogger(__name__)

#: seconds between two drain rounds of an empty queue whose close the server refused (the
#: instance may still receive updates: they are fetched this often until it closes)
DRAIN_PAUSE = 2.0
#: seconds to wait for NATS when writing an instance key before a request
ENSURE_TIMEOUT = 5.0
#: a bot without a live owner this long is drained where its instance is (a takeover takes
#: about the lease time; after that nobody is about to poll it)
OWNERLESS_GRACE = 10.0


def instance_key(bot_id: int, host: str) -> str:
    return f"instances.{bot_id}.{host}"


def host_of(worker: str) -> str:
    """The host part of a worker name ``<host>-<pid>``."""
    host, _, pid = worker.rpartition("-")
    return host if pid.isdigit() else worker


@dataclass
class Seen:
    worker: str
    revision: int


class Instances:
    """This host's Bot API server instances (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        ownership: Ownership,
        clients: dict[int, BotApiClient],
        router: Router | None = None,
        files: ReceivedFiles | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.ownership = ownership
        self.clients = clients
        self.router = router
        self.files = files
        self.host = settings.host_name
        self.mine: dict[int, Seen] = {}  # this host's keys as seen (bot -> named worker)
        self.drains: dict[int, Any] = {}  # bots being drained by this worker: their Drainer
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._ownerless: dict[int, float] = {}  # bots seen without a live owner: since when
        ownership.on_instance(self._on_entry)
        ownership.on_change(self._poke)

    # ---- before every request to the local Bot API server (greenlets) ---------------------
    def ensure(self, bot_id: int, method: str = "") -> None:
        """Make sure this host's key for the bot names this worker before a request for it
        goes to the local server. Raises :class:`BotApiUnreachable` (nothing was sent) when it
        cannot be written."""
        seen = self.mine.get(bot_id)
        if seen is not None and seen.worker == self.ownership.name:
            return
        if bot_id not in self.clients:
            return  # not one of the configured bots: nothing of ours
        if (
            seen is not None
            and bot_id not in self.ownership.leases
            and host_of(seen.worker) == self.host
            and self.ownership.alive(seen.worker)
            and self.polled_here(bot_id)
        ):
            # polled on this host and looked after by a live worker of it: nobody drains it.
            # (The owner itself renames the key, so that a drain that was about to close the
            # instance cannot delete the key under it.)
            return
        try:
            self.bus.run(self._name_me(bot_id), ENSURE_TIMEOUT)
        except (BusError, TimeoutError, OSError) as exc:
            raise BotApiUnreachable(
                method,
                f"{method}: not sent: cannot record in NATS that this host's Bot API server "
                f"runs bot {bot_id} ({exc})",
            ) from None

    async def _name_me(self, bot_id: int) -> None:
        key = instance_key(bot_id, self.host)
        value = json.dumps({"worker": self.ownership.name, "at": round(time.time(), 3)}).encode()
        for _ in range(5):
            seen = self.mine.get(bot_id)
            try:
                if seen is None:
                    revision = await self.bus.kv_create_async(OWNERS_BUCKET, key, value)
                else:
                    revision = await self.bus.kv_update_async(
                        OWNERS_BUCKET, key, value, seen.revision
                    )
            except RevisionMismatch:
                entry = await self.bus.kv_get_async(OWNERS_BUCKET, key)
                if entry is None:
                    self.mine.pop(bot_id, None)
                else:
                    self.mine[bot_id] = Seen(_named(entry.value), entry.revision)
                continue
            self.mine[bot_id] = Seen(self.ownership.name, revision)
            return
        raise BusError(f"{key} keeps changing")

    # ---- on the NATS loop -------------------------------------------------------------------
    def _on_entry(self, bot_id: int, host: str, entry: Entry) -> None:
        if host != self.host:
            return
        if entry.value is None:
            self.mine.pop(bot_id, None)
        else:
            seen = self.mine.get(bot_id)
            if seen is None or entry.revision >= seen.revision:
                self.mine[bot_id] = Seen(_named(entry.value), entry.revision)
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None:
            self.bus.call_soon(wake.set)

    def start(self) -> None:
        self._stopping = False
        self.bus.spawn(self._run())

    def stop(self) -> None:
        self._stopping = True
        for drainer in list(self.drains.values()):
            drainer.stop(timeout=1)
        self.drains.clear()
        self._poke()

    def checks(self) -> dict[str, Any]:
        return {}

    async def _run(self) -> None:
        self._wake = asyncio.Event()
        while not self._stopping:
            try:
                await self._round()
            except Exception:
                logger.exception("looking after this host's Bot API instances failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.ownership.interval)
            self._wake.clear()

    def polled_here(self, bot_id: int) -> bool:
        """The bot's owner is a live worker of this host (its instance here is in use)."""
        if bot_id in self.ownership.leases:
            return True
        owner = self.ownership.owner(bot_id)
        return owner is not None and host_of(owner) == self.host and self.ownership.alive(owner)

    def owners_probe(self, bot_id: int) -> Check | None:
        """What the Bot API probe on the owner's host last found (from the owner's record)."""
        record, _ = self.ownership.record(bot_id)
        if not record:
            return None
        where = host_of(str(record.get("worker", "?")))
        if "api_ok" in record:
            reason = f"{record.get('api_reason', '')} (on host {where})"
            return Check(bool(record["api_ok"]), reason)
        state = record.get("state")
        if state in ("starting", "polling"):  # its probe comes a moment after it took the bot
            return Check(True, f"not probed yet by its owner, which is {state} (on host {where})")
        return None

    def needs_drain(self, bot_id: int) -> bool:
        """This worker should drain the bot's instance on this host: it is named for it, and
        the bot's owner is a worker of another host (or there has been no live owner for
        :data:`OWNERLESS_GRACE`: no takeover under way)."""
        seen = self.mine.get(bot_id)
        if seen is None or seen.worker != self.ownership.name or self._stopping:
            return False
        if not self.ownership.usable():
            return False
        owner = self.ownership.owner(bot_id)
        if owner is not None and self.ownership.alive(owner):
            self._ownerless.pop(bot_id, None)
            return host_of(owner) != self.host
        now = time.monotonic()
        since = self._ownerless.setdefault(bot_id, now)
        return now - since >= OWNERLESS_GRACE  # (looked at again every round)

    async def _round(self) -> None:
        if not self.ownership.usable():
            return
        leases = self.ownership.leases
        for bot_id, seen in list(self.mine.items()):
            if bot_id in leases or bot_id not in self.clients:
                continue  # polled by this worker (or not a bot of this gateway)
            if seen.worker != self.ownership.name:
                if host_of(seen.worker) == self.host and self.ownership.alive(seen.worker):
                    continue  # a live worker of this host looks after it
                owner = self.ownership.owner(bot_id)
                if owner is not None and host_of(owner) == self.host and owner != seen.worker:
                    continue  # polled here: its owner renames the key with its next request
                if not self._first_of_host(bot_id):
                    continue
                with contextlib.suppress(BusError):
                    await self._name_me(bot_id)  # the named worker is gone: this one takes over
            if self.needs_drain(bot_id) and bot_id not in self.drains:
                self._start_drain(bot_id)
        for bot_id in [b for b, d in self.drains.items() if d.finished]:
            del self.drains[bot_id]

    def _first_of_host(self, bot_id: int) -> bool:
        """One live worker of this host takes over a gone worker's key: the first by name."""
        live = [w for w in self.ownership.live_workers() if host_of(w) == self.host]
        return not live or min(live) == self.ownership.name

    def _start_drain(self, bot_id: int) -> None:
        from telegram_gateway.drainer import Drainer  # (imports the poller)

        drainer = Drainer(self, self.clients[bot_id])
        self.drains[bot_id] = drainer
        logger.info(
            "bot %s: its instance on this host's Bot API server (%s) is not polled here: "
            "worker %s drains it into the stream and closes it",
            self.clients[bot_id].bot.label,
            self.host,
            self.ownership.name,
        )
        drainer.start()

    # ---- for the Drainer (greenlet) --------------------------------------------------------
    def closed(self, bot_id: int) -> bool:
        """The instance was closed: delete the key if it still names this worker unchanged.
        False when it changed meanwhile (someone needed the instance again)."""
        seen = self.mine.get(bot_id)
        if seen is None or seen.worker != self.ownership.name:
            return False
        try:
            self.bus.run(
                self.bus.kv_delete_async(
                    OWNERS_BUCKET, instance_key(bot_id, self.host), last=seen.revision
                ),
                ENSURE_TIMEOUT,
            )
        except RevisionMismatch:
            return False
        except (BusError, TimeoutError) as exc:
            logger.info("bot %s: closed; its key stays until NATS answers: %s", bot_id, exc)
            return False
        if self.mine.get(bot_id) is seen:
            del self.mine[bot_id]
        return True


def _named(value: bytes | None) -> str:
    try:
        data = json.loads(value or b"{}")
    except ValueError:
        return ""
    return str(data.get("worker", "")) if isinstance(data, dict) else ""


def close_refusal(exc: BotApiError) -> float | None:
    """Seconds until ``close`` may succeed, when ``exc`` is the server's 429 for it."""
    if isinstance(exc, TelegramError) and exc.error_code == 429:
        return float(exc.retry_after or DRAIN_PAUSE)
    return None
