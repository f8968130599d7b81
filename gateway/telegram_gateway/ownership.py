"""Who polls and paces which bot: claims and worker leases in the JetStream Key-Value bucket
``TELEGRAM_OWNERS``.

Two kinds of key, one lease per *worker* rather than per bot, so that a thousand idle bots cost
one write a second per worker instead of a thousand:

* ``workers.<name>`` is the worker's lease. It is created with a per-key TTL of
  ``GATEWAY_LEASE_TTL`` and kept with a revision-checked update every ``GATEWAY_LEASE_TTL`` / 3
  seconds. A key nobody kept (kill -9, a stalled worker, a lost connection) is removed by the
  server that long after its last write, and the server leaves a marker that every worker's
  watch sees.
* ``bots.<bot_id>`` is the claim: the name of the worker that owns the bot, with its poller
  record (state, offset, last getUpdates, ...) that every worker reads for ``/healthz``. It has
  no TTL; it is written when taken, when the record changes (state changes at once, the rest
  every few seconds at most) and deleted when the bot is handed over.

A worker owns a bot while the bot's claim names it *and* its own lease is alive:

* taking a free bot is ``create`` (succeeds only when the claim is absent or deleted: atomic
  across workers and hosts that share the NATS cluster); taking a bot whose claim names a
  worker whose lease is gone (its watch saw the key expire, confirmed by reading it) is an
  ``update`` with the claim's revision, so of several workers trying, one wins;
* the owner stops using *all* its bots ``LEASE_MARGIN`` before its lease can have expired: it
  measures from the moment it *sent* its last successful renewal (the server's clock starts
  later), on its own monotonic clock. The poller and the sender check :meth:`Ownership.holds`
  before every getUpdates and every send, so an owner that stalled (SIGSTOP, a blocked event
  loop) and wakes up after its lease ran out does not carry on beside the new owner. Its next
  renewal fails (the key expired, its revision changed): it drops every bot, starts a new
  lease and takes bots again like any other worker (its old claims, if nobody took them, by
  the same revision-checked update);
* a claim's update with a stale revision also fails: an owner whose claim was taken learns it
  at its next record write at the latest, and its lease had run out before that could happen.

Spreading: a worker takes free bots only while it owns fewer than its share
(``ceil(bots / live workers)``, live workers being the ``workers.*`` keys), and one that owns
more than its share while another owns less hands the surplus over: the poller finishes its
current getUpdates (no 409 for the next owner), then the claim is deleted and another worker's
watch sees it free. With 2 workers and 2 or more bots, neither owns all of them.

Everything here runs on the NATS loop (:meth:`telegram_gateway.bus.Bus.spawn`); the pollers and
senders only read plain attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from nats.js.api import KeyValueConfig, StorageType

from telegram_gateway.bus import Bus, Entry
from telegram_gateway.config import STALL_SLACK, Settings
from telegram_gateway.errors import (
    BusError,
    NoResponders,
    PacingUnavailable,
    RevisionMismatch,
)

logger = logging.getLogger(__name__)

OWNERS_BUCKET = "TELEGRAM_OWNERS"
#: an owner stops using its lease this long before the server can expire it (the gap between
#: checking the lease and the Bot API receiving the request)
LEASE_MARGIN = 0.5
#: the server's expiry marker stays this long (nats-server's minimum), for watchers to see
MARKER_TTL = 1.0
#: seconds between two rounds woken by pokes (changed records, freed keys), at least
POKE_SPACING = 0.05
#: how often a request for a bot without an owner looks again (a takeover under way)
OWNER_POLL = 0.05
#: claims (records) written per batch (each batch waits for its acknowledgements before the next)
RENEW_BATCH = 100
#: a record whose only change is its progress (last getUpdates, offset) is written again after
#: this long at most (or a quarter of GATEWAY_POLLER_STALL_AFTER, when that is shorter)
RECORD_REFRESH = 5.0
#: an idle bot's record (a long poll returned empty) is written again only when the next return
#: could otherwise come later than GATEWAY_POLLER_STALL_AFTER after the written one, less this
#: margin for a slow return (half the slack the settings keep between the two): with the defaults
#: (90 s, 50 s polls) every long poll, with 90 s and 25 s polls every second one
IDLE_MARGIN = STALL_SLACK / 2
#: bots taken per round at most: a worker starting with hundreds of free bots takes them over a
#: few rounds, so that their first getUpdates do not all fall into one moment and starve the
#: renewals of the leases it already holds
ACQUIRE_BATCH = 100
#: rounds after which a renewal of this worker's lease that its watch has not shown means the
#: watch is blind (it shows one within milliseconds; starting it again when it was only slow
#: costs one reading of the bucket)
WATCH_LAG_ROUNDS = 2


def worker_name(host: str | None = None, pid: int | None = None) -> str:
    """``<host>-<pid>``, as a Key-Value key token (letters, digits, ``-`` and ``_``); ``host``
    is GATEWAY_HOST_NAME (the machine's host name by default)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", host or socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid() if pid is None else pid}"


def bot_key(bot_id: int) -> str:
    return f"bots.{bot_id}"


def worker_key(name: str) -> str:
    return f"workers.{name}"


def idle_refresh(stall_after: float, poll_timeout: float) -> float:
    """How long an idle bot's progress may go unwritten: the record's last getUpdates must stay
    younger than ``stall_after`` until the next long poll returns (``poll_timeout`` later, or a
    little more), or every other worker's /healthz calls the poller stalled. Never more often
    than the busy refresh."""
    refresh = min(RECORD_REFRESH, stall_after / 4)
    return max(refresh, stall_after - poll_timeout - IDLE_MARGIN)


@dataclass
class Lease:
    """A bot this worker owns: its claim's revision (valid while the worker's lease is)."""

    revision: int
    releasing: bool = False


@dataclass
class Seen:
    """The last entry of a key, as this worker's watch received it (monotonic time)."""

    at: float
    value: bytes | None
    revision: int
    _parsed: dict[str, Any] | None = None

    def worker(self) -> str | None:
        """The worker a claim names (None when deleted)."""
        record = self.record()
        return str(record.get("worker")) if record and record.get("worker") else None

    def record(self) -> dict[str, Any] | None:
        """The value as a JSON object (parsed once), None when deleted or not an object."""
        if self._parsed is None and self.value is not None:
            try:
                parsed = json.loads(self.value)
            except ValueError:
                parsed = None
            self._parsed = parsed if isinstance(parsed, dict) else {}
        return self._parsed or None


class Ownership:
    """This worker's leases and its view of everybody's (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        bot_ids: Sequence[int],
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.bots = list(bot_ids)
        self.host = settings.host_name
        self.name = name or worker_name(self.host)
        self.clock = clock
        self.ttl = settings.lease_ttl
        self.interval = self.ttl / 3
        self.leases: dict[int, Lease] = {}
        self.seen: dict[str, Seen] = {}
        self._reporters: dict[int, Callable[[], dict[str, Any]]] = {}
        self._changed: dict[int, threading.Event] = {bot: threading.Event() for bot in self.bots}
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._connected_at: float | None = None
        self._worker_revision = 0
        self._deadline = 0.0  # monotonic: this worker may use its bots until then
        self._letting_go: dict[int, int] = {}  # claims being deleted: their revision
        self._workers: dict[str, Seen] = {}  # the workers.* keys as seen
        self._named_me: set[int] = set()  # bots whose claim names this worker, as seen
        self._alive_at: dict[str, float] = {}  # when each worker's lease was last seen written
        self._dirty: set[int] = set()  # owned bots whose record changed since the last write
        self._notes: dict[int, dict[str, Any]] = {}  # extra record fields (Ownership.note)
        # the oldest renewal of this worker's lease that the watch has not shown yet (its
        # revision, when it was written) and when the watch was last started again for lagging
        self._echo_wanted = 0
        self._echo_since = 0.0
        self._rewatched_at = -math.inf
        self.refresh = min(RECORD_REFRESH, settings.poller_stall_after / 4)
        self.idle_refresh = idle_refresh(settings.poller_stall_after, settings.poll_timeout)
        bus.declare_bucket(
            KeyValueConfig(
                bucket=OWNERS_BUCKET,
                description="which gateway worker polls and paces each bot (claims and leases)",
                ttl=0,  # claims stay; the workers' leases carry their own TTL
                history=1,
                storage=StorageType.FILE,
                limit_marker_ttl=MARKER_TTL,
            )
        )
        self._instance_watchers: list[Callable[[int, str, Entry], None]] = []
        self._change_watchers: list[Callable[[], None]] = []
        bus.watch(OWNERS_BUCKET, self._on_entry)
        bus.on_state_change(self._on_state)

    def on_instance(self, callback: Callable[[int, str, Entry], None]) -> None:
        """``callback(bot_id, host, entry)`` on the NATS loop for every ``instances.*`` key
        (:mod:`telegram_gateway.instances`)."""
        self._instance_watchers.append(callback)

    def on_change(self, callback: Callable[[], None]) -> None:
        """``callback()`` on the NATS loop when a claim or a worker's lease changes."""
        self._change_watchers.append(callback)

    def usable(self) -> bool:
        """This worker's lease is valid and its watch has shown the others (decisions that
        depend on who owns what may be taken)."""
        return (
            self._connected_at is not None
            and self.clock() - self._connected_at >= self.interval
            and self.clock() < self._deadline
        )

    # ---- what pollers and senders ask --------------------------------------------------
    def holds(self, bot_id: int) -> bool:
        """True while this worker may poll and send for the bot (lease not possibly expired)."""
        return bot_id in self.leases and self.clock() < self._deadline

    def keeps(self, bot_id: int) -> bool:
        """Holds the bot and is not handing it over: the poller carries on."""
        lease = self.leases.get(bot_id)
        return lease is not None and not lease.releasing and self.clock() < self._deadline

    def wait(self, bot_id: int, timeout: float) -> bool:
        """Wait until this worker may start on the bot (it took the lease, or its lease is
        usable again), :meth:`wake` or ``timeout``; whether it may. Standbys sleep here without
        polling: a thousand bots cost nothing while another worker owns them."""
        event = self._changed[bot_id]
        if not self.keeps(bot_id):
            event.wait(timeout)  # (a lease marked for handing over has set the event)
            event.clear()
        self._hand_over_unused(bot_id)
        return self.keeps(bot_id)

    def _hand_over_unused(self, bot_id: int) -> None:
        """A lease taken and, in the same round, marked for handing over before its poller
        started on it: nobody polls it, so nobody else would let it go (the poller releases
        only what it held). Release it here, or it is renewed for ever and polled by nobody."""
        lease = self.leases.get(bot_id)
        if lease is not None and lease.releasing:
            self.release(bot_id)

    def wake(self, bot_id: int) -> None:
        """End a :meth:`wait` now (the poller is stopping)."""
        self._changed[bot_id].set()

    def reporter(self, bot_id: int, snapshot: Callable[[], dict[str, Any]]) -> None:
        """``snapshot()`` gives the record written with every renewal of the bot's lease."""
        self._reporters[bot_id] = snapshot

    def changed(self, bot_id: int) -> None:
        """The bot's record changed: write it soon (at most ``1 / POKE_SPACING`` rounds a
        second for all bots together)."""
        if bot_id in self.leases:
            self._dirty.add(bot_id)
            self._poke()

    def release(self, bot_id: int) -> None:
        """Let go of the bot (its poller has stopped): delete the key so another worker can
        take it at once."""
        lease = self.leases.pop(bot_id, None)
        if lease is None:
            return
        self._let_go(bot_id, lease.revision)

    def _let_go(self, bot_id: int, revision: int) -> None:
        """Delete the bot's claim (if still at ``revision``): another worker's watch sees it
        free. If that fails (no NATS), the claim still names this worker and the next rounds
        take it back or delete it (:meth:`_tidy`)."""
        self._letting_go[bot_id] = revision  # not to be taken back before it is gone
        with contextlib.suppress(BusError):
            self.bus.spawn(self._delete_claim(bot_id, revision))

    async def _delete_claim(self, bot_id: int, revision: int) -> None:
        try:
            await self._delete(bot_key(bot_id), revision)
        finally:
            if self._letting_go.get(bot_id) == revision:
                del self._letting_go[bot_id]

    def record(self, bot_id: int) -> tuple[dict[str, Any] | None, float]:
        """The bot's owner's last record and how many seconds ago its owner was last known
        alive (its lease seen written, as this worker saw it); (None, 0) when no worker
        claims the bot."""
        if bot_id in self.leases:
            return self._record(bot_id), 0.0
        seen = self.seen.get(bot_key(bot_id))
        record = seen.record() if seen is not None else None
        if seen is None or record is None:
            return None, 0.0
        alive_at = self._alive_at.get(str(record.get("worker")), seen.at)
        return record, self.clock() - alive_at

    def owner(self, bot_id: int) -> str | None:
        record, _ = self.record(bot_id)
        return str(record.get("worker")) if record and record.get("worker") else None

    def ask_owner(
        self, bot_id: int, prefix: str, payload: bytes, timeout: float
    ) -> dict[str, Any] | None:
        """Ask the bot's owner, on ``<prefix>.<owner's name>``; its answer, or None when this
        worker owns the bot. An owner that is gone or answers ``{"not_owner": true}`` (it lost
        the bot meanwhile) is asked again once another worker owns the bot. Raises
        :class:`PacingUnavailable` (nothing was done) when NATS is disconnected or no worker
        owns the bot within the lease time, and :class:`BusUnavailable` when the owner did not
        answer within ``timeout`` (it may have acted)."""
        if not self.bus.connected:
            raise PacingUnavailable(
                "NATS is disconnected: the gateway cannot tell which worker owns this bot; "
                "nothing was sent"
            )
        give_up = time.monotonic() + self.ttl + 1.0
        while True:
            if self.holds(bot_id):
                return None
            owner = self.owner(bot_id)
            if owner is not None and owner != self.name:
                try:
                    answer = json.loads(self.bus.request(f"{prefix}.{owner}", payload, timeout))
                except NoResponders:
                    answer = {"not_owner": True}  # that worker is gone: wait for the next owner
                if not answer.get("not_owner"):
                    return dict(answer)
            if time.monotonic() > give_up:
                raise PacingUnavailable(
                    f"no worker owns bot {bot_id} right now (another is taking over); nothing "
                    "was sent"
                )
            time.sleep(OWNER_POLL)

    def alive(self, name: str) -> bool:
        """Whether the worker's lease exists, as this worker's watch last saw it."""
        seen = self._workers.get(name)
        return seen is not None and seen.value is not None

    def _renewing(self, name: str) -> bool:
        """Whether the worker's lease was seen renewed lately. A watch that went blind (its
        consumer lived on a cluster node that died) shows no expiry: a lease not seen renewed
        for a TTL and a round is read from the bucket before its bots are taken
        (:meth:`_gone`)."""
        seen = self._workers.get(name)
        return (
            seen is not None
            and seen.value is not None
            and self.clock() - seen.at < self.ttl + self.interval
        )

    def live_workers(self) -> list[str]:
        now = self.clock()
        names = {
            name
            for name, seen in self._workers.items()
            if seen.value is not None and now - seen.at < self.ttl + self.interval
        }
        names.add(self.name)
        return sorted(names)

    def share(self) -> int:
        return max(1, math.ceil(len(self.bots) / len(self.live_workers())))

    # ---- component protocol ----------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self.bus.spawn(self._run())

    def stop(self) -> None:
        """Let go of every bot (the pollers stopped first) and of this worker's key."""
        self._stopping = True
        for bot_id in list(self.leases):
            self.release(bot_id)
        if self._worker_revision and self.bus.connected:
            revision, self._worker_revision = self._worker_revision, 0
            with contextlib.suppress(Exception):
                self.bus.run(self._delete(worker_key(self.name), revision), 2)
        self._poke()

    def checks(self) -> dict[str, Any]:
        return {}

    # ---- on the NATS loop ----------------------------------------------------------------
    def _on_entry(self, entry: Entry) -> None:
        kind, _, name = entry.key.partition(".")
        if kind == "instances":  # kept by the instances module, not here
            bot, _, host = name.partition(".")
            if bot.isdigit() and host:
                for callback in self._instance_watchers:
                    callback(int(bot), host, entry)
            return
        now = self.clock()
        before = self.seen.get(entry.key)
        seen = self.seen[entry.key] = Seen(now, entry.value, entry.revision)
        if kind == "workers":
            self._workers[name] = seen
            if entry.value is not None:
                self._alive_at[name] = now
                if name == self.name and entry.revision >= self._echo_wanted:
                    self._echo_wanted = 0  # the watch delivers
        elif kind == "bots" and name.isdigit():
            mine = entry.value is not None and (seen.record() or {}).get("worker") == self.name
            (self._named_me.add if mine else self._named_me.discard)(int(name))
        if entry.value is None:
            self._poke()  # a bot is free, or a worker gone (a larger share): act now
        if self._change_watchers and (
            entry.value is None
            or before is None
            or before.value is None
            or (kind == "bots" and (before.record() or {}).get("worker") != seen.worker())
        ):
            for watcher in self._change_watchers:
                watcher()  # a key came or went, or a bot changed hands

    def _on_state(self, up: bool) -> None:
        self._connected_at = self.clock() if up else None
        self._echo_wanted = 0
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        if wake is not None:
            self.bus.call_soon(wake.set)

    async def _run(self) -> None:
        """Every ``interval`` all leases are renewed; in between, a poke (a record changed, a
        key deleted or expired) writes just the changed records and looks for free bots."""
        self._wake = asyncio.Event()
        due = 0.0
        while not self._stopping:
            full = self.clock() >= due
            if full:
                due = self.clock() + self.interval
            try:
                await self._tick(full)
            except Exception:
                logger.exception("keeping the bot leases failed; trying again")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - self.clock()))
            self._wake.clear()
            await asyncio.sleep(POKE_SPACING)  # a burst of pokes is one round

    async def _tick(self, full: bool = True) -> None:
        if not self.bus.bucket_ready(OWNERS_BUCKET):
            return
        if full:
            await self._renew_worker()
            self._check_watch()
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            changed = [(bot, self.leases[bot]) for bot in sorted(dirty) if bot in self.leases]
            for start in range(0, len(changed), RENEW_BATCH):
                await self._write_records(changed[start : start + RENEW_BATCH])
        if self._stopping:
            return
        settled = (
            self._connected_at is not None and self.clock() - self._connected_at >= self.interval
        )
        if settled and self.clock() < self._deadline:  # the watch has shown who else is there
            await self._acquire()
            self._shed()
            self._tidy()

    def _record(self, bot_id: int) -> dict[str, Any]:
        reporter = self._reporters.get(bot_id)
        record = dict(reporter()) if reporter else {}
        notes = self._notes.get(bot_id)
        if notes:
            record.update(notes)
        record.update(worker=self.name, bot_id=bot_id)
        return record

    def noted(self, bot_id: int) -> dict[str, Any]:
        return dict(self._notes.get(bot_id) or {})

    def note(self, bot_id: int, **fields: Any) -> None:
        """Facts written with the bot's record while this worker owns it (the Bot API probe's
        last outcome, for the workers of other hosts)."""
        self._notes.setdefault(bot_id, {}).update(fields)
        self.changed(bot_id)

    def _value(self, bot_id: int) -> bytes:
        return json.dumps(self._record(bot_id), separators=(",", ":")).encode()

    async def _write_records(self, leases: list[tuple[int, Lease]]) -> None:
        """Write the claims' records, each with a revision-checked update: a claim changed by
        somebody else means the bot was taken (this worker's lease had run out)."""
        updates = [
            (bot_key(bot_id), self._value(bot_id), lease.revision) for bot_id, lease in leases
        ]
        results = await self.bus.kv_update_many_async(OWNERS_BUCKET, updates, self.interval)
        for (bot_id, lease), result in zip(leases, results, strict=True):
            if self.leases.get(bot_id) is not lease:
                continue  # released meanwhile
            if isinstance(result, int):
                lease.revision = result
            elif isinstance(result, RevisionMismatch):
                del self.leases[bot_id]
                logger.warning(
                    "bot %s: the claim was taken by another worker (this worker's lease ran "
                    "out); this worker (%s) stops polling and sending for it",
                    bot_id,
                    self.name,
                )
                self._changed[bot_id].set()
            else:
                self._dirty.add(bot_id)  # written again in the next round

    async def _renew_worker(self) -> None:
        """Keep this worker's lease: every bot it owns depends on it."""
        key = worker_key(self.name)
        value = json.dumps({"worker": self.name, "bots": len(self.leases)}).encode()
        sent = self.clock()
        try:
            if self._worker_revision:
                try:
                    revision = await self.bus.kv_update_async(
                        OWNERS_BUCKET, key, value, self._worker_revision, ttl=self.ttl
                    )
                except RevisionMismatch:
                    # expired (renewals failed for a TTL, e.g. while the cluster elected a
                    # leader): drop every bot, then start again at once like a new worker
                    self._lost_lease()
                    self._worker_revision = 0
                    value = json.dumps({"worker": self.name, "bots": 0}).encode()
                    sent = self.clock()
                    revision = await self.bus.kv_create_async(
                        OWNERS_BUCKET, key, value, ttl=self.ttl
                    )
            else:
                revision = await self.bus.kv_create_async(OWNERS_BUCKET, key, value, ttl=self.ttl)
        except RevisionMismatch:
            self._worker_revision = 0  # created again in the next round
            return
        except BusError as exc:
            if self.leases and self.clock() >= self._deadline - self.interval:
                logger.warning("cannot renew the lease of worker %s: %s", self.name, exc)
            return
        self._worker_revision = revision
        if not self._echo_wanted:
            self._echo_wanted, self._echo_since = revision, sent
        was_valid = self.clock() < self._deadline
        self._deadline = sent + self.ttl - LEASE_MARGIN
        if not was_valid:
            for bot_id in self.leases:
                self._changed[bot_id].set()  # usable again: wake its poller

    def _check_watch(self) -> None:
        """This worker's own renewals come back through its watch within moments. When one has
        not for :data:`WATCH_LAG_ROUNDS` rounds, the watch is blind (nats-py re-creates a lost
        ordered consumer, but that can fail while the cluster reassigns it): watch the bucket
        again (at most once per such period)."""
        now = self.clock()
        lag = WATCH_LAG_ROUNDS * self.interval
        if not self._echo_wanted or now - self._echo_since < lag:
            return
        if now - self._rewatched_at < lag:
            return
        logger.warning(
            "worker %s: the watch of %s has not shown this worker's lease renewed %.1f s ago; "
            "watching the bucket again",
            self.name,
            OWNERS_BUCKET,
            now - self._echo_since,
        )
        self._rewatched_at = now
        self._echo_wanted = 0  # the next renewal is the next proof
        self.bus.rewatch(OWNERS_BUCKET)

    def _lost_lease(self) -> None:
        """This worker's lease expired (it was not renewed in time): another worker may own
        any of its bots now. Drop them all; the renewal that found it expired takes a new one."""
        if self.leases:
            logger.warning(
                "worker %s: its lease expired (not renewed in time); it stops polling and "
                "sending for its %d bot(s) and takes bots again like a new worker",
                self.name,
                len(self.leases),
            )
        lost, self.leases = self.leases, {}
        self._dirty.clear()
        for bot_id in lost:
            self._changed[bot_id].set()

    def _claim(self, bot_id: int) -> int | None:
        """How this worker may take the bot: 0 when nobody claims it (create), the claim's
        revision when the claim names a worker whose lease is gone or this worker itself (from
        before it lost its lease); None when a live worker owns it or this worker does."""
        if bot_id in self.leases:
            return None
        seen = self.seen.get(bot_key(bot_id))
        if seen is None or seen.value is None:
            return 0
        worker = str((seen.record() or {}).get("worker", ""))
        if worker != self.name and self._renewing(worker):
            return None
        if worker == self.name and self._letting_go.get(bot_id) == seen.revision:
            return None  # released a moment ago; the watch has not shown the deletion yet
        return seen.revision

    def _tidy(self) -> None:
        """Claims that name this worker but that it does not hold (a deletion that failed, a
        lease lost and not taken back): taken back while it has room (:meth:`_acquire`),
        deleted once it has none, so that they do not keep other workers away."""
        if self.share() > len(self.leases):
            return
        for bot_id in self._named_me.difference(self.leases, self._letting_go):
            seen = self.seen.get(bot_key(bot_id))
            if seen is not None and bot_id in self._changed:  # one of this worker's bots
                self._let_go(bot_id, seen.revision)

    async def _gone(self, worker: str, known: dict[str, bool]) -> bool:
        """Whether the worker's lease is really gone: the watch said so; read it to be sure
        before taking its bots (a watch that has not yet shown every key is no proof)."""
        if worker == self.name:
            return True
        if worker not in known:
            try:
                entry = await self.bus.kv_get_async(OWNERS_BUCKET, worker_key(worker))
            except BusError:
                known[worker] = False
            else:
                known[worker] = entry is None
        return known[worker]

    async def _acquire(self) -> None:
        room = self.share() - len(self.leases)
        if room <= 0:
            return
        claims = {bot: self._claim(bot) for bot in self.bots}
        # each worker tries the free bots in its own order, so that two of them starting
        # together do not race for the same bot first
        free = sorted(
            (bot for bot, revision in claims.items() if revision is not None),
            key=lambda bot: hashlib.sha256(f"{self.name}:{bot}".encode()).digest(),
        )
        known: dict[str, bool] = {}
        for bot_id in free[: min(room, ACQUIRE_BATCH)]:
            revision = claims[bot_id]
            assert revision is not None
            try:
                if revision == 0:
                    revision = await self.bus.kv_create_async(
                        OWNERS_BUCKET, bot_key(bot_id), self._value(bot_id)
                    )
                else:
                    seen = self.seen[bot_key(bot_id)]
                    previous = str((seen.record() or {}).get("worker", ""))
                    if not await self._gone(previous, known):
                        continue
                    revision = await self.bus.kv_update_async(
                        OWNERS_BUCKET, bot_key(bot_id), self._value(bot_id), revision
                    )
            except RevisionMismatch:
                continue  # somebody holds it (or took it a moment ago)
            except BusError as exc:
                logger.debug("bot %s: cannot take it: %s", bot_id, exc)
                return
            if self.clock() >= self._deadline:
                # this worker's own lease ran out meanwhile: the claim names it, and it is
                # taken again (or by another worker) once that is settled
                return
            self.leases[bot_id] = Lease(revision)
            logger.info("bot %s: worker %s owns it now", bot_id, self.name)
            self._changed[bot_id].set()
        if len(free) > ACQUIRE_BATCH and room > ACQUIRE_BATCH:
            self._poke()  # more to take: the next round right after this one

    def _shed(self) -> None:
        """Hand bots over while this worker owns more than its share and others own less:
        as many as they lack, all at once (each poller lets go after its current getUpdates,
        so a round takes at most one long poll)."""
        share = self.share()
        if len(self.leases) <= share:
            return  # (every round: nothing to walk through when there is nothing to shed)
        keeping = [bot for bot, lease in self.leases.items() if not lease.releasing]
        excess = len(keeping) - share
        if excess <= 0:
            return
        counts = dict.fromkeys(self.live_workers(), 0)
        for key, seen in self.seen.items():
            record = seen.record() if key.startswith("bots.") else None
            if record is not None and record.get("worker") in counts:
                counts[record["worker"]] += 1
        lacking = sum(max(0, share - count) for name, count in counts.items() if name != self.name)
        released = sorted(keeping)[len(keeping) - min(excess, lacking) :]
        for bot_id in released:
            self.leases[bot_id].releasing = True
            self._changed[bot_id].set()
        if released:
            logger.info(
                "worker %s owns %d bot(s), its share is %d: handing %d over (bots %s)",
                self.name,
                len(keeping),
                share,
                len(released),
                ", ".join(str(bot) for bot in released[:10])
                + (", ..." if len(released) > 10 else ""),
            )

    async def _delete(self, key: str, revision: int) -> None:
        try:
            await self.bus.kv_delete_async(OWNERS_BUCKET, key, last=revision)
        except RevisionMismatch:
            pass  # changed meanwhile (taken, or expired): nothing of ours left
        except BusError as exc:
            logger.debug("could not delete %s (tried again later): %s", key, exc)
