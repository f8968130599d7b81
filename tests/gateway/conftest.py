"""Fixtures for the gateway's integration and fault tests: a real nats-server (with a user
and password), the Bot API emulator, and the gateway under real gunicorn + gevent.

``stack`` starts NATS and the emulator with two bots; ``stack.gateway(...)`` starts a
gateway pointed at both (DEBUG logging, short poll timeout) and every process is stopped at
the end of the test. ``read_stream`` reads every message of the JetStream stream back."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest

from harness.emulator import EmulatorProcess, load_emulator_module
from harness.gateway import GatewayProcess
from harness.nats import NatsServer
from harness.procs import wait_until
from harness.tokens import fake_token

STREAM = "TELEGRAM"
NATS_USER = "gateway"
BOT_IDS = (700000001, 700000002)
# what the emulator's generator makes
KNOWN_KINDS: tuple[str, ...] = tuple(load_emulator_module().GENERATED_KINDS)


@dataclass(frozen=True)
class Stored:
    """One message of the stream as a consumer sees it."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def update(self) -> dict[str, Any]:
        return dict(json.loads(self.data))


@dataclass
class Stack:
    root: Path
    nats: NatsServer
    emulator: EmulatorProcess
    nats_password: str
    tokens: dict[int, str]
    api_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    gateways: list[GatewayProcess] = field(default_factory=list)

    def gateway(
        self,
        workers: int = 2,
        bots: tuple[int, ...] | None = None,
        routes: str | None = None,
        start: bool = True,
        **env: str,
    ) -> GatewayProcess:
        bot_ids = bots or tuple(self.tokens)
        settings = {
            "TELEGRAM_API_URL": self.emulator.api_url,
            "TELEGRAM_BOT_TOKENS": ",".join(self.tokens[b] for b in bot_ids),
            "NATS_URL": self.nats.url,
            "NATS_USER": NATS_USER,
            "NATS_PASSWORD": self.nats_password,
            "GATEWAY_API_TOKEN": self.api_token,
            "GATEWAY_LOG_LEVEL": "DEBUG",
            "GATEWAY_POLL_TIMEOUT": "2",
            "GATEWAY_LOCK_RETRY_INTERVAL": "0.5",
            "GATEWAY_HEALTH_PROBE_INTERVAL": "1",
            "GATEWAY_PUBLISH_TIMEOUT": "2",
        }
        if routes is not None:
            path = self.root / f"routes-{len(self.gateways)}.yml"
            path.write_text(routes)
            settings["GATEWAY_ROUTES_FILE"] = str(path)
        settings.update(env)
        gateway = GatewayProcess(self.root / f"gateway-{len(self.gateways)}", settings, workers)
        self.gateways.append(gateway)
        if start:
            gateway.start(timeout=30)
        return gateway

    bot_ids: tuple[int, ...] = BOT_IDS
    kinds: tuple[str, ...] = KNOWN_KINDS

    # ---- checks ----------------------------------------------------------------------------
    @staticmethod
    def expected_facts(update: dict[str, Any]) -> tuple[str, int | None, int | None]:
        """(update type, chat id, user id) of an emulator-generated update, worked out here
        independently of the gateway's code."""
        kind = next(key for key in update if key in KNOWN_KINDS)
        body = update[kind]
        chat = body.get("chat") or (body.get("message") or {}).get("chat") or {}
        user = body.get("from") or body.get("user") or {}
        return kind, chat.get("id"), user.get("id")

    def check_exactly_once(self, stored: list[Stored], bot_ids: tuple[int, ...]) -> None:
        """Every update the emulator served for ``bot_ids`` is in ``stored`` exactly once,
        JSON-equal to what was served, with the contract's subject and headers."""
        served = {bot_id: self.served(bot_id) for bot_id in bot_ids}
        seen: set[str] = set()
        for message in stored:
            msg_id = message.headers["Nats-Msg-Id"]
            assert msg_id not in seen, f"{msg_id} stored twice"
            seen.add(msg_id)
            bot_id, update_id = (int(part) for part in msg_id.split(":"))
            original = served[bot_id][update_id]
            assert message.update == original
            kind, chat_id, user_id = self.expected_facts(original)
            assert message.subject == f"telegram.in.{bot_id}.{kind}"
            expected = {
                "Nats-Msg-Id": f"{bot_id}:{update_id}",
                "Telegram-Bot-Id": str(bot_id),
                "Telegram-Update-Id": str(update_id),
                "Telegram-Update-Type": kind,
            }
            if chat_id is not None:
                expected["Telegram-Chat-Id"] = str(chat_id)
            if user_id is not None:
                expected["Telegram-User-Id"] = str(user_id)
            assert message.headers == expected
        missing = {f"{b}:{u}" for b in bot_ids for u in served[b]} - seen
        assert not missing, f"{len(missing)} update(s) lost, e.g. {sorted(missing)[:3]}"
        assert len(stored) == sum(len(s) for s in served.values())

    @staticmethod
    def timed_healthz(gateway: GatewayProcess) -> tuple[int, float]:
        started = time.perf_counter()
        status, _ = gateway.get("/healthz", timeout=5)
        return status, time.perf_counter() - started

    def secrets(self) -> list[str]:
        return [t.split(":", 1)[1] for t in self.tokens.values()] + [
            self.nats_password,
            self.api_token,
        ]

    def assert_no_secrets_logged(self, gateway: GatewayProcess) -> None:
        log = gateway.log()
        assert "DEBUG" in log, "the gateway should log at DEBUG in these tests"
        for secret in self.secrets():
            assert secret not in log, "a secret appears in the gateway's log"

    def served(self, bot_id: int) -> dict[int, dict[str, Any]]:
        """update_id -> the update exactly as the emulator served it."""
        result = self.emulator.updates(bot_id)
        return {u["update_id"]: u for u in result["updates"]}

    def wait_confirmed(self, bot_id: int, timeout: float) -> None:
        """Until the emulator has no pending update for the bot (all confirmed)."""

        def done() -> bool:
            stats = self.emulator.stats()
            return (
                stats["pending"][str(bot_id)] == 0
                and stats["confirmed_offset"][str(bot_id)] == stats["next_update_id"][str(bot_id)]
            )

        wait_until(done, timeout, f"bot {bot_id}: every update confirmed", interval=0.2)

    def holder(self, gateway: GatewayProcess, bot_id: int) -> dict[str, Any]:
        """The poller record the lock holder writes (state, pid, offset, ...)."""
        path = gateway.state_dir / "pollers" / f"{bot_id}.json"
        return dict(json.loads(path.read_text()))

    def subscribe(self, subject: str) -> Subscriber:
        return Subscriber(self.nats.url, self.nats_password, subject)

    def stream_count(self) -> int:
        return asyncio.run(_stream_count(self.nats.url, self.nats_password))

    def read_stream(self) -> list[Stored]:
        return asyncio.run(_read_stream(self.nats.url, self.nats_password))


