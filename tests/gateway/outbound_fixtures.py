"""Helpers for the outbound tests (``/send``, ``telegram.out.*``, pacing, OpenAPI).

`outbound_stack` sets up the harness's one stack builder for them: nats-server, the
Bot API emulator (enforcing Telegram's limits) with registered chats, and the gateway under
gunicorn + gevent. Test modules wrap it in a module-scoped fixture (one stack per module keeps
the suite fast)::

    @pytest.fixture(scope="module")
    def out(tmp_path_factory):
        with outbound_stack(tmp_path_factory.mktemp("send")) as stack:
            yield stack

Chats registered in the emulator for :data:`BOT`: :data:`PRIVATE` users, :data:`GROUP`,
:data:`SUPERGROUP`, :data:`CHANNEL` (``@outchannel``), :data:`BLOCKED` (403) and
:data:`OLD_GROUP` (migrated to :data:`NEW_SUPERGROUP`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from harness.stack import Stack

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


def outbound_stack(root: Path, workers: int = 2, pacing: bool = True, **env: str) -> Stack:
    """The harness's :class:`~harness.stack.Stack` as the outbound tests use it: :data:`BOT`
    (named :data:`BOT_NAME`) and :data:`OTHER_BOT` with :func:`chats` registered, one gateway
    with ``workers`` workers and the settings in ``env``."""
    return Stack(
        root,
        {BOT: BOT_NAME, OTHER_BOT: None},
        chats=chats(),
        workers=workers,
        pacing=pacing,
        env={"GATEWAY_LOG_LEVEL": "INFO", **env},
    )


# ---- the burst: many chats at once through /send and NATS ------------------------------------
class Burst:
    """Messages to many chats at once: one lane per chat sends its messages one after the other
    (a caller that needs order waits for each answer), alternating ``POST /send`` and NATS;
    all lanes start together. ``run`` returns the wall time from the first request to the
    last answer."""

    def __init__(self, stack: Stack, plan: dict[int, int], bot_id: int = BOT) -> None:
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
