"""Inbound end to end (real nats-server, the emulator, the gateway under gunicorn + gevent):
every update the emulator serves lands in JetStream exactly once, as served."""

from __future__ import annotations

import functools
import statistics
import time

import pytest

from harness.procs import wait_until
from harness.stack import HOST

pytestmark = pytest.mark.integration


def metric_values(text: str, name: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def confirmed_beyond(stack, firsts: dict[int, int]) -> bool:
    """Whether every bot confirmed an update id above its entry in ``firsts``."""
    confirmed = stack.emulator.stats()["confirmed_offset"]
    return all(confirmed[str(bot_id)] > first for bot_id, first in firsts.items())


def test_two_bots_two_workers_every_update_exactly_once(stack):
    gateway = stack.add_gateway(workers=2)
    # updates arrive while the gateway polls: several injections per bot, mixed kinds, with
    # fields the gateway does not know; the next one once the gateway has taken in some of this
    for round_ in range(5):
        firsts = {
            bot_id: stack.emulator.generate(
                bot_id, 1000, kinds=stack.kinds, unknown_field_ratio=0.3, seed=round_
            )["first_update_id"]
            for bot_id in stack.bot_ids
        }
        wait_until(
            functools.partial(confirmed_beyond, stack, firsts),
            20,
            f"both bots to confirm updates of round {round_}",
        )
    for bot_id in stack.bot_ids:
        stack.wait_confirmed(bot_id, 60)
    stored = stack.read_stream()
    assert len(stored) == 10_000
    stack.check_exactly_once(stored, stack.bot_ids)
    # fields no Bot API version has survive (the generator adds some at the top level)
    assert sum(1 for m in stored if set(m.update) - {"update_id", *stack.kinds}) > 1000
    # the bots are spread: each worker owns one (a worker that took both at start-up hands
    # one over after its current getUpdates, which causes no 409)
    wait_until(
        lambda: len({stack.holder(gateway, b).get("worker") for b in stack.bot_ids}) == 2,
        40,
        "each worker to own one bot",
    )
    assert {stack.holder(gateway, b)["pid"] for b in stack.bot_ids} == set(gateway.worker_pids())
    stats = stack.emulator.stats()
    assert stats["conflicts_409"] == 0
    assert stats["responses"].get("409", 0) == 0

    status, body = gateway.get("/healthz")
    assert status == 200, body
    assert set(body["checks"]) >= {"nats", *(f"poller:{b}" for b in stack.bot_ids)}
    # metrics are summed over both workers
    _, text, _ = gateway.request("GET", "/metrics")
    published = metric_values(text, "telegram_gateway_updates_published_total")
    assert sum(published.values()) == 10_000
    active = metric_values(text, "telegram_gateway_poller_active")
    assert active == {f'telegram_gateway_poller_active{{bot="{b}"}}': 1.0 for b in stack.bot_ids}
    stack.assert_no_secrets_logged(gateway)


def test_healthz_stays_fast_while_20000_updates_flow(stack):
    """One worker polls and answers /healthz: the NATS bridge never blocks its hub."""
    bot_id = stack.bot_ids[0]
    gateway = stack.add_gateway(workers=1, bots=(bot_id,), GATEWAY_LOG_LEVEL="INFO")
    for _ in range(20):  # warm up connections
        stack.timed_healthz(gateway)
    stack.emulator.generate(bot_id, 20_000, kinds=stack.kinds, seed=7)
    latencies: list[float] = []
    started = time.monotonic()
    while stack.emulator.stats()["pending"][str(bot_id)] > 0:
        status, took = stack.timed_healthz(gateway)
        assert status in (200, 503)
        latencies.append(took)
        assert time.monotonic() - started < 60, "20,000 updates did not flow within 60 s"
    stack.wait_confirmed(bot_id, 30)
    assert stack.stream_count() == 20_000
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"/healthz during 20,000 updates: n={len(latencies)} p50={p50 * 1000:.1f} ms "
        f"p99={p99 * 1000:.1f} ms max={latencies[-1] * 1000:.1f} ms"
    )
    assert len(latencies) >= 20, "too few samples to judge"
    assert p50 < 0.025
    assert p99 < 0.050
    assert latencies[-1] < 0.5