async def _connect(url: str, password: str) -> nats.NATS:
    return await nats.connect(url, user=NATS_USER, password=password, connect_timeout=3)


async def _stream_count(url: str, password: str) -> int:
    nc = await _connect(url, password)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def _read_stream(url: str, password: str) -> list[Stored]:
    """Every message of the stream, in order (an ordered push consumer)."""
    nc = await _connect(url, password)
    try:
        js = nc.jetstream()
        total = int((await js.stream_info(STREAM)).state.messages)
        stored: list[Stored] = []
        if total == 0:
            return stored
        sub = await js.subscribe("telegram.in.>", stream=STREAM, ordered_consumer=True)
        while len(stored) < total:
            msg = await sub.next_msg(timeout=10)
            stored.append(
                Stored(
                    seq=msg.metadata.sequence.stream,
                    subject=msg.subject,
                    headers=dict(msg.headers or {}),
                    data=bytes(msg.data),
                )
            )
        await sub.unsubscribe()
        return stored
    finally:
        await nc.close()


class Subscriber:
    """Core NATS subscription in a background thread, collecting what arrives."""

    def __init__(self, url: str, password: str, subject: str) -> None:
        self.url, self.password, self.subject = url, password, subject
        self.messages: list[Stored] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await _connect(self.url, self.password)

        async def collect(msg: Any) -> None:
            self.messages.append(Stored(0, msg.subject, dict(msg.headers or {}), bytes(msg.data)))

        await nc.subscribe(self.subject, cb=collect)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.close()

    def __enter__(self) -> Subscriber:
        self._thread.start()
        assert self._ready.wait(10), "subscriber did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    password = secrets.token_urlsafe(18)
    tokens = {bot_id: fake_token(bot_id) for bot_id in BOT_IDS}
    nats_server = NatsServer(tmp_path / "nats", users={NATS_USER: password}).start()
    emulator = EmulatorProcess(tmp_path / "emulator", bots=list(tokens.values()))
    the_stack: Stack | None = None
    try:
        emulator.start()
        the_stack = Stack(tmp_path, nats_server, emulator, password, tokens)
        yield the_stack
    finally:
        for gateway in the_stack.gateways if the_stack else []:
            gateway.stop()
        emulator.stop()
        nats_server.stop()
