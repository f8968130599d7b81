"""The one stack builder: nats-server + the Bot API emulator + the gateway under gunicorn, all
on free loopback ports, always stopped at the end.

::

    with Stack(tmp_path, bots={700000001: "alerts", 700000002: None}) as stack:
        stack.send({"bot": "alerts", "chat_id": 1, "text": "hi"})     # POST /send
        stack.request("telegram.out.700000002.getMe", {})             # NATS request/reply
        stack.read_stream()                                           # what JetStream holds

``Stack(...)`` starts nats-server (JetStream; a user and password unless ``nats_auth=False``)
and the emulator with the bots (fake, well-formed tokens) and ``chats`` registered for every
bot, then one gateway (``gateway=False``: none). ``add_gateway(...)`` starts one more with its
own state directory: other workers, a subset of the bots, a routes file, settings of its own.
``stack.gateway`` is the last one started.

Gateway settings, weakest first: the stack's (short poll timeout and health probe interval),
``pacing=False`` (``GATEWAY_SEND_PACING=false``), the stack's ``env``, ``add_gateway``'s.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from botapi_emulator.generator import GENERATED_KINDS
from harness.emulator import EmulatorProcess
from harness.gateway import GatewayProcess
from harness.nats import NatsServer
from harness.procs import wait_until
from harness.tokens import fake_token

STREAM = "TELEGRAM"
NATS_USER = "gateway"
#: GATEWAY_HOST_NAME of the stack's gateways (they share one Bot API server: one host)
HOST = "test-host"


class Stack:
    """nats-server + emulator + gateway(s); a context manager that always stops all of them."""

    def __init__(
        self,
        root: Path,
        bots: Mapping[int, str | None] | Iterable[int],
        *,
        chats: Iterable[Mapping[str, Any]] = (),
        gateway: bool = True,
        workers: int = 2,
        pacing: bool = True,
        env: Mapping[str, str] | None = None,
        nats_auth: bool = True,
        emulator_args: Iterable[str] = (),
        emulator_verbosity: int = 3,
        nats: NatsServer | None = None,
    ) -> None:
        """``bots``: bot ids, or bot id -> the name the gateway knows it by (None: no name).
        ``chats``: emulator chat specs (``{"id": …, "type": …}``) registered for every bot.
        ``nats``: a nats-server the caller started and stops (a cluster's node; no
        authentication), instead of the stack's own."""
        self.root = root
        names = dict(bots) if isinstance(bots, Mapping) else dict.fromkeys(bots)
        self.names: dict[int, str | None] = names
        self.tokens = {bot_id: fake_token(bot_id) for bot_id in names}
        self.chats = [dict(chat) for chat in chats]
        self.with_gateway = gateway
        self.workers = workers
        self.pacing = pacing
        self.env = dict(env or {})
        self.api_token = secrets.token_urlsafe(24)
        self.own_nats = nats is None
        self.nats_password = secrets.token_urlsafe(18) if nats_auth and nats is None else None
        users = {NATS_USER: self.nats_password} if self.nats_password else None
        self.nats = NatsServer(root / "nats", users=users) if nats is None else nats
        self.emulator = EmulatorProcess(
            root / "emulator",
            bots=list(self.tokens.values()),
            extra_args=emulator_args,
            verbosity=emulator_verbosity,
        )
        self.gateways: list[GatewayProcess] = []
        self._requester: Requester | None = None

    # ---- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        try:
            if self.own_nats:
                self.nats.start()
            self.emulator.start()
            if self.chats:
                for bot_id in self.tokens:
                    self.emulator.add_chats(bot_id, self.chats)
            if self.with_gateway:
                self.add_gateway()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._requester is not None:
                self._requester.close()
                self._requester = None
        finally:
            for gateway in self.gateways:
                gateway.stop()
            self.emulator.stop()
            if self.own_nats:
                self.nats.stop()

    def settings(self, bots: Iterable[int] | None = None, **env: str) -> dict[str, str]:
        """The gateway's environment for ``bots`` (default: all) with ``env`` on top."""
        tokens = []
        for bot_id in self.tokens if bots is None else bots:
            name = self.names[bot_id]
            tokens.append(f"{name}={self.tokens[bot_id]}" if name else self.tokens[bot_id])
        settings = {
            "TELEGRAM_API_URL": self.emulator.api_url,
            "TELEGRAM_BOT_TOKENS": ",".join(tokens),
            "NATS_URL": self.nats.url,
            "GATEWAY_API_TOKEN": self.api_token,
            "GATEWAY_POLL_TIMEOUT": "2",
            "GATEWAY_HEALTH_PROBE_INTERVAL": "1",
            "GATEWAY_HOST_NAME": HOST,
        }
        if self.nats_password:
            settings |= {"NATS_USER": NATS_USER, "NATS_PASSWORD": self.nats_password}
        if not self.pacing:
            settings["GATEWAY_SEND_PACING"] = "false"
        return settings | self.env | env

    def add_gateway(
        self,
        workers: int | None = None,
        bots: Iterable[int] | None = None,
        routes: str | None = None,
        start: bool = True,
        **env: str,
    ) -> GatewayProcess:
        """One more gateway (its own state directory and port); ``routes``: the routes file's
        text; ``start=False``: created, not started."""
        index = len(self.gateways)
        if routes is not None:
            path = self.root / f"routes-{index}.yml"
            path.write_text(routes)
            env = {"GATEWAY_ROUTES_FILE": str(path), **env}
        gateway = GatewayProcess(
            self.root / f"gateway-{index}",
            self.settings(bots, **env),
            self.workers if workers is None else workers,
        )
        self.gateways.append(gateway)
        if start:
            gateway.start(timeout=30)
        return gateway

    @property
    def gateway(self) -> GatewayProcess:
        """The gateway started last."""
        assert self.gateways, "no gateway in this stack: add_gateway() first"
        return self.gateways[-1]

    def restart_gateway(self) -> GatewayProcess:
        return self.gateway.restart()

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def bot_ids(self) -> tuple[int, ...]:
        return tuple(self.tokens)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The update types the emulator's generator makes."""
        return tuple(GENERATED_KINDS)

    # ---- outbound: /send and NATS requests -------------------------------------------------
    def send(
        self,
        body: Any,
        *,
        key: str | None = None,
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> tuple[int, Any, dict[str, str]]:
        """``POST /send`` with the API token (``token=None``: no Authorization header)."""
        extra = dict(headers or {})
        if token == "default":
            token = self.api_token
        if token is not None:
            extra["Authorization"] = f"Bearer {token}"
        if key is not None:
            extra["Idempotency-Key"] = key
        return self.gateway.request("POST", "/send", body, headers=extra, timeout=timeout)

    def send_raw(
        self, data: bytes, content_type: str | None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """``POST /send`` with exactly these bytes and Content-Type."""
        request = urllib.request.Request(self.url + "/send", data=data, method="POST")
        request.add_header("Authorization", f"Bearer {self.api_token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        return http_call(request)

    @property
    def requester(self) -> Requester:
        """One NATS connection for the stack's requests (opened on first use)."""
        if self._requester is None:
            self._requester = Requester(self.nats.url, self.nats_password)
        return self._requester

    def request(
        self,
        subject: str,
        payload: Any,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """A NATS request; the reply parsed as JSON."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        reply = self.requester.request(subject, data, headers, timeout)
        return dict(json.loads(reply))

    def sent(self, chat_id: int | None = None, bot_id: int | None = None) -> list[dict[str, Any]]:
        """What the emulator received for a chat (default bot: the stack's first)."""
        return self.emulator.sent(self.bot_ids[0] if bot_id is None else bot_id, chat_id=chat_id)

    def sent_texts(self, chat_id: int, bot_id: int | None = None) -> list[str]:
        return [r["result"]["text"] for r in self.sent(chat_id, bot_id) if "text" in r["result"]]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (aggregated over workers) matching ``labels``."""
        status, text = self.gateway.get("/metrics")
        assert status == 200
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            sample, _, label_text = head.partition("{")
            if sample != name:
                continue
            pairs = dict(
                part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part
            )
            if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
                total += float(value)
        return total

    # ---- inbound: what the emulator served, what JetStream holds ---------------------------
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
        """The poller record the bot's owner keeps in its lease (state, pid, worker, offset,
        ...), read from the Key-Value bucket TELEGRAM_OWNERS; {} when nobody owns the bot."""
        del gateway  # every gateway sharing this NATS writes to the same bucket
        return asyncio.run(_lease(self.nats.url, self.nats_password, bot_id))

    def leases(self) -> dict[int, dict[str, Any]]:
        """Every bot's lease record (bot id -> the owner's record) in TELEGRAM_OWNERS."""
        return asyncio.run(_leases(self.nats.url, self.nats_password))

    def kv_keys(self, bucket: str) -> dict[str, int]:
        """Every key of a Key-Value bucket with its revision ({} when the bucket is empty)."""
        return asyncio.run(_kv_keys(self.nats.url, self.nats_password, bucket))

    def subscribe(self, subject: str) -> Subscriber:
        return Subscriber(self.nats.url, self.nats_password, subject)

    def stream_count(self) -> int:
        return asyncio.run(_stream_count(self.nats.url, self.nats_password))

    def read_stream(self) -> list[Stored]:
        return asyncio.run(_read_stream(self.nats.url, self.nats_password))

    def expected_facts(self, update: dict[str, Any]) -> tuple[str, int | None, int | None]:
        """(update type, chat id, user id) of an emulator-generated update, worked out here
        independently of the gateway's code."""
        kind = next(key for key in update if key in self.kinds)
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
            ids, _, host = msg_id.partition("@")
            bot_id, update_id = (int(part) for part in ids.split(":"))
            assert host == HOST, msg_id
            original = served[bot_id][update_id]
            assert message.update == original
            kind, chat_id, user_id = self.expected_facts(original)
            assert message.subject == f"telegram.in.{bot_id}.{kind}"
            expected = {
                "Nats-Msg-Id": f"{bot_id}:{update_id}@{HOST}",
                "Telegram-Bot-Id": str(bot_id),
                "Telegram-Update-Id": str(update_id),
                "Telegram-Update-Type": kind,
                "Telegram-Bot-Api-Server": HOST,
            }
            if chat_id is not None:
                expected["Telegram-Chat-Id"] = str(chat_id)
            if user_id is not None:
                expected["Telegram-User-Id"] = str(user_id)
            assert message.headers == expected
        missing = {f"{b}:{u}@{HOST}" for b in bot_ids for u in served[b]} - seen
        assert not missing, f"{len(missing)} update(s) lost, e.g. {sorted(missing)[:3]}"
        assert len(stored) == sum(len(s) for s in served.values())

    # ---- logs ------------------------------------------------------------------------------
    @staticmethod
    def timed_healthz(gateway: GatewayProcess) -> tuple[int, float]:
        started = time.perf_counter()
        status, _ = gateway.get("/healthz", timeout=5)
        return status, time.perf_counter() - started

    def secrets(self) -> list[str]:
        found = [t.split(":", 1)[1] for t in self.tokens.values()] + [self.api_token]
        return found + ([self.nats_password] if self.nats_password else [])

    def assert_no_secrets_logged(self, gateway: GatewayProcess) -> None:
        log = gateway.log()
        assert "DEBUG" in log, "the gateway should log at DEBUG in these tests"
        for secret in self.secrets():
            assert secret not in log, "a secret appears in the gateway's log"


# ---- NATS and HTTP clients for the tests ---------------------------------------------------
@dataclass(frozen=True)
class Stored:
    """One message of the stream (or of a core subscription) as a consumer sees it."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes
    at: float = 0.0  # when the stream stored it (Unix time; 0 for a core subscription)

    @property
    def update(self) -> dict[str, Any]:
        return dict(json.loads(self.data))


async def _connect(url: str, password: str | None) -> nats.NATS:
    if password is None:
        return await nats.connect(url, connect_timeout=3)
    return await nats.connect(url, user=NATS_USER, password=password, connect_timeout=3)


async def _lease(url: str, password: str | None, bot_id: int) -> dict[str, Any]:
    nc = await _connect(url, password)
    try:
        kv = await nc.jetstream().key_value("TELEGRAM_OWNERS")
        try:
            entry = await kv.get(f"bots.{bot_id}")
        except nats.js.errors.KeyNotFoundError:
            return {}
        return dict(json.loads(entry.value or b"{}"))
    except nats.js.errors.BucketNotFoundError:
        return {}
    finally:
        await nc.close()


async def _leases(url: str, password: str | None) -> dict[int, dict[str, Any]]:
    nc = await _connect(url, password)
    try:
        kv = await nc.jetstream().key_value("TELEGRAM_OWNERS")
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return {}
        records: dict[int, dict[str, Any]] = {}
        for key in keys:
            if key.startswith("bots."):
                try:
                    entry = await kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    continue
                records[int(key.split(".", 1)[1])] = dict(json.loads(entry.value or b"{}"))
        return records
    finally:
        await nc.close()


async def _kv_keys(url: str, password: str | None, bucket: str) -> dict[str, int]:
    nc = await _connect(url, password)
    try:
        kv = await nc.jetstream().key_value(bucket)
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return {}
        return {key: (await kv.get(key)).revision or 0 for key in keys}
    finally:
        await nc.close()


async def _stream_count(url: str, password: str | None) -> int:
    nc = await _connect(url, password)
    try:
        info = await nc.jetstream().stream_info(STREAM)
        return int(info.state.messages)
    finally:
        await nc.close()


async def _read_stream(url: str, password: str | None) -> list[Stored]:
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
                    at=msg.metadata.timestamp.timestamp(),
                )
            )
        await sub.unsubscribe()
        return stored
    finally:
        await nc.close()


class Subscriber:
    """Core NATS subscription in a background thread, collecting what arrives."""

    def __init__(self, url: str, password: str | None, subject: str) -> None:
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


class Requester:
    """A NATS connection on its own asyncio loop in a thread, for synchronous tests."""

    def __init__(self, url: str, password: str | None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc: Any = self.run(_connect(url, password), 10)

    def run(self, coro: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(
        self, subject: str, data: bytes, headers: dict[str, str] | None, timeout: float
    ) -> bytes:
        msg = self.run(
            self.nc.request(subject, data, timeout=timeout, headers=headers), timeout + 5
        )
        return bytes(msg.data)

    def close(self) -> None:
        try:
            self.run(self.nc.close(), 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def http_call(request: urllib.request.Request, timeout: float = 60) -> tuple[int, Any, dict]:
    """Send ``request``: (status, body parsed as JSON or text, headers), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status, headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw.decode(errors="replace"), headers
