"""One poller per bot: getUpdates -> JetStream (+ routing copies) -> confirm.

The loop, for the worker that owns the bot::

    getWebhookInfo (deleteWebhook if one is set)       once per ownership, logged
    loop:
        still the owner? (lease not possibly expired, not handing over)   else stop here
        updates = getUpdates(offset, limit, timeout, allowed_updates)
        publish every update to JetStream, wait for every ack   (bus.publish_each)
            not acked (NATS down, timeout): keep the batch, retry only the unacked ones
        core-publish the routing copies of the batch
        offset = last update_id + 1    -> the next getUpdates confirms the batch

Nothing is confirmed to the Bot API before JetStream acknowledged it, so a crash anywhere
makes the Bot API deliver the batch again and JetStream drops the second copy by its
``Nats-Msg-Id``. The batch's memory of acknowledged updates also covers a NATS outage longer
than the duplicate window: what was acked is not published again.

**One poller per bot.** Every worker runs a :class:`Poller` per bot, but only the worker that
owns the bot (its claim in the Key-Value bucket ``TELEGRAM_OWNERS``, kept valid by the worker's
lease: :mod:`telegram_gateway.ownership`) polls. Ownership is checked before every getUpdates
(which is also what confirms the previous batch), so an owner whose lease may have run out (NATS
gone, the worker stalled) neither polls nor confirms; the next owner gets the unconfirmed
updates again.

**Health across workers and hosts.** ``/healthz`` may be answered by any worker, so the owner's
state (:class:`PollerRecord`) is the value of the bot's claim, written at once on every change
of state and every few seconds while only its progress changes; every worker judges the record
its watch last saw with :func:`evaluate`, as old as the owner's lease was last seen renewed.
A 409 Conflict (another poller or a webhook), a failing getUpdates, a batch waiting for NATS,
no successful getUpdates for ``poller_stall_after`` and a missing or stale record are failures;
each is logged once when it starts and once when it ends, not per attempt.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from telegram_gateway import metrics
from telegram_gateway.botapi import BotApiClient, RawUpdate
from telegram_gateway.bus import Ack, Bus, Outgoing
from telegram_gateway.config import Settings
from telegram_gateway.errors import BotApiError, BotApiTimeout, BusError, TelegramError
from telegram_gateway.health import Check
from telegram_gateway.routing import Router
from telegram_gateway.updates import UpdateInfo, describe

if TYPE_CHECKING:
    from telegram_gateway.files import ReceivedFiles
    from telegram_gateway.ownership import Ownership

logger = logging.getLogger(__name__)

STALE_AFTER = 10.0  # a record older than this has no live owner behind it
STANDBY_CHECK = 120.0  # a standby is woken when it owns the bot; this only bounds the wait
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
NATS_RETRY_FIRST = 0.2
NATS_RETRY_MAX = 2.0
REPEAT_LOG_EVERY = 60.0  # a persisting failure is logged again this often

# states of a poller record
STANDBY = "standby"  # in-memory only: this worker does not own the bot
STARTING = "starting"  # owner: checking for a webhook
POLLING = "polling"
BACKOFF = "backoff"  # getUpdates (or the webhook check) failed; retrying
CONFLICT = "conflict"  # 409: another getUpdates or a webhook uses the token
WAITING_FOR_NATS = "waiting_for_nats"  # a batch is not acked yet; nothing is confirmed
STOPPED = "stopped"  # the owner let go (worker exit, handing over)


@dataclass
class PollerRecord:
    """An owner's state, the value of the bot's claim (wall-clock times)."""

    bot_id: int
    pid: int
    state: str
    reason: str = ""
    worker: str = ""  # <host>-<pid>
    since: float = 0.0  # when this worker started owning the bot
    last_ok: float | None = None  # last successful getUpdates
    offset: int | None = None  # the next getUpdates offset (confirms everything before)
    unconfirmed: int = 0  # updates received and not yet confirmed
    oldest_unconfirmed: float | None = None  # when the oldest of them was received
    updated: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PollerRecord:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PollerRecord:
        names = cls.__dataclass_fields__
        return cls(**{key: value for key, value in data.items() if key in names})


def evaluate(record: PollerRecord | None, now: float, stall_after: float, label: str = "") -> Check:
    """The health of one bot's poller, from its owner's last record."""
    who = f"bot {label}: " if label else ""
    where = f"worker {record.worker or record.pid}" if record else ""
    if record is None:
        return Check(False, f"{who}no worker polls yet (no worker claims the bot)")
    age = now - record.updated
    if age > STALE_AFTER:
        return Check(False, f"{who}no live poller: last record {age:.0f} s ago from {where}")
    if record.state == STOPPED:
        return Check(False, f"{who}poller in {where} stopped; another worker takes over")
    if record.state == CONFLICT:
        return Check(False, f"{who}409 Conflict from getUpdates in {where}: {record.reason}")
    if record.state == WAITING_FOR_NATS and record.unconfirmed:
        return Check(
            False,
            f"{who}{record.unconfirmed} update(s) wait for JetStream and are not confirmed "
            f"to the Bot API ({record.reason})",
        )
    if record.state == WAITING_FOR_NATS:
        return Check(
            False,
            f"{who}not polling: {record.reason}; nothing is confirmed to the Bot API until "
            "JetStream is back",
        )
    if record.state == BACKOFF:
        return Check(False, f"{who}getUpdates failing in {where}: {record.reason}")
    progress = max(record.last_ok or 0.0, record.since)
    idle = now - progress
    if idle > stall_after:
        return Check(False, f"{who}stalled: no successful getUpdates for {idle:.0f} s in {where}")
    if record.state == STARTING:
        return Check(True, f"{who}starting in {where}: {record.reason}")
    last = "none yet" if record.last_ok is None else f"{now - record.last_ok:.1f} s ago"
    return Check(True, f"{who}polling in {where}; offset {record.offset}; last getUpdates {last}")


@dataclass
class _Batch:
    """One getUpdates answer on its way to JetStream; remembers what is already acked."""

    received: float
    items: list[tuple[UpdateInfo, bytes]]
    next_offset: int
    acked: set[int] = field(default_factory=set)  # update ids
    routed: bool = False


def _spawn(function: Callable[[], None], name: str) -> Any:
    """A greenlet under gevent (killable at stop), a daemon thread otherwise."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            import gevent

            return gevent.spawn(function)
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        pass
    thread = threading.Thread(target=function, name=name, daemon=True)
    thread.start()
    return thread


