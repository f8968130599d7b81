"""Draining and closing this host's Bot API instance of a bot that is polled elsewhere.

A :class:`Drainer` is a :class:`~telegram_gateway.poller.Poller` (the same batches, publishing,
routing copies and confirmation) whose right to poll is :meth:`Instances.needs_drain` instead
of the bot's lease, and whose loop ends with ``close``:

    loop while this worker should drain the bot here:
        updates = getUpdates(offset, limit, timeout=0)
        some: publish them to JetStream (waiting for every ack), route them, offset = last + 1
        none (the call confirmed everything before it): close
            ok  -> delete the instance key (revision-checked); done
            429 -> drain again every DRAIN_PAUSE seconds until the server allows it

It neither writes a poller record nor counts as the bot's poller in ``/healthz``: that is the
owner's, on its own host.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from telegram_gateway.botapi import BotApiClient
from telegram_gateway.errors import BotApiError
from telegram_gateway.instances import DRAIN_PAUSE, close_refusal
from telegram_gateway.poller import BACKOFF_FIRST, BACKOFF_MAX, Poller

if TYPE_CHECKING:
    from telegram_gateway.instances import Instances

logger = logging.getLogger(__name__)


class _DrainRight:
    """What a Poller asks its ownership, answered from the instance key instead."""

    def __init__(self, instances: Instances, bot_id: int) -> None:
        self.instances = instances
        self.bot_id = bot_id
        self.name = instances.ownership.name
        self.refresh = self.idle_refresh = 1e9  # no record is written

    def holds(self, bot_id: int) -> bool:
        return self.instances.needs_drain(self.bot_id)

    keeps = holds

    def wait(self, bot_id: int, timeout: float) -> bool:
        return self.holds(bot_id)

    def reporter(self, bot_id: int, snapshot: Any) -> None:
        pass

    def changed(self, bot_id: int) -> None:
        pass

    def wake(self, bot_id: int) -> None:
        pass

    def release(self, bot_id: int) -> None:
        pass

    def record(self, bot_id: int) -> tuple[None, float]:
        return None, 0.0


class Drainer(Poller):
    """Drains one bot's instance on this host's Bot API server, then closes it."""

    def __init__(self, instances: Instances, client: BotApiClient) -> None:
        super().__init__(
            instances.settings,
            client,
            instances.bus,
            instances.router,
            files=instances.files,
            ownership=_DrainRight(instances, client.bot.bot_id),  # type: ignore[arg-type]
        )
        self.instances = instances
        self.finished = False
        self.closed = False

    def _run(self) -> None:
        try:
            self._drain()
        except Exception:
            logger.exception("bot %s: draining this host's instance failed", self.label)
        finally:
            self.finished = True

    def _drain(self) -> None:
        bot_id = self.bot.bot_id
        allowed = list(self.settings.allowed_updates)
        offset: int | None = None
        backoff = BACKOFF_FIRST
        drained = 0
        while not self._stop.is_set() and self._owner():
            try:
                updates = self.client.get_updates_raw(offset, self.settings.poll_limit, 0, allowed)
            except BotApiError as exc:
                logger.info("bot %s: drain: getUpdates failed: %s", self.label, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if updates:
                batch = self._take(updates)
                if batch is None:
                    continue
                self._batch = batch
                if not self._deliver(batch):
                    return  # stopping, or no longer this worker's to drain: left unconfirmed
                self._batch = None
                offset = batch.next_offset
                drained += len(batch.items)
                continue
            # empty, and this call confirmed everything before ``offset``: close the instance
            try:
                self.client.call("close")
            except BotApiError as exc:
                wait = close_refusal(exc)
                if wait is None:
                    logger.info("bot %s: drain: close failed: %s", self.label, exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                else:
                    self._stop.wait(min(wait, DRAIN_PAUSE))  # drain again meanwhile
                continue
            self.closed = True
            kept = not self.instances.closed(bot_id)
            logger.info(
                "bot %s: this host's Bot API instance drained (%d update(s) into the stream) "
                "and closed%s",
                self.label,
                drained,
                "; its key changed meanwhile (needed here again)" if kept else "",
            )
            return
