"""Helpers for the outbound tests (``/send``, ``telegram.out.*``, pacing, OpenAPI).

:class:`OutboundStack` runs the real processes: nats-server, the Bot API emulator (enforcing
Telegram's limits) with registered chats, and the gateway under gunicorn + gevent. Test
modules wrap it in a module-scoped fixture (one stack per module keeps the suite fast)::

    @pytest.fixture(scope="module")
    def out(tmp_path_factory):
        with OutboundStack(tmp_path_factory.mktemp("send")) as stack:
            yield stack

Chats registered in the emulator for :data:`BOT`: :data:`PRIVATE` users, :data:`GROUP`,
:data:`SUPERGROUP`, :data:`CHANNEL` (``@outchannel``), :data:`BLOCKED` (403) and
:data:`OLD_GROUP` (migrated to :data:`NEW_SUPERGROUP`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats

from harness.emulator import EmulatorProcess
from harness.gateway import GatewayProcess
from harness.nats import NatsServer
from harness.tokens import fake_token

BOT = 810000001
OTHER_BOT = 810000002
BOT_NAME = "alerts"
PRIVATE = tuple(range(5100001, 5100001 + 120))  # users with a private chat
GROUP = -4100001
GROUPS = (-4100001, -4100002, -4100003)
SUPERGROUP = -1001500000001
CHANNEL = -1001500000002
CHANNEL_NAME = "@outchannel"
BLOCKED = 5199999
OLD_GROUP = -4199999
NEW_SUPERGROUP = -1001599999999
NATS_USER = "gateway"


def chats() -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = [{"id": user, "type": "private"} for user in PRIVATE]
    specs += [{"id": group, "type": "group", "title": f"group {group}"} for group in GROUPS]
    specs += [
        {"id": SUPERGROUP, "type": "supergroup", "title": "super"},
        {"id": CHANNEL, "type": "channel", "title": "channel", "username": CHANNEL_NAME[1:]},
        {"id": BLOCKED, "type": "private", "blocked": True},
        {"id": NEW_SUPERGROUP, "type": "supergroup", "title": "migrated"},
        {"id": OLD_GROUP, "type": "group", "migrate_to_chat_id": NEW_SUPERGROUP},
    ]
    return specs


class OutboundStack:
    """nats-server + emulator + gateway; a context manager that always stops all three."""

    def __init__(self, root: Path, workers: int = 2, **env: str) -> None:
        self.root = root
        self.workers = workers
        self.env = env
        self.tokens = {BOT: fake_token(BOT), OTHER_BOT: fake_token(OTHER_BOT)}
        self.api_token = secrets.token_urlsafe(24)
        self.nats_password = secrets.token_urlsafe(18)
        self.nats = NatsServer(root / "nats", users={NATS_USER: self.nats_password})
        self.emulator = EmulatorProcess(root / "emulator", bots=list(self.tokens.values()))
        self.gateway: GatewayProcess | None = None
        self._requester: Requester | None = None

    # ---- life cycle ------------------------------------------------------------------------
    def __enter__(self) -> OutboundStack:
        try:
            self.nats.start()
            self.emulator.start()
            for bot_id in self.tokens:
                self.emulator.add_chats(bot_id, chats())
            self.start_gateway()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._requester is not None:
            self._requester.close()
            self._requester = None
        if self.gateway is not None:
            self.gateway.stop()
        self.emulator.stop()
        self.nats.stop()

    def settings(self) -> dict[str, str]:
        return {
            "TELEGRAM_API_URL": self.emulator.api_url,
            "TELEGRAM_BOT_TOKENS": f"{BOT_NAME}={self.tokens[BOT]},{self.tokens[OTHER_BOT]}",
            "NATS_URL": self.nats.url,
            "NATS_USER": NATS_USER,
            "NATS_PASSWORD": self.nats_password,
            "GATEWAY_API_TOKEN": self.api_token,
            "GATEWAY_LOG_LEVEL": "INFO",
            "GATEWAY_POLL_TIMEOUT": "2",
            "GATEWAY_HEALTH_PROBE_INTERVAL": "1",
            **self.env,
        }

    def start_gateway(self) -> GatewayProcess:
        if self.gateway is None:
            self.gateway = GatewayProcess(self.root / "gateway", self.settings(), self.workers)
        self.gateway.start(timeout=30)
        return self.gateway

    def restart_gateway(self) -> GatewayProcess:
        assert self.gateway is not None
        self.gateway.stop()
        return self.start_gateway()

    # ---- calls -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

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
        assert self.gateway is not None
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
        if self._requester is None:
            self._requester = Requester(self.nats.url, NATS_USER, self.nats_password)
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

    def sent(self, chat_id: int | None = None, bot_id: int = BOT) -> list[dict[str, Any]]:
        return self.emulator.sent(bot_id, chat_id=chat_id)

    def sent_texts(self, chat_id: int, bot_id: int = BOT) -> list[str]:
        return [r["result"]["text"] for r in self.sent(chat_id, bot_id) if "text" in r["result"]]

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (aggregated over workers) matching ``labels``."""
        assert self.gateway is not None
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


