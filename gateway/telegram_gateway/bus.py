"""NATS for the gateway: one asyncio loop owns all NATS I/O; everything else reaches it
through a thread-safe bridge.

Why this shape: nats-py is asyncio, gunicorn's gevent worker is not. The loop runs
``run_forever`` in a ``threading.Thread`` started *after* gevent monkey-patching, so under
gunicorn it is a greenlet whose selector cooperates with the gevent hub; without gevent
(unit tests, scripts) it is a plain thread. Callers never touch the loop directly: they
submit coroutines with ``asyncio.run_coroutine_threadsafe`` and wait on the returned
``concurrent.futures.Future`` -- its wait is a patched lock, so a waiting greenlet yields to
the hub and never blocks it. Batches cross the bridge once (``publish_each``), not per
message.

Incoming requests (``serve``) run their handler outside the loop: a new greenlet under gevent,
a thread otherwise, so a slow handler (e.g. waiting for Telegram's rate limits) never stalls
NATS I/O. The reply goes back through the bridge.

Connection: reconnects forever with backoff (the initial connect too, which nats-py does not
retry by itself). JetStream publishes wait for the ack; a timed-out publish is ambiguous (the
message may be stored), so it is retried with the same ``Nats-Msg-Id`` and the stream's
duplicate window drops a second copy.

Batches: a batch crosses the bridge once. Its messages are all written at once, each with a
reply subject ``<ack inbox>.<batch>.<index>`` under one wildcard subscription per connection,
and then one wait collects every acknowledgement (what ``publish_async`` does, without its
per-message future, NUID and semaphore, which cost more CPU than the publish itself). Late
acks of an earlier attempt still count. ``publish_each`` reports per message, so the poller
remembers which updates are already stored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import (
    ConsumerConfig,
    DiscardPolicy,
    KeyValueConfig,
    ObjectInfo,
    ObjectMeta,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from nats.js.object_store import OBJ_META_PRE_TEMPLATE, OBJ_STREAM_TEMPLATE

from telegram_gateway.config import Settings
from telegram_gateway.errors import (
    BusError,
    BusUnavailable,
    ConsumerRefused,
    NoResponders,
    PublishFailed,
    RevisionMismatch,
)
from telegram_gateway.redact import redact

logger = logging.getLogger(__name__)

#: The gateway's reply inboxes (JetStream acks, API answers, its own requests) live under this
#: prefix instead of the shared ``_INBOX``: the role's nats-server config lets only the gateway
#: user subscribe to it and nobody else publish to it, so an agent can neither read the
#: gateway's replies nor forge acks into them (``ansible/roles/nats_server/vars/main.yml``,
#: ``_nats_server_gateway_inbox_prefix``; a test keeps the two equal).
INBOX_PREFIX = "_GATEWAY_INBOX"


T = TypeVar("T")
INBOUND_SUBJECTS = "telegram.in.>"
PUBLISH_ATTEMPTS = 5
#: the Object Store bucket of received files (stream ``OBJ_TELEGRAM_FILES``)
FILES_BUCKET = "TELEGRAM_FILES"
#: seconds between two attempts at most to create or update what failed at connect
REPAIR_MAX = 10.0
#: how long a publish that found no stream waits for the stream's info before it tries again:
#: on a cluster the stream may only be electing a leader (nats-server answers nothing meanwhile),
#: and the publish retries sooner than nats-py's 5 s API timeout
STREAM_CHECK_TIMEOUT = 1.0
#: idle heartbeat of a Key-Value watch's ordered consumer, seconds: nats-py re-creates the
#: consumer after two missed ones. Its default (5 s) leaves a watch whose consumer lived on a
#: lost cluster node blind for 10 s or more, and a lease watch must notice a dead worker sooner
WATCH_HEARTBEAT = 1.0


@dataclass(frozen=True)
class Outgoing:
    """One message for JetStream: subject, raw payload bytes and headers."""

    subject: str
    payload: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ack:
    stream: str
    seq: int
    duplicate: bool


@dataclass(frozen=True)
class Request:
    """A NATS request handed to a ``serve`` handler."""

    subject: str
    data: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class StoredObject:
    """An object of the Object Store: its bucket, name, size and how long ago it was put."""

    bucket: str
    name: str
    size: int
    digest: str | None
    age: float


@dataclass(frozen=True)
class Entry:
    """One Key-Value entry as the gateway sees it: ``value`` is None for a deleted key (a
    delete marker, a purge, or the server's marker for a key whose age ran out)."""

    bucket: str
    key: str
    value: bytes | None
    revision: int


Handler = Callable[[Request], bytes]
Watcher = Callable[[Entry], None]
NO_RESPONDERS = "503"


class _AckWait:
    """The acknowledgements of one batch, filled in by the ack inbox subscription."""

    def __init__(self, size: int) -> None:
        self.results: list[Ack | str | None] = [None] * size  # Ack, or why not (retry)
        self.waiting: set[int] = set()
        self.done = asyncio.Event()

    def expect(self, indexes: Sequence[int]) -> None:
        self.waiting = set(indexes)
        for index in indexes:
            self.results[index] = None
        self.done.clear()
        if not self.waiting:
            self.done.set()

    def resolve(self, index: int, msg: Msg) -> None:
        if index not in self.waiting:
            return  # already answered (a late ack of an earlier attempt)
        if msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            self.results[index] = "no stream captures the subject"
        else:
            try:
                answer = json.loads(msg.data)
            except ValueError:
                answer = None
            if not isinstance(answer, dict):
                answer = {"error": {"description": "the acknowledgement is not a JSON object"}}
            error = answer.get("error")
            if error is None:
                self.results[index] = Ack(
                    stream=str(answer.get("stream")),
                    seq=int(answer.get("seq") or 0),
                    duplicate=bool(answer.get("duplicate")),
                )
            else:
                description = error.get("description") if isinstance(error, dict) else error
                self.results[index] = f"JetStream error: {description}"
        self.waiting.discard(index)
        if not self.waiting:
            self.done.set()


def _spawn(function: Callable[[], None]) -> None:
    """Run ``function`` concurrently: a greenlet under gevent, a daemon thread otherwise."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("threading"):
            import gevent

            gevent.spawn(function)
            return
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        pass
    threading.Thread(target=function, daemon=True).start()


class Bus:
    """The gateway's NATS connection. Thread/greenlet-safe; ``start`` before use."""

    def __init__(self, settings: Settings, name: str = "telegram-gateway") -> None:
        self.settings = settings
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connector: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._nc: NatsClient | None = None
        self._ack_prefix = ""
        self._ack_waits: dict[str, _AckWait] = {}
        self._batch_ids = itertools.count(1)
        self._connected = False
        self._stream_ready = False
        self._files_ready = False
        self._repairing: asyncio.Future[None] | None = None
        self._stopping = False
        self._last_error: str | None = None
        self._disconnected_since: float | None = time.monotonic()
        self._reconnects = 0
        self._services: list[tuple[str, str | None, Handler]] = []
        self._buckets: dict[str, KeyValueConfig] = {}  # Key-Value buckets the gateway keeps
        self._kv: dict[str, KeyValue] = {}  # bound on each connection
        self._watchers: list[tuple[str, Watcher]] = []
        self._watches: dict[str, Any] = {}  # bucket -> its watch's subscription
        self._watch_lock: asyncio.Lock | None = None  # (created on the NATS loop)
        self._state_listeners: list[Callable[[bool], None]] = []

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._watch_lock = None  # (an asyncio lock belongs to one loop)
            ready.set()
            self._connector = loop.create_task(self._connect_forever())
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="nats-loop", daemon=True)
        self._thread.start()
        ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Drain and close the connection, then stop the loop."""
        self._stopping = True
        loop = self._loop
        if loop is None or self._thread is None:
            return
        try:
            self.run(self._close(), timeout)
        except Exception as exc:  # closing is best effort
            logger.warning("NATS close did not finish cleanly: %s", exc)
        # the loop's remaining tasks (subscriptions' readers, components' loops) end while the
        # loop still runs, rather than being destroyed pending when it is closed
        with contextlib.suppress(Exception):
            self.run(self._cancel_tasks(), timeout)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def on_state_change(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(connected)`` on the loop whenever the connection goes up or down."""
        self._state_listeners.append(listener)

    # ---- the bridge ------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the NATS loop and wait (cooperatively) for its result."""
        if self._loop is None:
            coro.close()
            raise BusUnavailable("the NATS bus is not started")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise BusUnavailable(f"NATS did not answer within {timeout:g} s") from None

    # ---- state -----------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    def status(self) -> dict[str, Any]:
        down_for = (
            None
            if self._disconnected_since is None
            else round(time.monotonic() - self._disconnected_since, 1)
        )
        return {
            "connected": self._connected,
            "stream": self.settings.stream_name,
            "stream_ready": self._stream_ready,
            "files_bucket": FILES_BUCKET,
            "files_bucket_ready": self._files_ready,
            "buckets_ready": all(name in self._kv for name in self._buckets),
            "reconnects": self._reconnects,
            "disconnected_for_s": down_for,
            "last_error": self._last_error,
        }

    # ---- publishing ------------------------------------------------------------------------
    def publish_each(self, messages: Sequence[Outgoing]) -> list[Ack | BusError]:
        """Publish to JetStream, wait for the acknowledgements, and report per message (in
        order of ``messages``): its :class:`Ack`, or the :class:`BusError` that says why it
        was not acknowledged (it may still be stored: publish it again with the same
        ``Nats-Msg-Id``). Timed-out messages are retried a few times first. Raises
        :class:`BusUnavailable` when not connected (then nothing was sent)."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        if not messages:
            return []
        timeout = self.settings.publish_timeout
        bound = (timeout + 2.0) * PUBLISH_ATTEMPTS + 5
        return self.run(self._publish_each(messages, timeout), bound)

    def publish_core(self, messages: Sequence[Outgoing]) -> None:
        """Plain NATS publish (no ack), e.g. routing copies to agent subjects."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        self.run(self._publish_core(messages), self.settings.publish_timeout)

    # ---- the Object Store of received files ---------------------------------------------------
    def find_object(self, name: str) -> StoredObject | None:
        """The object ``name`` of :data:`FILES_BUCKET`, None when absent (or deleted)."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        return self.run(self._find_object(name), self.settings.publish_timeout + 2)

    def put_object(
        self, name: str, reader: BinaryIO, description: str, timeout: float
    ) -> StoredObject:
        """Store what ``reader`` holds as ``name`` in :data:`FILES_BUCKET` (chunked by nats-py's
        object store, each chunk a JetStream publish); replaces an object of that name."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        return self.run(self._put_object(name, reader, description), timeout)

    # ---- Key-Value buckets ------------------------------------------------------------------
    def declare_bucket(self, config: KeyValueConfig) -> None:
        """Keep Key-Value bucket ``config.bucket``: created (or its limits updated) on every
        connect, before any watcher starts. Declare before :meth:`start`."""
        self._buckets[config.bucket] = config

    def bucket_ready(self, bucket: str) -> bool:
        return self._connected and bucket in self._kv

    def watch(self, bucket: str, callback: Watcher) -> None:
        """Call ``callback(entry)`` on the NATS loop for every key of ``bucket`` as it is now
        and as it changes (deletions and expiries included: ``entry.value`` is None). Started
        on every (re)connect with the current values first. Register before :meth:`start`; one
        watcher per bucket."""
        if bucket in dict(self._watchers):
            raise ValueError(f"Key-Value bucket {bucket} has a watcher already")
        self._watchers.append((bucket, callback))

    def rewatch(self, bucket: str) -> None:
        """Watch ``bucket`` again, from its current values: for a watcher whose watch has
        stopped delivering (its consumer lived on a cluster node that is gone, and nats-py
        could not re-create it)."""
        if bucket in dict(self._watchers):
            self.call_soon(lambda: self.spawn(self._start_watches(bucket)))

    def kv_get(self, bucket: str, key: str, timeout: float | None = None) -> Entry | None:
        """The key's entry; None when it does not exist or is deleted."""
        bound = self._api_timeout(timeout)
        return self.run(self.kv_get_async(bucket, key), bound)

    def kv_create(self, bucket: str, key: str, value: bytes, timeout: float | None = None) -> int:
        """Create ``key`` iff it does not exist (or is deleted); its revision. Raises
        :class:`RevisionMismatch` when it exists."""
        bound = self._api_timeout(timeout)
        return self.run(self.kv_create_async(bucket, key, value), bound)

    def kv_update(
        self, bucket: str, key: str, value: bytes, last: int, timeout: float | None = None
    ) -> int:
        """Replace ``key`` iff its revision is still ``last``; the new revision. Raises
        :class:`RevisionMismatch` otherwise."""
        bound = self._api_timeout(timeout)
        return self.run(self.kv_update_async(bucket, key, value, last), bound)

    def kv_delete(
        self, bucket: str, key: str, last: int | None = None, timeout: float | None = None
    ) -> None:
        """Delete ``key`` (iff its revision is still ``last``, when given)."""
        bound = self._api_timeout(timeout)
        self.run(self.kv_delete_async(bucket, key, last), bound)

    def _api_timeout(self, timeout: float | None) -> float:
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        return self.settings.publish_timeout + 1 if timeout is None else timeout

    # the same, on the loop (for components that run there)
    def _bucket(self, bucket: str) -> KeyValue:
        kv = self._kv.get(bucket)
        if kv is None or not self._connected:
            raise BusUnavailable(
                f"Key-Value bucket {bucket} is not ready (NATS: {self._last_error})"
            )
        return kv

    async def kv_get_async(self, bucket: str, key: str) -> Entry | None:
        try:
            entry = await self._bucket(bucket).get(key)
            if not entry.value and entry.revision == await self._expiry_marker(bucket, key):
                return None  # nats-py returns the server's expiry marker as an empty value
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise _bus_error(exc, f"reading {bucket}") from None
        return Entry(bucket, key, entry.value, entry.revision or 0)

    async def kv_create_async(
        self, bucket: str, key: str, value: bytes, ttl: float | None = None
    ) -> int:
        """Create ``key`` iff absent; with ``ttl`` the server removes it that many seconds
        (whole, rounded up) after this write unless it is written again (per-key TTL)."""
        kv = self._bucket(bucket)
        try:
            try:
                return await kv.create(key, value, msg_ttl=_ttl_seconds(ttl))
            except nats.js.errors.KeyWrongLastSequenceError:
                # nats-py's create takes a delete marker for a deleted key, but not the marker
                # nats-server leaves when a key's age runs out (header Nats-Marker-Reason),
                # which stays for MARKER_TTL: such a key is absent too
                marker = await self._expiry_marker(bucket, key)
                if marker is None:
                    raise
                return await self.kv_update_async(bucket, key, value, marker, ttl)
        except (nats.js.errors.KeyWrongLastSequenceError, RevisionMismatch):
            raise RevisionMismatch(f"{bucket}: key exists") from None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise _bus_error(exc, f"writing {bucket}") from None

    async def _expiry_marker(self, bucket: str, key: str) -> int | None:
        """The revision of the key's last message when that is the server's expiry marker."""
        assert self._nc is not None
        try:
            msg = await self._nc.jetstream().get_last_msg(f"KV_{bucket}", f"$KV.{bucket}.{key}")
        except nats.js.errors.NotFoundError:
            return None
        return msg.seq if msg.headers and "Nats-Marker-Reason" in msg.headers else None

    async def kv_update_async(
        self, bucket: str, key: str, value: bytes, last: int, ttl: float | None = None
    ) -> int:
        """Replace ``key`` iff its revision is still ``last`` (``ttl`` as for
        :meth:`kv_create_async`; nats-py's ``update`` takes none, so this is its JetStream
        publish with the expected-revision header and the per-message TTL)."""
        self._bucket(bucket)
        assert self._nc is not None
        try:
            ack = await self._nc.jetstream().publish(
                f"$KV.{bucket}.{key}",
                value,
                headers={"Nats-Expected-Last-Subject-Sequence": str(last)},
                msg_ttl=_ttl_seconds(ttl),
            )
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164):
                raise RevisionMismatch(f"{bucket}: key changed since revision {last}") from None
            raise _bus_error(exc, f"writing {bucket}") from None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise _bus_error(exc, f"writing {bucket}") from None
        return int(ack.seq)

    async def kv_update_many_async(
        self, bucket: str, updates: Sequence[tuple[str, bytes, int]], timeout: float
    ) -> list[int | BusError]:
        """Revision-checked updates of many keys at once, each what ``kv_update`` does (a
        JetStream publish to the key's subject with ``Nats-Expected-Last-Subject-Sequence``),
        written together and acknowledged through the connection's one ack inbox instead of a
        request per key: the new revision, :class:`RevisionMismatch`, or why it may not have
        been stored. Not retried: the caller's next round is the retry."""
        self._bucket(bucket)
        assert self._nc is not None
        nc = self._nc
        batch = str(next(self._batch_ids))
        wait = _AckWait(len(updates))
        self._ack_waits[batch] = wait
        reply = f"{self._ack_prefix}{batch}."
        try:
            wait.expect(range(len(updates)))
            try:
                for index, (key, value, last) in enumerate(updates):
                    await nc.publish(
                        f"$KV.{bucket}.{key}",
                        value,
                        reply=reply + str(index),
                        headers={"Nats-Expected-Last-Subject-Sequence": str(last)},
                    )
            except (nats.errors.Error, OSError) as exc:
                return [BusUnavailable(f"NATS connection lost: {exc}")] * len(updates)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wait.done.wait(), timeout)
        finally:
            self._ack_waits.pop(batch, None)
        results: list[int | BusError] = []
        for result in wait.results:
            if isinstance(result, Ack):
                results.append(result.seq)
            elif result and "wrong last sequence" in result:
                results.append(RevisionMismatch(f"{bucket}: {result}"))
            else:
                results.append(BusUnavailable(result or f"no acknowledgement in {timeout:g} s"))
        return results

    async def kv_delete_async(self, bucket: str, key: str, last: int | None = None) -> None:
        try:
            await self._bucket(bucket).delete(key, last=last)
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164):
                raise RevisionMismatch(f"{bucket}: key changed since revision {last}") from None
            raise _bus_error(exc, f"deleting in {bucket}") from None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise _bus_error(exc, f"deleting in {bucket}") from None

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the NATS loop soon (nothing when the loop is not running)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as a task of the NATS loop (a component's background work there)."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._thread is None:
            coro.close()
            raise BusUnavailable("the NATS bus is not running")
        loop.call_soon_threadsafe(loop.create_task, coro)

    # ---- agents' consumers of the stream -----------------------------------------------------
    def add_pull_consumer(self, config: ConsumerConfig) -> dict[str, Any]:
        """Create (or update) a durable pull consumer of the stream; a summary of it. Raises
        :class:`ConsumerRefused` when JetStream refuses it."""
        if config.deliver_subject:
            raise ConsumerRefused("only pull consumers (no deliver subject)")
        bound = self._api_timeout(None)
        return self.run(self._add_pull_consumer(config), bound)

    def delete_consumer(self, name: str) -> bool:
        """Delete a consumer of the stream; False when there is none of that name."""
        bound = self._api_timeout(None)
        return self.run(self._delete_consumer(name), bound)

    async def _add_pull_consumer(self, config: ConsumerConfig) -> dict[str, Any]:
        assert self._nc is not None
        stream = self.settings.stream_name
        try:
            info = await self._nc.jetstream().add_consumer(stream, config)
        except nats.js.errors.APIError as exc:
            if exc.code in (400, 409):
                raise ConsumerRefused(str(exc.description or exc)) from None
            raise _bus_error(exc, f"creating a consumer of {stream}") from None
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise _bus_error(exc, f"creating a consumer of {stream}") from None
        filters = info.config.filter_subjects or [info.config.filter_subject or INBOUND_SUBJECTS]
        policy = info.config.deliver_policy
        return {
            "stream": stream,
            "name": info.name,
            "filter_subjects": filters,
            "deliver_policy": str(getattr(policy, "value", policy) or "all"),
            "num_pending": info.num_pending,
            "ack_wait": info.config.ack_wait,
        }

    async def _delete_consumer(self, name: str) -> bool:
        assert self._nc is not None
        try:
            return bool(await self._nc.jetstream().delete_consumer(self.settings.stream_name, name))
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, nats.js.errors.Error) as exc:
            raise _bus_error(exc, "deleting a consumer") from None

    # ---- requests ----------------------------------------------------------------------------
    def request(self, subject: str, data: bytes, timeout: float) -> bytes:
        """A NATS request; the reply's bytes. Raises :class:`NoResponders` when nobody serves
        ``subject`` and :class:`BusUnavailable` when not connected or not answered in time."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        return self.run(self._request(subject, data, timeout), timeout + 1)

    async def _request(self, subject: str, data: bytes, timeout: float) -> bytes:
        assert self._nc is not None
        try:
            msg = await self._nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoResponders(f"nobody serves {subject}") from None
        except nats.errors.TimeoutError:
            raise BusUnavailable(f"no answer on {subject} within {timeout:g} s") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
            raise BusUnavailable("NATS connection lost") from None
        return bytes(msg.data)

    # ---- serving ---------------------------------------------------------------------------
    def serve(self, subject: str, handler: Handler, queue: str | None = None) -> None:
        """Answer requests on ``subject`` (in ``queue``) with ``handler(request) -> reply``.
        Registered once; re-subscribed by nats-py after every reconnect."""
        self._services.append((subject, queue, handler))
        if self._connected and self._loop is not None:
            self.run(self._subscribe(subject, queue, handler), 5)

    # ---- on the loop -----------------------------------------------------------------------
    async def _connect_forever(self) -> None:
        delay = 0.2
        while not self._stopping:
            try:
                self._nc = await nats.connect(**self._connect_options())
            except Exception as exc:
                self._note_error(f"cannot connect to NATS: {exc or type(exc).__name__}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            break
        if self._nc is None:
            return
        # one ack inbox per connection; nats-py subscribes it again after every reconnect
        self._ack_prefix = self._nc.new_inbox() + "."
        await self._nc.subscribe(self._ack_prefix + ">", cb=self._on_ack)
        for subject, queue, handler in self._services:
            await self._subscribe(subject, queue, handler)
        await self._on_up(first=True)

    def _connect_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            "servers": [url.strip() for url in s.nats_url.split(",")],
            "name": self.name,
            "inbox_prefix": INBOX_PREFIX,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "connect_timeout": 2,
            "ping_interval": 5,
            "max_outstanding_pings": 2,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
        }
        if s.nats_user:
            options["user"] = s.nats_user
            options["password"] = s.nats_password
        if s.nats_creds:
            options["user_credentials"] = s.nats_creds
        return options

    async def _on_up(self, first: bool) -> None:
        self._connected = True
        self._disconnected_since = None
        logger.info("NATS %s (%s)", "connected" if first else "reconnected", self._server_url())
        await self._ensure_stream()
        await self._ensure_files_bucket()
        await self._ensure_buckets()
        await self._start_watches()
        for listener in self._state_listeners:
            listener(True)
        if not self._all_ready() and (self._repairing is None or self._repairing.done()):
            self._repairing = asyncio.ensure_future(self._repair())

    def _all_ready(self) -> bool:
        return (
            self._stream_ready
            and self._files_ready
            and all(name in self._kv for name in self._buckets)
        )

    async def _repair(self) -> None:
        """Create or update again what failed at connect (a JetStream API call that timed out
        while a cluster elects a leader, a server that was short of resources) until all is
        ready, instead of waiting for the next reconnect."""
        delay = 1.0
        while self._connected and not self._stopping and not self._all_ready():
            await asyncio.sleep(delay)
            delay = min(delay * 2, REPAIR_MAX)
            if not self._connected:
                return
            if not self._stream_ready:
                await self._ensure_stream()
            if not self._files_ready:
                await self._ensure_files_bucket()
            missing = [name for name in self._buckets if name not in self._kv]
            if missing:
                await self._ensure_buckets()
                if any(name in self._kv for name in missing):
                    await self._start_watches()
        if self._all_ready():
            logger.info("JetStream stream, object store and buckets ready")

    async def _on_disconnected(self) -> None:
        if self._connected:
            logger.warning("NATS disconnected; reconnecting (nothing is confirmed meanwhile)")
        self._connected = False
        self._disconnected_since = time.monotonic()
        for listener in self._state_listeners:
            listener(False)

    async def _on_reconnected(self) -> None:
        self._reconnects += 1
        await self._on_up(first=False)

    async def _on_error(self, exc: Exception) -> None:
        self._note_error(f"NATS error: {exc or type(exc).__name__}")

    def _replicas_hint(self) -> str:
        replicas = self.settings.nats_replicas
        if replicas == 1:
            return ""
        return f" (GATEWAY_NATS_REPLICAS={replicas} needs a NATS cluster of {replicas} or more)"

    def _log_replicas(self, stream: str, before: int | None) -> None:
        """Say so when an existing stream was changed to GATEWAY_NATS_REPLICAS (the servers
        copy its messages to the new replicas in the background)."""
        if (before or 1) != self.settings.nats_replicas:
            logger.info(
                "JetStream stream %s: replicas %d -> %d (GATEWAY_NATS_REPLICAS)",
                stream,
                before or 1,
                self.settings.nats_replicas,
            )

    def _note_error(self, message: str) -> None:
        message = redact(message)
        if message != self._last_error:
            logger.warning("%s", message)
        self._last_error = message

    def _server_url(self) -> str:
        nc = self._nc
        if nc is None or nc.connected_url is None:
            return "?"
        url = nc.connected_url
        return f"{url.scheme}://{url.hostname}:{url.port}"

    async def _ensure_stream(self, timeout: float | None = None) -> None:
        """Create stream TELEGRAM, or update it to the configured settings. With ``timeout``
        (of each JetStream API call; nats-py's default otherwise) it is a check after a publish
        found no stream: when it gets no answer either, the stream keeps the state it had (a
        cluster electing the stream's leader answers nothing; it is not gone)."""
        assert self._nc is not None
        s = self.settings
        config = StreamConfig(
            name=s.stream_name,
            subjects=[INBOUND_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=s.stream_max_age,
            duplicate_window=s.stream_duplicate_window,
            num_replicas=s.nats_replicas,
        )
        js = self._nc.jetstream() if timeout is None else self._nc.jetstream(timeout=timeout)
        try:
            try:
                info = await js.stream_info(s.stream_name)
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
                logger.info(
                    "created JetStream stream %s (%s, %d replica(s))",
                    s.stream_name,
                    INBOUND_SUBJECTS,
                    s.nats_replicas,
                )
            else:
                await js.update_stream(config)
                self._log_replicas(s.stream_name, info.config.num_replicas)
            self._stream_ready = True
        except Exception as exc:
            # (a check that got no answer, or "temporarily unavailable": a stream electing its
            # leader is not gone)
            transient = isinstance(exc, TimeoutError | nats.js.errors.ServiceUnavailableError)
            if timeout is None or not transient:
                self._stream_ready = False
            self._note_error(
                f"cannot create or update stream {s.stream_name}: {exc}{self._replicas_hint()}"
            )

    async def _ensure_files_bucket(self) -> None:
        """Create the Object Store bucket of received files, or update its age and size."""
        assert self._nc is not None
        s = self.settings
        js = self._nc.jetstream()
        stream = OBJ_STREAM_TEMPLATE.format(bucket=FILES_BUCKET)
        try:
            try:
                info = await js.stream_info(stream)
            except nats.js.errors.NotFoundError:
                await js.create_object_store(
                    FILES_BUCKET,
                    ObjectStoreConfig(
                        description="files users sent, fetched for agents by the gateway",
                        ttl=s.files_ttl,
                        max_bytes=s.files_bucket_max_bytes,
                        storage=StorageType.FILE,
                        replicas=s.nats_replicas,
                    ),
                )
                logger.info("created JetStream object store %s", FILES_BUCKET)
            else:
                config = info.config
                if (
                    abs((config.max_age or 0) - s.files_ttl) > 0.001
                    or config.max_bytes != s.files_bucket_max_bytes
                    or config.num_replicas != s.nats_replicas
                ):
                    await js.update_stream(
                        config.evolve(
                            max_age=s.files_ttl,
                            max_bytes=s.files_bucket_max_bytes,
                            num_replicas=s.nats_replicas,
                        )
                    )
                    self._log_replicas(stream, config.num_replicas)
            self._files_ready = True
        except Exception as exc:
            self._files_ready = False
            self._note_error(
                f"cannot create or update object store {FILES_BUCKET}: {exc}{self._replicas_hint()}"
            )

    async def _ensure_buckets(self) -> None:
        """Create each declared Key-Value bucket, or update its limits to the declared ones."""
        assert self._nc is not None
        js = self._nc.jetstream()
        replicas = self.settings.nats_replicas
        for name, declared in self._buckets.items():
            config = dataclasses.replace(declared, replicas=replicas)
            try:
                try:
                    kv = await js.key_value(name)
                except nats.js.errors.BucketNotFoundError:
                    kv = await js.create_key_value(config)
                    logger.info("created JetStream Key-Value bucket %s", name)
                else:
                    info = await js.stream_info(f"KV_{name}")
                    current = info.config
                    if (
                        abs((current.max_age or 0) - (config.ttl or 0)) > 0.001
                        or (current.max_bytes or -1) != (config.max_bytes or -1)
                        or current.num_replicas != replicas
                    ):
                        await js.update_stream(
                            current.evolve(
                                max_age=config.ttl,
                                max_bytes=config.max_bytes or -1,
                                num_replicas=replicas,
                            )
                        )
                        self._log_replicas(f"KV_{name}", current.num_replicas)
                self._kv[name] = kv
            except Exception as exc:
                self._kv.pop(name, None)
                self._note_error(
                    f"cannot create or update Key-Value bucket {name}: {exc}{self._replicas_hint()}"
                )

    async def _start_watches(self, only: str | None = None) -> None:
        """(Re)start the watches: all of them, or ``only`` that bucket's (one at a time: a
        reconnect and a :meth:`rewatch` together must not leave two watches of a bucket)."""
        if self._watch_lock is None:
            self._watch_lock = asyncio.Lock()
        async with self._watch_lock:
            await self._restart_watches(only)

    async def _restart_watches(self, only: str | None) -> None:
        for bucket, callback in self._watchers:
            if only is not None and bucket != only:
                continue
            watch = self._watches.pop(bucket, None)
            if watch is not None:
                with contextlib.suppress(Exception):
                    await watch.unsubscribe()
            kv = self._kv.get(bucket)
            if kv is None:
                continue
            try:
                self._watches[bucket] = await self._watch(bucket, kv, callback)
            except Exception as exc:
                self._note_error(f"cannot watch Key-Value bucket {bucket}: {exc}")

    async def _watch(self, bucket: str, kv: KeyValue, callback: Watcher) -> Any:
        """An ordered consumer on the bucket's subjects, last value per key first: what
        nats-py's ``KeyValue.watch`` does, with a callback instead of its bounded queue (a
        watcher that stops reading must not stall the connection)."""
        assert self._nc is not None
        prefix = f"$KV.{bucket}."

        async def on_message(msg: Msg) -> None:
            headers = msg.headers or {}
            deleted = (
                headers.get("KV-Operation") in (KV_DEL, KV_PURGE) or "Nats-Marker-Reason" in headers
            )
            try:
                revision = msg.metadata.sequence.stream
            except Exception:
                revision = 0
            entry = Entry(
                bucket, msg.subject[len(prefix) :], None if deleted else msg.data, revision
            )
            try:
                callback(entry)
            except Exception:
                logger.exception("watcher of %s failed", bucket)

        from nats.js.api import DeliverPolicy

        return await self._nc.jetstream().subscribe(
            f"{prefix}>",
            cb=on_message,
            ordered_consumer=True,
            idle_heartbeat=WATCH_HEARTBEAT,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            stream=f"KV_{bucket}",
        )

    async def _find_object(self, name: str) -> StoredObject | None:
        assert self._nc is not None
        js = self._nc.jetstream()
        subject = OBJ_META_PRE_TEMPLATE.format(
            bucket=FILES_BUCKET, obj=base64.urlsafe_b64encode(name.encode()).decode()
        )
        try:
            msg = await js.get_last_msg(OBJ_STREAM_TEMPLATE.format(bucket=FILES_BUCKET), subject)
        except nats.js.errors.NotFoundError:
            return None
        info = ObjectInfo.from_response(json.loads(msg.data or b"{}"))
        if info.deleted:
            return None
        age = 0.0
        if msg.time is not None:
            age = max(0.0, (datetime.now(UTC) - msg.time).total_seconds())
        return StoredObject(FILES_BUCKET, name, int(info.size or 0), info.digest, age)

    async def _put_object(self, name: str, reader: BinaryIO, description: str) -> StoredObject:
        assert self._nc is not None
        store = await self._nc.jetstream().object_store(FILES_BUCKET)
        info = await store.put(name, reader, meta=ObjectMeta(name=name, description=description))
        return StoredObject(FILES_BUCKET, name, int(info.size or 0), info.digest, 0.0)

    async def _on_ack(self, msg: Msg) -> None:
        batch, _, index = msg.subject[len(self._ack_prefix) :].rpartition(".")
        wait = self._ack_waits.get(batch)
        if wait is not None:
            wait.resolve(int(index), msg)

    async def _publish_each(
        self, messages: Sequence[Outgoing], timeout: float
    ) -> list[Ack | BusError]:
        assert self._nc is not None
        nc = self._nc
        batch = str(next(self._batch_ids))
        wait = _AckWait(len(messages))
        self._ack_waits[batch] = wait
        reply = f"{self._ack_prefix}{batch}."
        todo = list(range(len(messages)))
        why: dict[int, str] = {}
        try:
            for attempt in range(PUBLISH_ATTEMPTS):
                if not self._connected:
                    break
                wait.expect(todo)
                try:
                    for index in todo:
                        message = messages[index]
                        await nc.publish(
                            message.subject,
                            message.payload,
                            reply=reply + str(index),
                            headers=message.headers or None,
                        )
                except (
                    nats.errors.ConnectionClosedError,
                    nats.errors.ConnectionReconnectingError,
                    nats.errors.OutboundBufferLimitError,
                ) as exc:
                    why = dict.fromkeys(todo, type(exc).__name__)
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wait.done.wait(), timeout)
                retry: list[int] = []
                need_stream = False
                for index in todo:
                    result = wait.results[index]
                    if isinstance(result, Ack):
                        continue
                    # no answer is ambiguous (it may be stored): the same Nats-Msg-Id makes
                    # the retry safe
                    why[index] = result or f"no acknowledgement within {timeout:g} s"
                    need_stream = need_stream or result == "no stream captures the subject"
                    retry.append(index)
                todo = retry
                if not todo:
                    break
                if need_stream:
                    await self._ensure_stream(STREAM_CHECK_TIMEOUT)
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        finally:
            self._ack_waits.pop(batch, None)
        results: list[Ack | BusError] = []
        for index, message in enumerate(messages):
            result = wait.results[index]
            if isinstance(result, Ack):
                results.append(result)
            elif not self._connected:
                results.append(
                    BusUnavailable(
                        f"NATS connection lost while publishing {message.subject} "
                        f"({why.get(index, 'not connected')})"
                    )
                )
            else:
                results.append(
                    PublishFailed(
                        f"JetStream did not acknowledge {message.subject} after "
                        f"{PUBLISH_ATTEMPTS} attempts ({why.get(index, '?')}); "
                        "it will be retried"
                    )
                )
        return results

    async def _publish_core(self, messages: Sequence[Outgoing]) -> None:
        assert self._nc is not None
        for message in messages:
            await self._nc.publish(
                message.subject, message.payload, headers=message.headers or None
            )

    async def _subscribe(self, subject: str, queue: str | None, handler: Handler) -> None:
        assert self._nc is not None

        async def on_message(msg: Msg) -> None:
            if not msg.reply:
                return
            request = Request(subject=msg.subject, data=bytes(msg.data), headers=msg.headers or {})

            def handle() -> None:
                try:
                    reply = handler(request)
                except Exception:
                    logger.exception("handler for %s failed", request.subject)
                    reply = (
                        b'{"ok":false,"error_code":500,'
                        b'"description":"Internal Server Error: gateway handler failed"}'
                    )
                try:
                    self.run(self._respond(msg, reply), 5)
                except Exception as exc:
                    logger.warning("could not reply on %s: %s", request.subject, exc)

            _spawn(handle)

        await self._nc.subscribe(subject, queue=queue or "", cb=on_message)

    async def _respond(self, msg: Msg, reply: bytes) -> None:
        await msg.respond(reply)

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self) -> None:
        nc = self._nc
        self._connected = False
        if nc is None or nc.is_closed:
            return
        for watch in self._watches.values():
            with contextlib.suppress(Exception):
                await watch.unsubscribe()
        self._watches = {}
        try:
            await asyncio.wait_for(nc.drain(), 3)
        except Exception:
            await nc.close()


def _ttl_seconds(ttl: float | None) -> int | None:
    """A per-key TTL as nats-server keeps it: whole seconds, at least 1 (rounded up, so a key
    never goes before the time its writer counts on)."""
    return None if ttl is None else max(1, math.ceil(ttl))


def _bus_error(exc: Exception, doing: str) -> BusError:
    if isinstance(exc, nats.errors.TimeoutError):
        return BusUnavailable(f"NATS did not answer {doing}")
    if isinstance(exc, nats.errors.ConnectionClosedError | nats.errors.ConnectionReconnectingError):
        return BusUnavailable(f"NATS connection lost {doing}")
    return BusError(f"JetStream error {doing}: {exc}")