ASK_ROUTES = """
routes:
  - name: ask-helper
    match:
      bot: {bot}
      chat_id: {chat}
      command: /ask
    subjects: [agents.helper.inbox]
"""


def _message(chat_id: int, text: str, user_id: int = 4242) -> dict:
    return {
        "message": {
            "message_id": 1,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "supergroup", "title": "t"},
            "from": {"id": user_id, "is_bot": False, "first_name": "U"},
            "text": text,
        }
    }


def test_routing_ask_commands_from_one_chat_to_the_agent_inbox(stack):
    bot_id, other_bot = stack.bot_ids
    chat, other_chat = -1001000000001, -1001000000002
    gateway = stack.add_gateway(workers=2, routes=ASK_ROUTES.format(bot=bot_id, chat=chat))
    texts = [
        (chat, "/ask what is up?", True),
        (chat, "/ask@emulated_bot and now", True),
        (chat, "/ask", True),
        (chat, "hello", False),
        (chat, "/asking", False),
        (chat, "please /ask", False),
        (other_chat, "/ask from elsewhere", False),
    ]
    with stack.subscribe("agents.>") as inbox, stack.subscribe("telegram.in.>") as default:
        first = stack.emulator.inject(bot_id, [_message(c, t) for c, t, _ in texts])
        stack.emulator.inject(other_bot, [_message(chat, "/ask other bot")])
        for b in stack.bot_ids:
            stack.wait_confirmed(b, 20)
        wait_until(lambda: len(default.messages) == len(texts) + 1, 5, "default copies")
        time.sleep(0.3)  # a stray extra copy would arrive by now
    routed_ids = [first["first_update_id"] + i for i, (_, _, r) in enumerate(texts) if r]
    assert [m.subject for m in inbox.messages] == ["agents.helper.inbox"] * len(routed_ids)
    assert [int(m.headers["Telegram-Update-Id"]) for m in inbox.messages] == routed_ids
    assert all(
        m.headers["Nats-Msg-Id"] == f"{bot_id}:{m.update['update_id']}@{HOST}"
        for m in inbox.messages
    )
    served = stack.served(bot_id)
    assert all(m.update == served[m.update["update_id"]] for m in inbox.messages)
    # everything, routed or not, is in the stream once, on the default subject only
    stored = stack.read_stream()
    stack.check_exactly_once(stored, stack.bot_ids)
    assert {m.subject for m in stored} == {f"telegram.in.{b}.message" for b in stack.bot_ids}
    stack.assert_no_secrets_logged(gateway)


def test_invalid_routes_file_stops_startup_naming_rule_and_field(stack):
    routes = """
routes:
  - name: fine
    subjects: [agents.a.inbox]
  - name: broken
    match: {chat_id: "not a number"}
    subjects: [agents.b.inbox]
"""
    gateway = stack.add_gateway(workers=1, routes=routes, start=False)
    with pytest.raises(AssertionError):
        gateway.start(wait_healthy=False, timeout=5)
    assert gateway.proc is not None and gateway.proc.poll() not in (None, 0)
    log = gateway.log()
    assert "rule 2 ('broken'): match.chat_id" in log
    assert "GATEWAY_ROUTES_FILE" in log


def test_webhook_is_deleted_before_polling(stack):
    bot_id = stack.bot_ids[0]
    token = stack.tokens[bot_id]
    status, body, _ = stack.emulator.call(token, "setWebhook", url="https://hooks.example.org/x")
    assert status == 200, body
    gateway = stack.add_gateway(workers=2, bots=(bot_id,))
    stack.emulator.generate(bot_id, 50, seed=3)
    stack.wait_confirmed(bot_id, 20)
    _, info, _ = stack.emulator.call(token, "getWebhookInfo")
    assert info["result"]["url"] == ""
    assert "has a webhook (host hooks.example.org)" in gateway.log()
    assert stack.stream_count() == 50
    assert stack.emulator.stats()["calls"].get("logOut", 0) == 0
