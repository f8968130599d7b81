"""State across restarts (SIGTERM and kill -9) and the SIGTERM answer to pending requests."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.emulator import BotHandle, EmulatorProcess, private_message
from harness.procs import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def own_emulator(tmp_path: Path):
    emu = EmulatorProcess(tmp_path).start()
    yield emu
    emu.stop()


def prepare(emu: EmulatorProcess) -> tuple[BotHandle, int]:
    bot = BotHandle.register(emu)
    bot.chat(77, "private", first_name="Keep")
    bot.chat(-4000000077, "group", migrate_to_chat_id=-1004000000077)
    bot.ok("sendMessage", chat_id=77, text="one")
    time.sleep(1.0)  # not synchronisation: Telegram's one message per second to a chat
    bot.ok("sendMessage", chat_id=77, text="two")
    first = bot.inject([private_message(77, f"p{i}", 10 + i) for i in range(5)])["first_update_id"]
    bot.emu.generate(bot.id, 3, kinds=["message"], unknown_field_ratio=1.0, seed=5)
    assert len(bot.ok("getUpdates", offset=first + 2, limit=1)) == 1
    bot.ok("getUpdates", allowed_updates=["message", "chat_member"], timeout=0, limit=1)
    return bot, first


def assert_state_survived(emu: EmulatorProcess, bot: BotHandle, first: int, before: dict) -> None:
    assert emu.bots()[0]["id"] == bot.id
    assert bot.ok("getMe")["id"] == bot.id
    updates = bot.ok("getUpdates")
    assert [u["update_id"] for u in updates] == list(range(first + 2, first + 8))
    assert updates[0]["message"]["text"] == "p2"
    assert all("x_future_field" in u for u in updates[3:])
    record = emu.updates(bot.id)
    assert record["updates"] == before["updates"]
    assert record["next_update_id"] == first + 8
    assert emu.stats()["confirmed_offset"][str(bot.id)] == first + 2
    assert bot.ok("getWebhookInfo")["allowed_updates"] == ["message", "chat_member"]
    assert bot.ok("sendMessage", chat_id=77, text="three")["message_id"] == 15
    body = bot.error("sendMessage", chat_id=-4000000077, text="x")[2]
    assert body["parameters"]["migrate_to_chat_id"] == -1004000000077
    assert bot.inject([private_message(77, "new")])["first_update_id"] == first + 8


def test_state_survives_a_clean_restart(own_emulator: EmulatorProcess) -> None:
    bot, first = prepare(own_emulator)
    before = own_emulator.updates(bot.id)
    assert own_emulator.stop() == 0
    own_emulator.start()
    assert_state_survived(own_emulator, bot, first, before)


def test_state_survives_kill_9(own_emulator: EmulatorProcess) -> None:
    bot, first = prepare(own_emulator)
    before = own_emulator.updates(bot.id)
    own_emulator.restart(kill=True)
    assert_state_survived(own_emulator, bot, first, before)
    own_emulator.restart(kill=True)
    assert own_emulator.updates(bot.id)["count"] == 9


def test_webhook_and_reset_survive(own_emulator: EmulatorProcess) -> None:
    bot = BotHandle.register(own_emulator)
    bot.ok("setWebhook", url="https://example.org/hook")
    own_emulator.restart(kill=True)
    assert bot.ok("getWebhookInfo")["url"] == "https://example.org/hook"
    assert bot.call("getUpdates")[0] == 409
    last = bot.inject([private_message(1, "x")])["last_update_id"]
    own_emulator.reset()
    own_emulator.restart()
    assert bot.ok("getWebhookInfo")["url"] == ""
    assert own_emulator.updates(bot.id)["count"] == 0
    assert bot.inject([private_message(1, "y")])["first_update_id"] == last + 1
    own_emulator.reset(bots=True)
    own_emulator.restart(kill=True)
    assert own_emulator.bots() == []


def test_journal_is_compacted_on_start(own_emulator: EmulatorProcess) -> None:
    bot = BotHandle.register(own_emulator)
    bot.chat(5)
    first = bot.inject([private_message(5, str(i)) for i in range(3)])["first_update_id"]
    for offset in range(first, first + 3):
        bot.ok("getUpdates", offset=offset, limit=1)
    own_emulator.set_limits(enabled=False)
    for _ in range(20):
        bot.ok("sendMessage", chat_id=5, text="x")
    journal = own_emulator.dir / "botapi-emulator.journal"
    lines_before = len(journal.read_bytes().splitlines())
    own_emulator.restart()
    lines_after = len(journal.read_bytes().splitlines())
    assert lines_after < lines_before
    assert lines_after == 1 + 1 + 3 + 1  # bot, chat, three updates, offset
    assert oct(journal.stat().st_mode & 0o777) == "0o600"


def test_sigterm_answers_pending_long_polls_with_restart(own_emulator: EmulatorProcess) -> None:
    bot = BotHandle.register(own_emulator)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(bot.call, "getUpdates", timeout=30)
    deadline = time.monotonic() + 5
    while not own_emulator.stats()["getupdates_active"][str(bot.id)]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    assert own_emulator.stop() == 0
    status, body, _ = future.result(10)
    pool.shutdown()
    assert (status, body) == (
        500,
        {"ok": False, "error_code": 500, "description": "Internal Server Error: restart"},
    )
    assert time.monotonic() - started < 5
    assert "FINISH ENGINE" in own_emulator.log_text()


def test_sigterm_answers_delayed_requests_too(own_emulator: EmulatorProcess) -> None:
    bot = BotHandle.register(own_emulator)
    own_emulator.fault("delay", delay=20, methods=["getMe"])
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(bot.call, "getMe")
    wait_until(lambda: own_emulator.stats()["calls"].get("getMe") == 1, 5.0, "the delayed getMe")
    assert own_emulator.stop() == 0
    status, body, _ = future.result(10)
    pool.shutdown()
    assert status == 500 and body["description"] == "Internal Server Error: restart"
