"""Flood control as Telegram enforces it: per bot, per private chat, per group."""

from __future__ import annotations

import http.client
import json
import time

import pytest

from botapi_emulator.chats import ChatState
from botapi_emulator.limits import FloodState, Limits
from harness.emulator import BotHandle

pytestmark = pytest.mark.integration


class KeepAliveClient:
    """sendMessage over one keep-alive connection (fast enough to hit the windows)."""

    def __init__(self, bot: BotHandle) -> None:
        self.bot = bot
        self.conn = http.client.HTTPConnection("127.0.0.1", bot.emu.port, timeout=10)

    def send(self, chat_id: int, text: str = "x", method: str = "sendMessage", **extra: object):
        body = json.dumps({"chat_id": chat_id, "text": text, **extra})
        self.conn.request(
            "POST",
            f"/bot{self.bot.token}/{method}",
            body=body,
            headers={"Content-Type": "application/json"},
        )
        response = self.conn.getresponse()
        return response.status, json.loads(response.read()), dict(response.getheaders())

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def client(bot: BotHandle):
    keep_alive = KeepAliveClient(bot)
    yield keep_alive
    keep_alive.close()


def assert_flood(status: int, body: dict, headers: dict, low: int, high: int) -> int:
    assert status == 429
    retry_after = body["parameters"]["retry_after"]
    assert body == {
        "ok": False,
        "error_code": 429,
        "description": f"Too Many Requests: retry after {retry_after}",
        "parameters": {"retry_after": retry_after},
    }
    assert headers["Retry-After"] == str(retry_after)
    assert low <= retry_after <= high
    return retry_after


def test_private_chat_one_per_second(bot: BotHandle, client: KeepAliveClient) -> None:
    bot.chat(11)
    before = bot.emu.stats()["flood_429"]
    assert client.send(11)[0] == 200
    assert_flood(*client.send(11), low=1, high=1)
    assert len(bot.sent()) == 1
    assert bot.emu.stats()["flood_429"] == before + 1
    assert bot.emu.stats()["flood_429_by_limit"] == {"private_chat": 1}
    time.sleep(1.0)  # not synchronisation: the one-second window has to pass
    assert client.send(11)[0] == 200
    assert client.send(11)[0] == 429


def test_private_chat_burst_is_an_option(bot: BotHandle, client: KeepAliveClient) -> None:
    bot.emu.set_limits(private_chat_burst=3)
    bot.chat(13)
    assert [client.send(13)[0] for _ in range(4)] == [200, 200, 200, 429]


def test_group_twenty_per_minute(bot: BotHandle, client: KeepAliveClient) -> None:
    bot.chat(-1001000000001, "supergroup")
    assert all(client.send(-1001000000001)[0] == 200 for _ in range(20))
    assert_flood(*client.send(-1001000000001), low=50, high=60)
    assert bot.emu.stats()["flood_429_by_limit"] == {"group": 1}
    bot.chat(-1001000000002, "supergroup")
    assert client.send(-1001000000002)[0] == 200
    assert len(bot.sent(chat_id=-1001000000001)) == 20


def test_thirty_per_second_per_bot(bot: BotHandle, client: KeepAliveClient) -> None:
    bot.emu.add_chats(bot.id, [{"id": 100 + i} for i in range(31)])
    started = time.monotonic()
    statuses = [client.send(100 + i)[0] for i in range(30)]
    assert time.monotonic() - started < 0.9, "the client was too slow to fill the window"
    assert statuses == [200] * 30
    assert_flood(*client.send(130), low=1, high=1)
    assert bot.emu.stats()["flood_429_by_limit"] == {"bot": 1}
    assert len(bot.sent()) == 30
    time.sleep(1.0)  # not synchronisation: the one-second window has to pass
    assert client.send(130)[0] == 200


def test_limits_are_configurable(bot: BotHandle, client: KeepAliveClient) -> None:
    limits = bot.emu.set_limits(per_bot_per_second=5, private_chat_burst=10)
    assert limits["per_bot_per_second"] == 5 and limits["enabled"] is True
    bot.emu.add_chats(bot.id, [{"id": 200 + i} for i in range(6)])
    assert [client.send(200 + i)[0] for i in range(6)] == [200] * 5 + [429]
    bot.emu.set_limits(enabled=False)
    bot.chat(300)
    assert all(client.send(300)[0] == 200 for _ in range(50))
    assert bot.emu.limits()["enabled"] is False
    assert bot.emu.control("POST", "/limits", {"bogus": 1})["ok"] is False
    bot.emu.set_limits(enabled=True, per_bot_per_second=30, group_per_minute=2)
    bot.chat(-9, "group")
    assert [client.send(-9)[0] for _ in range(3)] == [200, 200, 429]


def test_which_methods_are_limited(bot: BotHandle, client: KeepAliveClient) -> None:
    bot.emu.set_limits(private_chat_burst=3)
    bot.chat(12)
    message_id = client.send(12)[1]["result"]["message_id"]
    for _ in range(5):
        assert client.send(12, method="sendChatAction", action="typing")[0] == 200
    assert client.send(12, method="sendPhoto", photo="https://example.org/p.jpg")[0] == 200
    assert client.send(12, method="editMessageText", message_id=message_id, text="e")[0] == 200
    assert client.send(12)[0] == 429


def test_reset_restores_default_limits(bot: BotHandle) -> None:
    bot.emu.set_limits(enabled=False, per_bot_per_second=1)
    bot.emu.reset()
    assert bot.emu.limits() == {
        "enabled": True,
        "per_bot_per_second": 30,
        "private_chat_per_second": 1,
        "private_chat_burst": 1,
        "group_per_minute": 20,
        "tolerance": 0.0,
    }


def test_windows_are_strict_unless_a_tolerance_is_set() -> None:
    """At the moment a request arrives, with no tolerance: one second and 60 s exactly."""
    private, group = ChatState(21, "private"), ChatState(-22, "group")
    for chat, window, limit in ((private, 1.0, 1), (group, 60.0, 20)):
        strict = FloodState()
        for _ in range(limit):
            assert strict.wait(Limits(), chat, 100.0) == 0
            strict.commit(Limits(), chat, 100.0)
        assert strict.wait(Limits(), chat, 100.0 + window - 0.001) > 0
        assert strict.wait(Limits(), chat, 100.0 + window) == 0
        lenient = Limits(tolerance=0.05)
        assert strict.wait(lenient, chat, 100.0 + window - 0.04) == 0
    bot_wide = FloodState()
    chats = [ChatState(100 + i, "private") for i in range(31)]
    for i in range(30):
        bot_wide.commit(Limits(), chats[i], 100.0 + i * 0.03)
    assert bot_wide.wait(Limits(), chats[30], 100.999) > 0
    assert bot_wide.wait(Limits(), chats[30], 101.0) == 0


def test_tolerance_is_checked(bot: BotHandle) -> None:
    assert bot.emu.control("POST", "/limits", {"tolerance": 1})["ok"] is False
    assert bot.emu.set_limits(tolerance=0.05)["tolerance"] == 0.05