def http_call(request: urllib.request.Request, timeout: float = 60) -> tuple[int, Any, dict]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw, status, headers = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, headers = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(raw), headers
    except ValueError:
        return status, raw.decode(errors="replace"), headers


class Requester:
    """A NATS connection on its own asyncio loop in a thread, for synchronous tests."""

    def __init__(self, url: str, user: str, password: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.nc: Any = self.run(nats.connect(url, user=user, password=password), 10)

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


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def stacked(root: Path, **env: str) -> Iterator[OutboundStack]:
    """Generator for a module-scoped fixture."""
    with OutboundStack(root, **env) as stack:
        yield stack


# ---- the burst: many chats at once through /send and NATS ------------------------------------
class Burst:
    """Messages to many chats at once: one lane per chat sends its messages one after the other
    (a caller that needs order waits for each answer), alternating ``POST /send`` and NATS;
    all lanes start together. ``run`` returns the wall time from the first request to the
    last answer."""

    def __init__(self, stack: OutboundStack, plan: dict[int, int], bot_id: int = BOT) -> None:
        self.stack = stack
        self.plan = plan  # chat id -> number of messages
        self.bot_id = bot_id
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.plan.values())

    @staticmethod
    def text(chat_id: int, index: int) -> str:
        return f"burst {chat_id} #{index:03d}"

    def _lane(self, chat_id: int, count: int, start: threading.Event) -> None:
        start.wait()
        for index in range(count):
            text = self.text(chat_id, index)
            began = time.perf_counter()
            try:
                if (chat_id + index) % 2:
                    status, answer, _ = self.stack.send(
                        {"bot": self.bot_id, "chat_id": chat_id, "text": text}, timeout=120
                    )
                    ok = status == 200
                else:
                    answer = self.stack.request(
                        f"telegram.out.{self.bot_id}.sendMessage",
                        {"chat_id": chat_id, "text": text},
                        timeout=120,
                    )
                    ok = bool(answer.get("ok"))
            except Exception as exc:  # reported, not raised: the other lanes go on
                ok, answer = False, {"exception": repr(exc)}
            with self._lock:
                self.latencies.append(time.perf_counter() - began)
                if not ok:
                    self.failures.append(f"{chat_id} #{index}: {answer}")

    def run(self) -> float:
        self.stack.requester  # connect before the clock starts  # noqa: B018
        start = threading.Event()
        lanes = [
            threading.Thread(target=self._lane, args=(chat_id, count, start), daemon=True)
            for chat_id, count in self.plan.items()
        ]
        for lane in lanes:
            lane.start()
        began = time.perf_counter()
        start.set()
        for lane in lanes:
            lane.join(600)
        return time.perf_counter() - began

    def check_delivery(self) -> list[str]:
        """Problems with what the emulator received: every message exactly once, in order per
        chat (empty list: all good)."""
        problems: list[str] = []
        for chat_id, count in self.plan.items():
            texts = [r["result"].get("text") for r in self.stack.sent(chat_id, self.bot_id)]
            expected = [self.text(chat_id, index) for index in range(count)]
            if texts != expected:
                problems.append(f"chat {chat_id}: got {texts[:4]}… ({len(texts)}), want {count}")
        return problems


def burst_plan(total: int = 1000, privates: int = 100, groups: int = 2, per_group: int = 10):
    """``total`` messages: ``per_group`` to each group (within Telegram's 20/min), the rest
    spread over ``privates`` private chats as evenly as possible."""
    plan: dict[int, int] = {group: per_group for group in GROUPS[:groups]}
    rest = total - groups * per_group
    for index, user in enumerate(PRIVATE[:privates]):
        plan[user] = rest // privates + (1 if index < rest % privates else 0)
    assert sum(plan.values()) == total
    return plan
