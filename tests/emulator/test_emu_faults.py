"""Injected faults (error, delay, drop, down) and reset."""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from harness.emulator import BotHandle, private_message, raw_request
from harness.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def test_error_fault_for_some_methods_and_a_count(bot: BotHandle) -> None:
    bot.chat(1)
    bot.emu.fault("error", methods=["sendMessage"], count=2, status=502)
    for _ in range(2):
        assert bot.call("sendMessage", chat_id=1, text="x")[:2] == (
            502,
            {"ok": False, "error_code": 502, "description": "Bad Gateway"},
        )
        assert bot.call("getMe")[0] == 200
    assert bot.call("sendMessage", chat_id=1, text="x")[0] == 200
    assert bot.emu.faults() == []
    assert bot.emu.stats()["responses"]["502"] == 2


def test_error_fault_with_custom_description_and_429(bot: BotHandle) -> None:
    bot.emu.fault("error", status=500, description="Internal Server Error: boom", count=1)
    assert bot.call("getMe")[1]["description"] == "Internal Server Error: boom"
    bot.emu.fault("error", status=429, retry_after=7, count=1)
    status, body, headers = bot.call("getMe")
    assert status == 429 and body["parameters"] == {"retry_after": 7}
    assert body["description"] == "Too Many Requests: retry after 7"
    assert headers["Retry-After"] == "7"
    assert bot.emu.stats()["flood_429"] == 1


def test_fault_for_one_bot_only(bot: BotHandle) -> None:
    other = BotHandle.register(bot.emu)
    bot.emu.fault("error", bot_id=other.id, status=503)
    assert bot.call("getMe")[0] == 200
    assert other.call("getMe")[0] == 503
    assert bot.emu.clear_faults() == {"cleared": 1}
    assert other.call("getMe")[0] == 200


def test_fault_duration(bot: BotHandle) -> None:
    started = time.monotonic()
    bot.emu.fault("error", duration=0.3)
    assert bot.call("getMe")[0] == 500
    wait_until(lambda: bot.call("getMe")[0] == 200, 5.0, "the fault to expire")
    assert time.monotonic() - started >= 0.3
    assert bot.emu.faults() == []


def test_delay_fault(bot: BotHandle) -> None:
    bot.emu.fault("delay", delay=0.5, methods=["getMe"], count=1)
    started = time.monotonic()
    assert bot.call("getMe")[0] == 200
    assert time.monotonic() - started >= 0.45
    started = time.monotonic()
    assert bot.call("getMe")[0] == 200
    assert time.monotonic() - started < 0.4


def test_drop_fault_closes_without_answering(bot: BotHandle) -> None:
    bot.emu.fault("drop", methods=["getupdates"], count=1)
    conn = http.client.HTTPConnection("127.0.0.1", bot.emu.port, timeout=5)
    conn.request("GET", f"/bot{bot.token}/getUpdates")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()
    conn.close()
    assert bot.call("getUpdates")[0] == 200


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_down_fault_refuses_connections_then_recovers(bot: BotHandle) -> None:
    bot.inject([private_message(3, "survives")])
    started = time.monotonic()
    bot.emu.fault("down", duration=0.6)
    assert refused(bot.emu.port)  # applied before the control API answered
    assert bot.emu.stats()["pending"][str(bot.id)] == 1
    wait_until(lambda: not refused(bot.emu.port), 5.0, "the API listener to come back")
    assert time.monotonic() - started >= 0.6
    assert bot.ok("getUpdates")[0]["message"]["text"] == "survives"


def test_down_fault_from_the_api_port_and_clearing_it(bot: BotHandle) -> None:
    status, _, _ = raw_request(
        bot.emu.port,
        "POST",
        "/_emulator/faults",
        b'{"mode": "down", "duration": 30}',
        {"Content-Type": "application/json"},
    )
    assert status == 200
    assert refused(bot.emu.port)
    bot.emu.clear_faults()
    assert bot.call("getMe")[0] == 200


def test_down_fault_closes_open_connections(bot: BotHandle) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", bot.emu.port, timeout=5)
    conn.request("GET", f"/bot{bot.token}/getMe")
    conn.getresponse().read()
    bot.emu.fault("down", duration=0.5)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, OSError)):
        conn.request("GET", f"/bot{bot.token}/getMe")
        conn.getresponse()
    conn.close()
    wait_until(lambda: bot.call("getMe")[0] == 200, 5.0, "the API listener to come back")


def test_invalid_fault(bot: BotHandle) -> None:
    assert bot.emu.control("POST", "/faults", {"mode": "explode"})["ok"] is False
    assert bot.emu.control("POST", "/faults", {"mode": "error", "methods": "x"})["ok"] is False


def test_reset(bot: BotHandle) -> None:
    bot.chat(8)
    bot.ok("sendMessage", chat_id=8, text="x")
    bot.inject([private_message(8, "u")])
    bot.ok("setWebhook", url="https://example.org/h")
    bot.emu.fault("error", methods=["getChat"])
    result = bot.emu.reset()
    assert result["bots"][0]["id"] == bot.id
    assert bot.sent() == [] and bot.emu.faults() == [] and bot.emu.chats(bot.id) == []
    assert bot.emu.updates(bot.id)["count"] == 0
    stats = bot.emu.stats()
    assert stats["calls"] == {} and stats["pending"][str(bot.id)] == 0
    assert bot.ok("getWebhookInfo")["url"] == ""
    bot.emu.reset(bots=True)
    assert bot.emu.bots() == [] and bot.call("getMe")[0] == 401


def test_counters(bot: BotHandle) -> None:
    bot.call("getMe")
    bot.call("getme")
    bot.call("sendMessage", text="x")
    bot.call("unknownMethod")
    stats = bot.emu.stats()
    assert stats["calls"]["getMe"] == 2 and stats["calls"]["sendMessage"] == 1
    assert stats["calls"]["unknownMethod"] == 1
    assert stats["responses"] == {"200": 2, "400": 1, "404": 1}
