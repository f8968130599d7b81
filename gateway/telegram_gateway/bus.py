"""NATS for the gateway: one asyncio loop owns all NATS I/O; everything else reaches it
through a thread-safe bridge.

Why this shape: nats-py is asyncio, gunicorn's gevent worker is not. The loop runs
``run_forever`` in a ``threading.Thread`` started *after* gevent monkey-patching, so under
gunicorn it is a greenlet whose selector cooperates with the gevent hub; without gevent
(unit tests, scripts) it is a plain thread. Callers never touch the loop directly: they
submit coroutines with ``asyncio.run_coroutine_threadsafe`` and wait on the returned
``concurrent.futures.Future`` -- its wait is a patched lock, so a waiting greenlet yields to
the hub and never blocks it. Batches cross the bridge once (``publish_batch``), not per
message.

Incoming requests (``serve``) run their handler outside the loop: a new greenlet under gevent,
a thread otherwise, so a slow handler (e.g. waiting for Telegram's rate limits) never stalls
NATS I/O. The reply goes back through the bridge.

Connection: reconnects forever with backoff (the initial connect too, which nats-py does not
retry by itself). JetStream publishes wait for the ack; a timed-out publish is ambiguous (the
message may be stored), so it is retried with the same ``Nats-Msg-Id`` and the stream's
duplicate window drops a second copy.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from telegram_gateway.config import Settings
from telegram_gateway.errors import BusUnavailable, PublishFailed
from telegram_gateway.redact import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")
INBOUND_SUBJECTS = "telegram.in.>"
PUBLISH_ATTEMPTS = 5


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


Handler = Callable[[Request], bytes]


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
        self._connected = False
        self._stream_ready = False
        self._stopping = False
        self._last_error: str | None = None
        self._disconnected_since: float | None = time.monotonic()
        self._reconnects = 0
        self._services: list[tuple[str, str | None, Handler]] = []
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

    @property
    def stream_ready(self) -> bool:
        return self._stream_ready

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
            "reconnects": self._reconnects,
            "disconnected_for_s": down_for,
            "last_error": self._last_error,
        }

    # ---- publishing ------------------------------------------------------------------------
    def publish_batch(self, messages: Sequence[Outgoing]) -> list[Ack]:
        """Publish to JetStream and wait until every message is acknowledged (in order of
        ``messages``). Raises :class:`BusUnavailable` / :class:`PublishFailed`; then some of
        the batch may be stored, and publishing it again is safe (same ``Nats-Msg-Id``)."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        timeout = self.settings.publish_timeout
        bound = timeout * PUBLISH_ATTEMPTS + 5
        return self.run(self._publish_batch(messages, timeout), bound)

    def publish_core(self, messages: Sequence[Outgoing]) -> None:
        """Plain NATS publish (no ack), e.g. routing copies to agent subjects."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        self.run(self._publish_core(messages), self.settings.publish_timeout)

    def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """A NATS request; returns the reply's payload."""
        if not self._connected:
            raise BusUnavailable("not connected to NATS")
        return self.run(self._request(subject, payload, timeout), timeout + 1)

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
        for subject, queue, handler in self._services:
            await self._subscribe(subject, queue, handler)
        await self._on_up(first=True)

    def _connect_options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            "servers": [url.strip() for url in s.nats_url.split(",")],
            "name": self.name,
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
        for listener in self._state_listeners:
            listener(True)

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

    async def _ensure_stream(self) -> None:
        """Create stream TELEGRAM, or update it to the configured settings."""
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
            num_replicas=1,
        )
        js = self._nc.jetstream()
        try:
            try:
                await js.stream_info(s.stream_name)
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
                logger.info("created JetStream stream %s (%s)", s.stream_name, INBOUND_SUBJECTS)
            else:
                await js.update_stream(config)
            self._stream_ready = True
        except Exception as exc:
            self._stream_ready = False
            self._note_error(f"cannot create or update stream {s.stream_name}: {exc}")

    async def _publish_one(self, message: Outgoing, timeout: float) -> Ack:
        assert self._nc is not None
        js = self._nc.jetstream(timeout=timeout)
        last: Exception | None = None
        for attempt in range(PUBLISH_ATTEMPTS):
            if not self._connected:
                raise BusUnavailable("NATS connection lost while publishing")
            try:
                ack = await js.publish(
                    message.subject, message.payload, timeout=timeout, headers=message.headers
                )
                return Ack(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                # ambiguous: may be stored; the same Nats-Msg-Id makes the retry safe
                last = exc
                if isinstance(exc, nats.errors.NoRespondersError):
                    await self._ensure_stream()
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                raise BusUnavailable("NATS connection lost while publishing") from None
        raise PublishFailed(
            f"JetStream did not acknowledge {message.subject} after {PUBLISH_ATTEMPTS} attempts "
            f"({type(last).__name__}); it will be retried"
        )

    async def _publish_batch(self, messages: Sequence[Outgoing], timeout: float) -> list[Ack]:
        results = await asyncio.gather(
            *(self._publish_one(m, timeout) for m in messages), return_exceptions=True
        )
        acks: list[Ack] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            acks.append(result)
        return acks

    async def _publish_core(self, messages: Sequence[Outgoing]) -> None:
        assert self._nc is not None
        for message in messages:
            await self._nc.publish(
                message.subject, message.payload, headers=message.headers or None
            )

    async def _request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        assert self._nc is not None
        try:
            reply = await self._nc.request(subject, payload, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise BusUnavailable(f"no service answers on {subject}") from None
        except nats.errors.TimeoutError:
            raise BusUnavailable(f"no reply on {subject} within {timeout:g} s") from None
        return bytes(reply.data)

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

    async def _close(self) -> None:
        nc = self._nc
        self._connected = False
        if nc is None or nc.is_closed:
            return
        try:
            await asyncio.wait_for(nc.drain(), 3)
        except Exception:
            await nc.close()