class Poller:
    """The poller of one bot in one worker: stands by or polls (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        client: BotApiClient,
        bus: Bus,
        router: Router | None = None,
        clock: Callable[[], float] = time.time,
        files: ReceivedFiles | None = None,
        *,
        ownership: Ownership,
    ) -> None:
        self.settings = settings
        self.client = client
        self.bot = client.bot
        self.bus = bus
        self.router = router or Router()
        self.files = files  # stores the files of updates that a store_files rule matches
        self.clock = clock
        self.pid = os.getpid()
        self.label = self.bot.label
        self._bot = str(self.bot.bot_id)
        self.ownership = ownership
        self.ownership.reporter(self.bot.bot_id, self.snapshot)
        self.owning = False  # this worker polls the bot now
        self.record = PollerRecord(bot_id=self.bot.bot_id, pid=self.pid, state=STANDBY)
        self._batch: _Batch | None = None
        self._stop = threading.Event()
        self._runner: Any = None
        self._failing: str | None = None  # the kind of failure being logged, if any
        self._failures = 0
        self._failing_logged = 0.0
        self._webhook_checked = False
        self._polled_once = False
        self._reported = 0.0  # when the record was last handed to the ownership to write
        self._lag_shown = False  # the lag gauge shows a value other than 0
        self._parsed: tuple[dict[str, Any], PollerRecord] | None = None  # the owner's, parsed

    def __repr__(self) -> str:
        return f"Poller(bot={self.label}, pid={self.pid}, state={self.record.state})"

    # ---- Component -------------------------------------------------------------------------
    def start(self) -> None:
        if self._runner is not None:
            return
        self._stop.clear()
        self.pid = self.record.pid = os.getpid()
        self._runner = _spawn(self._run, f"poller-{self._bot}")

    def stop(self, timeout: float = 2.0) -> None:
        """Let go of the bot; an in-flight getUpdates is abandoned (its updates are not
        confirmed, so the next owner gets them again)."""
        self._stop.set()
        self.ownership.wake(self.bot.bot_id)
        runner = self._runner
        if runner is not None:
            if hasattr(runner, "kill"):  # a greenlet, maybe blocked in a long poll
                runner.kill(block=True, timeout=timeout)
            else:
                runner.join(timeout)
        self._runner = None
        self._let_go()

    def checks(self) -> dict[str, Check]:
        if not self.bus.connected:
            # the leases and the records live in NATS: without it nobody may poll
            check = Check(
                False,
                f"bot {self.label}: not polling: NATS disconnected; nothing is confirmed to the "
                "Bot API until JetStream is back",
            )
        else:
            check = evaluate(
                self.read_record(), self.clock(), self.settings.poller_stall_after, self.label
            )
        return {f"poller:{self.bot.bot_id}": check}

    # ---- shared state ------------------------------------------------------------------------
    def read_record(self) -> PollerRecord | None:
        """The owner's last record (this worker's own when it owns the bot), ``updated`` being
        when this worker last heard of it."""
        if self.owning:
            return self._current()
        data, age = self.ownership.record(self.bot.bot_id)
        if data is None:
            return None
        parsed = self._parsed
        if parsed is not None and parsed[0] is data:
            record = parsed[1]  # the same entry as last time (each is parsed once)
        else:
            try:
                record = PollerRecord.from_dict(data)
            except (TypeError, ValueError):
                return None
            self._parsed = (data, record)
        record.updated = self.clock() - age
        return record

    def _current(self) -> PollerRecord:
        record = self.record
        record.updated = self.clock()
        batch = self._batch
        record.unconfirmed = len(batch.items) if batch else 0
        record.oldest_unconfirmed = batch.received if batch else None
        lag = max(record.updated - batch.received, 0.0) if batch else 0.0
        if lag or self._lag_shown:  # (a thousand idle bots: no metric write per /healthz)
            metrics.POLLER_LAG.labels(self._bot).set(lag)
            self._lag_shown = bool(lag)
        return record

    def snapshot(self) -> dict[str, Any]:
        """The record written with the bot's claim (called when the ownership writes it)."""
        record = self._current()
        self._reported = record.updated
        return dict(vars(record))  # (dataclasses.asdict copies deeply: slower)

    def _set(self, state: str, reason: str = "") -> None:
        changed = state != self.record.state or reason != self.record.reason
        self.record.state = state
        self.record.reason = reason
        if changed and self.owning:
            self.ownership.changed(self.bot.bot_id)

    # ---- the loop --------------------------------------------------------------------------
    def _run(self) -> None:
        announced = False
        bot_id = self.bot.bot_id
        while not self._stop.is_set():
            if not self.ownership.wait(bot_id, STANDBY_CHECK):
                if not announced:  # (debug: a thousand bots would log a thousand lines)
                    logger.debug(
                        "bot %s: another worker polls; this one (%s) stands by",
                        self.label,
                        self.ownership.name,
                    )
                    announced = True
                continue
            announced = False
            try:
                self._hold()
            except Exception:
                logger.exception("bot %s: poller failed; starting it again", self.label)
                self._stop.wait(BACKOFF_FIRST)
            finally:
                self._let_go()

    def _owner(self) -> bool:
        """Checked before every getUpdates: may this worker (still) poll the bot?"""
        return self.ownership.keeps(self.bot.bot_id)

    def _let_go(self) -> None:
        if not self.owning:
            return
        keeps = self._owner()
        self.owning = False
        reason = "worker exiting" if self._stop.is_set() else "handing over"
        if not keeps and not self._stop.is_set() and not self.ownership.holds(self.bot.bot_id):
            reason = "lease lost"
            logger.warning(
                "bot %s: worker %s cannot be sure of its lease any more (not renewed in time); "
                "it stopped polling",
                self.label,
                self.ownership.name,
            )
        self.record.state, self.record.reason = STOPPED, reason
        metrics.POLLER_ACTIVE.labels(self._bot).set(0)
        metrics.POLLER_LAG.labels(self._bot).set(0)
        self.ownership.release(self.bot.bot_id)
        self.record.state = STANDBY
        logger.info(
            "bot %s: worker %s stopped polling (%s)", self.label, self.ownership.name, reason
        )

    def _hold(self) -> None:
        now = self.clock()
        self.record = PollerRecord(
            bot_id=self.bot.bot_id,
            pid=self.pid,
            state=STARTING,
            worker=self.ownership.name,
            since=now,
            updated=now,
        )
        self.owning = True
        metrics.POLLER_ACTIVE.labels(self._bot).set(1)
        logger.info("bot %s: worker %s polls getUpdates", self.label, self.ownership.name)
        self._webhook_checked = False
        self._polled_once = False
        self._batch = None
        self._set(STARTING, "checking for a webhook")
        offset: int | None = None
        backoff = BACKOFF_FIRST
        while not self._stop.is_set() and self._owner():
            if not self.bus.connected:
                self._wait_for_nats(now)
                continue
            try:
                if not self._webhook_checked:
                    self._check_webhook()
                # the first call after taking over returns at once, so /healthz reports
                # POLLING within a moment rather than after a whole long poll
                first = not self._polled_once
                updates = self.client.get_updates_raw(
                    offset,
                    self.settings.poll_limit,
                    0 if first else self.settings.poll_timeout,
                    list(self.settings.allowed_updates),
                )
            except BotApiError as exc:
                wait = self._failed(exc, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                self._stop.wait(wait)
                continue
            backoff = BACKOFF_FIRST
            self._polled_once = True
            self._recovered()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "bot %s: getUpdates offset %s: %d update(s)", self.label, offset, len(updates)
                )
            self.record.last_ok = self.clock()
            if self.record.state != POLLING:
                self._set(POLLING)
            elif self.record.last_ok - self._reported >= (
                self.ownership.refresh if updates else self.ownership.idle_refresh
            ):
                self.ownership.changed(self.bot.bot_id)  # progress: written every few seconds
            if not updates:
                continue
            batch = self._take(updates)
            if batch is None:
                continue
            self._batch = batch
            if not self._deliver(batch):
                return  # stopping: the batch stays unconfirmed, the next owner gets it again
            offset = batch.next_offset
            self.record.offset = offset
            self._batch = None
        self._confirm_before_handing_over(offset)

    def _confirm_before_handing_over(self, offset: int | None) -> None:
        """Handing the bot over with a valid lease: confirm the last delivered batch now (a
        getUpdates with its offset that returns at once and takes at most one update, left
        unconfirmed for the next owner), so the next owner does not receive it again and
        route its copies a second time. Not after the lease may have run out: the next owner
        may be polling already."""
        bot_id = self.bot.bot_id
        if offset is None or self._stop.is_set() or not self.ownership.holds(bot_id):
            return
        try:
            self.client.get_updates_raw(offset, 1, 0, list(self.settings.allowed_updates))
        except BotApiError as exc:
            logger.info("bot %s: could not confirm before handing over: %s", self.label, exc)

    def _wait_for_nats(self, holding_since: float) -> None:
        """No batch in hand and NATS is down: do not poll (nothing could be confirmed)."""
        if self.record.state != WAITING_FOR_NATS:
            # the connection comes up a moment after the worker starts: no warning for that
            log = logger.warning if self.clock() - holding_since > 5 else logger.debug
            log("bot %s: NATS disconnected; not polling getUpdates until it is back", self.label)
        self._set(WAITING_FOR_NATS, "NATS disconnected")
        self._stop.wait(NATS_RETRY_FIRST)

    def _check_webhook(self) -> None:
        info = self.client.call("getWebhookInfo")
        url = (info or {}).get("url") if isinstance(info, dict) else None
        if url:
            host = urlsplit(str(url)).hostname or "?"
            logger.warning(
                "bot %s has a webhook (host %s); deleting it so that getUpdates can poll "
                "(pending updates are kept)",
                self.label,
                host,
            )
            self.client.call("deleteWebhook", {"drop_pending_updates": False})
        self._webhook_checked = True

    def _take(self, updates: list[RawUpdate]) -> _Batch | None:
        """Describe the updates (each keeps its bytes as served); the next offset covers all
        of them."""
        items: list[tuple[UpdateInfo, bytes]] = []
        highest: int | None = None
        counts: dict[str, int] = {}
        bot_id = self.bot.bot_id
        for update, raw in updates:
            try:
                info = describe(bot_id, update)
            except (ValueError, AttributeError):
                logger.error(
                    "bot %s: getUpdates returned something that is not an Update; skipped",
                    self.label,
                )
                continue
            if highest is None or info.update_id > highest:
                highest = info.update_id
            items.append((info, raw))
            counts[info.update_type] = counts.get(info.update_type, 0) + 1
        for update_type, count in counts.items():
            metrics.UPDATES_RECEIVED.labels(self._bot, update_type).inc(count)
        if highest is None:
            return None
        return _Batch(received=self.clock(), items=items, next_offset=highest + 1)

    def _deliver(self, batch: _Batch) -> bool:
        """Publish until JetStream acked every update of the batch, then the routing copies;
        False when stopping first."""
        started = time.monotonic()
        retry = NATS_RETRY_FIRST
        while not self._stop.is_set() and self.ownership.holds(self.bot.bot_id):
            pending = [item for item in batch.items if item[0].update_id not in batch.acked]
            problem = ""
            if pending:
                problem = self._publish(batch, pending)
            if not problem and not batch.routed:
                problem = self._route(batch)
            if not problem:
                metrics.PUBLISH_SECONDS.labels(self._bot).observe(time.monotonic() - started)
                if self.record.state == WAITING_FOR_NATS:
                    logger.info(
                        "bot %s: JetStream acknowledged the waiting batch; confirming again",
                        self.label,
                    )
                    self._set(POLLING)
                return True
            if self.record.state != WAITING_FOR_NATS:
                logger.warning(
                    "bot %s: %s; not confirming %d update(s) until JetStream has them",
                    self.label,
                    problem,
                    len(batch.items) - len(batch.acked),
                )
            self._set(WAITING_FOR_NATS, problem)
            self._stop.wait(retry * random.uniform(0.8, 1.2))
            retry = min(retry * 2, NATS_RETRY_MAX)
        return False

    def _publish(self, batch: _Batch, pending: list[tuple[UpdateInfo, bytes]]) -> str:
        """Publish the pending updates; '' when all are acked, else what went wrong."""
        if not self.bus.connected:
            return "NATS disconnected"
        server = self.settings.host_name
        messages = [
            Outgoing(info.subject, payload, info.headers(server)) for info, payload in pending
        ]
        try:
            results = self.bus.publish_each(messages)
        except BusError as exc:
            return str(exc)
        problem = ""
        published: dict[str, int] = {}
        duplicates: dict[str, int] = {}
        for (info, _), result in zip(pending, results, strict=True):
            if isinstance(result, Ack):
                batch.acked.add(info.update_id)
                counts = duplicates if result.duplicate else published
                counts[info.update_type] = counts.get(info.update_type, 0) + 1
            elif not problem:
                problem = str(result)
        for counts, counter in (
            (published, metrics.UPDATES_PUBLISHED),
            (duplicates, metrics.UPDATES_DUPLICATE),
        ):
            for update_type, count in counts.items():
                counter.labels(self._bot, update_type).inc(count)
        return problem

    def _route(self, batch: _Batch) -> str:
        """Core-publish the routing copies of the batch; '' when handed to NATS."""
        if not len(self.router):
            batch.routed = True
            return ""
        copies: list[Outgoing] = []
        names: list[str] = []
        for info, payload in batch.items:
            targets = self.router.targets(info)
            if self.files is not None and any(route.store_files for route, _ in targets):
                if not self.bus.connected:
                    return "NATS disconnected (the files of a store_files rule wait)"
                # the copy follows the files: an agent finds them stored
                self.files.store_update_files(self.bot, json.loads(payload))
            if targets:
                headers = info.headers(self.settings.host_name)
                for route, subject in targets:
                    copies.append(Outgoing(subject, payload, headers))
                    names.append(route.name)
        if copies:
            try:
                self.bus.publish_core(copies)
            except BusError as exc:
                return f"routing copies not sent: {exc}"
            for name in names:
                metrics.ROUTED_COPIES.labels(self._bot, name).inc()
        batch.routed = True
        return ""

    # ---- failures ----------------------------------------------------------------------------
    def _failed(self, exc: BotApiError, backoff: float) -> float:
        """Record a failed call; how long to wait before the next attempt."""
        self._failures += 1
        wait = backoff * random.uniform(0.8, 1.2)
        if isinstance(exc, TelegramError):
            code = str(exc.error_code)
            if exc.error_code == 429 and exc.retry_after is not None:
                wait = exc.retry_after
            if exc.error_code in (401, 404):
                wait = BACKOFF_MAX
                reason = f"the Bot API refuses this bot's token ({exc}); check TELEGRAM_BOT_TOKENS"
            else:
                reason = str(exc)
            if exc.error_code == 409 and "webhook" in exc.description.lower():
                self._webhook_checked = False  # someone set a webhook: check again
        else:
            code = "timeout" if isinstance(exc, BotApiTimeout) else "unavailable"
            reason = str(exc)
        if exc.method.lower() == "getupdates":
            metrics.GETUPDATES_ERRORS.labels(self._bot, code).inc()
        state = CONFLICT if code == "409" else BACKOFF
        kind = f"{state}:{code}"
        now = time.monotonic()
        if kind != self._failing:
            logger.warning(
                "bot %s: %s; retrying with backoff (logged again only when this changes)",
                self.label,
                reason,
            )
            self._failing, self._failing_logged = kind, now
        elif now - self._failing_logged >= REPEAT_LOG_EVERY:
            logger.warning(
                "bot %s: still failing (%d attempts): %s", self.label, self._failures, reason
            )
            self._failing_logged = now
        else:
            logger.debug("bot %s: %s", self.label, reason)
        self._set(state, f"{reason}; attempt {self._failures}, next in {wait:.1f} s")
        return wait

    def _recovered(self) -> None:
        if self._failing is not None:
            logger.info(
                "bot %s: getUpdates works again after %d failed attempt(s)",
                self.label,
                self._failures,
            )
        self._failing = None
        self._failures = 0
