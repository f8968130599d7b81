"""getUpdates: offsets, limits, long polling, allowed_updates, conflicts, webhooks, injection."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from harness.emulator import BotHandle, EmulatorProcess, private_message, raw_request

pytestmark = pytest.mark.integration

OTHER_POLLER = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
WEBHOOK_ACTIVE = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)


def texts(updates: list[dict[str, Any]]) -> list[str]:
    return [u["message"]["text"] for u in updates]


def inject_texts(bot: BotHandle, count: int, chat_id: int = 900) -> dict[str, Any]:
    return bot.inject([private_message(chat_id, f"m{i}", i + 1) for i in range(count)])


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def poll_in_background(bot: BotHandle, **params: Any) -> Future:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(bot.call, "getUpdates", **params)
    pool.shutdown(wait=False)
    wait_for(lambda: bot.emu.stats()["getupdates_active"].get(str(bot.id)))
    return future


class TestQueue:
    def test_empty_queue_answers_at_once(self, bot: BotHandle) -> None:
        started = time.monotonic()
        assert bot.ok("getUpdates") == []
        assert bot.ok("getUpdates", timeout=0) == []
        assert time.monotonic() - started < 1

    def test_injected_updates_are_served_in_order_with_consecutive_ids(
        self, bot: BotHandle
    ) -> None:
        injected = inject_texts(bot, 5)
        assert injected["count"] == 5
        assert injected["last_update_id"] == injected["first_update_id"] + 4
        updates = bot.ok("getUpdates")
        assert [u["update_id"] for u in updates] == list(
            range(injected["first_update_id"], injected["last_update_id"] + 1)
        )
        assert texts(updates) == ["m0", "m1", "m2", "m3", "m4"]
        assert updates[0] == {
            "update_id": injected["first_update_id"],
            **private_message(900, "m0"),
        }

    def test_served_bytes_equal_the_control_record(self, bot: BotHandle) -> None:
        bot.emu.generate(bot.id, 30, kinds=["message", "callback_query"], unknown_field_ratio=0.5)
        status, _, raw = raw_request(bot.emu.port, "GET", f"/bot{bot.token}/getUpdates")
        assert status == 200
        served = json.loads(raw)["result"]
        record = bot.emu.updates(bot.id)
        assert record["count"] == 30 and record["pending"] == 30
        assert served == record["updates"]
        for update in record["updates"]:
            assert raw.count(json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode())

    def test_offset_confirms_and_forgets(self, bot: BotHandle) -> None:
        first = inject_texts(bot, 4)["first_update_id"]
        assert texts(bot.ok("getUpdates", offset=first + 2)) == ["m2", "m3"]
        assert texts(bot.ok("getUpdates", offset=first)) == ["m2", "m3"]
        assert bot.ok("getUpdates", offset=first + 4) == []
        stats = bot.emu.stats()
        assert stats["confirmed_offset"][str(bot.id)] == first + 4
        assert stats["pending"][str(bot.id)] == 0
        assert bot.emu.updates(bot.id)["count"] == 4

    def test_negative_offset(self, bot: BotHandle) -> None:
        inject_texts(bot, 6)
        assert texts(bot.ok("getUpdates", offset=-2)) == ["m4", "m5"]
        assert texts(bot.ok("getUpdates")) == ["m4", "m5"]

    def test_limit_default_and_clamping(self, bot: BotHandle) -> None:
        inject_texts(bot, 150)
        assert len(bot.ok("getUpdates", limit=3)) == 3
        assert len(bot.ok("getUpdates", limit=0)) == 1
        assert len(bot.ok("getUpdates", limit=1000)) == 100
        assert len(bot.ok("getUpdates")) == 100

    def test_update_ids_keep_increasing_after_reset(self, emu: EmulatorProcess) -> None:
        bot = BotHandle.register(emu)
        last = inject_texts(bot, 2)["last_update_id"]
        emu.reset()
        assert bot.inject([private_message(1, "again")])["first_update_id"] == last + 1
        emu.reset(bots=True)
        emu.register_bot(bot.token)
        assert bot.inject([private_message(1, "after")])["first_update_id"] == last + 2

    def test_injecting_fifty_thousand_is_fast(self, bot: BotHandle) -> None:
        started = time.monotonic()
        result = bot.emu.generate(bot.id, 50_000, kinds=["message", "callback_query"], seed=1)
        elapsed = time.monotonic() - started
        assert result["count"] == 50_000
        print(f"generated and injected 50,000 updates in {elapsed:.2f} s")
        assert elapsed < 4.0
        assert len(bot.ok("getUpdates")) == 100


class TestLongPolling:
    def test_timeout_returns_empty_after_waiting(self, bot: BotHandle) -> None:
        started = time.monotonic()
        assert bot.ok("getUpdates", timeout=0.6) == []
        assert 0.55 <= time.monotonic() - started < 3

    def test_returns_as_soon_as_an_update_arrives(self, bot: BotHandle) -> None:
        started = time.monotonic()
        future = poll_in_background(bot, timeout=20)
        bot.inject([private_message(77, "wake up")])
        status, body, _ = future.result(10)
        assert status == 200 and texts(body["result"]) == ["wake up"]
        assert time.monotonic() - started < 5

    def test_huge_timeout_is_accepted(self, bot: BotHandle) -> None:
        future = poll_in_background(bot, timeout=100000)
        bot.inject([private_message(1, "x")])
        assert future.result(10)[0] == 200

    def test_second_poller_terminates_the_first_with_409(self, bot: BotHandle) -> None:
        before = bot.emu.stats()["conflicts_409"]
        first = poll_in_background(bot, timeout=20)
        assert bot.ok("getUpdates", timeout=0) == []
        status, body, _ = first.result(10)
        assert (status, body) == (
            409,
            {"ok": False, "error_code": 409, "description": OTHER_POLLER},
        )
        assert bot.emu.stats()["conflicts_409"] == before + 1

    def test_active_flag(self, bot: BotHandle) -> None:
        assert bot.emu.stats()["getupdates_active"][str(bot.id)] is False
        future = poll_in_background(bot, timeout=0.5)
        assert future.result(10)[0] == 200
        assert bot.emu.stats()["getupdates_active"][str(bot.id)] is False


class TestAllowedUpdates:
    def member_update(self, chat_id: int) -> dict[str, Any]:
        user = {"id": chat_id, "is_bot": False, "first_name": "M"}
        return {
            "chat_member": {
                "chat": {"id": -100123, "title": "G", "type": "group"},
                "from": user,
                "date": 1,
                "old_chat_member": {"user": user, "status": "left"},
                "new_chat_member": {"user": user, "status": "member"},
            }
        }

    def test_default_excludes_chat_member(self, bot: BotHandle) -> None:
        bot.inject([self.member_update(1), private_message(2, "kept"), self.member_update(3)])
        assert [next(iter(set(u) - {"update_id"})) for u in bot.ok("getUpdates")] == ["message"]
        assert bot.emu.updates(bot.id)["count"] == 3

    def test_explicit_list_is_remembered(self, bot: BotHandle) -> None:
        bot.ok("getUpdates", allowed_updates=["chat_member"])
        bot.inject([private_message(2, "skipped"), self.member_update(1)])
        kinds = [next(iter(set(u) - {"update_id"})) for u in bot.ok("getUpdates")]
        assert kinds == ["chat_member"]
        bot.inject([self.member_update(4), private_message(5, "no")])
        kinds = [next(iter(set(u) - {"update_id"})) for u in bot.ok("getUpdates")]
        assert "message" not in kinds and "chat_member" in kinds
        info = bot.ok("getWebhookInfo")
        assert info["allowed_updates"] == ["chat_member"]

    def test_form_encoded_json_array_and_reset_with_empty_list(self, bot: BotHandle) -> None:
        path = f"/bot{bot.token}/getUpdates?allowed_updates=%5B%22chat_member%22%5D"
        assert raw_request(bot.emu.port, "GET", path)[0] == 200
        bot.ok("getUpdates", allowed_updates=[])
        bot.inject([self.member_update(1), private_message(2, "back to default")])
        assert texts(bot.ok("getUpdates")) == ["back to default"]

    def test_generated_kinds_and_unknown_fields(self, bot: BotHandle) -> None:
        kinds = ["message", "edited_message", "callback_query", "my_chat_member"]
        kinds += ["chat_member", "message_reaction", "channel_post"]
        bot.emu.generate(bot.id, 70, kinds=kinds, unknown_field_ratio=1.0, seed=7)
        updates = bot.ok("getUpdates", allowed_updates=kinds)
        assert len(updates) == 70
        seen = {next(k for k in u if k not in ("update_id", "x_future_field")) for u in updates}
        assert seen == set(kinds)
        assert all("x_future_field" in u for u in updates)
        messages = [u["message"] for u in updates if "message" in u]
        assert all("x_future_message_field" in m for m in messages)
        commands = [m for m in messages if m.get("entities")]
        assert all(m["entities"][0]["type"] == "bot_command" for m in commands)
        callback = next(u["callback_query"] for u in updates if "callback_query" in u)
        assert callback["message"]["from"]["id"] == bot.id and callback["data"]

    def test_generated_chats_become_known(self, bot: BotHandle) -> None:
        bot.emu.generate(bot.id, 20, chat_ids=[5005, -1005005005005], seed=3)
        chats = {c["id"]: c for c in bot.emu.chats(bot.id)}
        assert chats[5005]["type"] == "private" and chats[-1005005005005]["type"] == "supergroup"
        last = chats[5005]["last_message_id"]
        assert bot.ok("sendMessage", chat_id=5005, text="hi")["message_id"] == last + 1


class TestWebhook:
    def test_webhook_blocks_get_updates(self, bot: BotHandle) -> None:
        inject_texts(bot, 3)
        status, body, _ = bot.call("setWebhook", url="https://example.org/hook")
        assert status == 200 and body == {
            "ok": True,
            "result": True,
            "description": "Webhook was set",
        }
        assert bot.call("setWebhook", url="https://example.org/hook")[1]["description"] == (
            "Webhook is already set"
        )
        status, description, _ = bot.error("getUpdates")
        assert (status, description) == (409, WEBHOOK_ACTIVE)
        info = bot.ok("getWebhookInfo")
        assert info["url"] == "https://example.org/hook" and info["pending_update_count"] == 3
        body = bot.call("deleteWebhook", drop_pending_updates=True)[1]
        assert body["description"] == "Webhook was deleted"
        assert bot.call("deleteWebhook")[1]["description"] == "Webhook is already deleted"
        assert bot.ok("getUpdates") == []
        assert bot.ok("getWebhookInfo") == {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": 0,
        }

    def test_set_webhook_ends_a_long_poll(self, bot: BotHandle) -> None:
        future = poll_in_background(bot, timeout=20)
        bot.ok("setWebhook", url="http://127.0.0.1:9/hook")
        status, body, _ = future.result(10)
        assert (status, body["description"]) == (409, "Conflict: terminated by setWebhook request")

    def test_webhook_url_validation(self, bot: BotHandle) -> None:
        status, description, _ = bot.error("setWebhook", url="ftp://example.org/")
        assert status == 400 and "HTTPS URL must be provided" in description
        assert bot.error("setWebhook", url="https://x.org/", secret_token="bad token!")[0] == 400


def test_log_out_and_close(bot: BotHandle) -> None:
    assert bot.ok("close") is True
    assert bot.ok("logOut") is True
    assert bot.call("getMe")[0] == 401
    bot.emu.register_bot(bot.token)
    assert bot.call("getMe")[0] == 200


def test_concurrent_pollers_of_different_bots(emu: EmulatorProcess) -> None:
    bots = [BotHandle.register(emu) for _ in range(3)]
    results: dict[int, Any] = {}

    def poll(handle: BotHandle) -> None:
        results[handle.id] = handle.call("getUpdates", timeout=10)

    threads = [threading.Thread(target=poll, args=(b,)) for b in bots]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(emu.stats()["getupdates_active"].get(str(b.id)) for b in bots))
    for handle in bots:
        handle.inject([private_message(handle.id % 1000 + 1, f"for {handle.id}")])
    for thread in threads:
        thread.join(10)
    for handle in bots:
        status, body, _ = results[handle.id]
        assert status == 200 and texts(body["result"]) == [f"for {handle.id}"]


class TestClose:
    """close as telegram-bot-api does it (Client::on_cmd): the instance stops and keeps its
    queue; a pending getUpdates fails with "restart"; the next request launches it again;
    refused in the first 10 minutes after a launch that came 10 minutes or more after the
    server's own start."""

    def launched(self, bot: BotHandle) -> bool:
        bots = bot.emu.control("GET", "/bots")["result"]
        (entry,) = [b for b in bots if b["id"] == bot.id]
        return bool(entry["launched"])

    def test_close_stops_the_instance_and_keeps_its_queue(self, bot: BotHandle) -> None:
        assert not self.launched(bot)
        assert bot.ok("getMe")  # any request launches the instance
        assert self.launched(bot)
        pending = poll_in_background(bot, timeout=30)  # a long poll waiting
        assert bot.ok("close") is True
        status, body, _ = pending.result(timeout=5)
        assert (status, body["description"]) == (500, "Internal Server Error: restart")
        assert not self.launched(bot)
        inject_texts(bot, 2)  # held for the instance, as Telegram holds them for the bot
        assert texts(bot.ok("getUpdates")) == ["m0", "m1"]  # unconfirmed
        assert self.launched(bot)  # that request launched it again
        assert bot.ok("close") is True
        assert texts(bot.ok("getUpdates")) == ["m0", "m1"]  # close kept the queue

    def test_close_is_refused_in_the_first_ten_minutes_of_an_instance(self, bot: BotHandle) -> None:
        bot.emu.control("POST", "/uptime", {"seconds": 3600})  # the server runs for an hour
        assert bot.ok("getMe")  # launched now: more than 10 minutes after the server's start
        status, description, body = bot.error("close")
        retry_after = body["parameters"]["retry_after"]
        assert status == 429 and 598 <= retry_after <= 600
        assert description == f"Too Many Requests: retry after {retry_after}"
        assert self.launched(bot)
        bot.emu.control("POST", "/uptime", {"seconds": 300})  # launched 5 min after start
        assert bot.ok("close") is True
        assert not self.launched(bot)
