"""Agents' pull consumers, created by the gateway on request (telegram.consumers.create):
what an agent asks for is what it gets, a push consumer is refused, and the consumer reads
the stream."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from harness.procs import wait_until
from harness.stack import NATS_USER
from telegram_gateway.consumers import consumer_config

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway(stack):
    gw = stack.add_gateway(workers=2)
    gw.wait_healthy(30)
    return gw


async def fetch_texts(stack, name: str, count: int) -> list[str]:
    """Bind to the consumer ``name`` as an agent does, fetch ``count`` and ack them."""
    options = {"user": NATS_USER, "password": stack.nats_password} if stack.nats_password else {}
    nc = await nats.connect(stack.nats.url, **options)
    try:
        sub = await nc.jetstream().pull_subscribe_bind(name, stream="TELEGRAM")
        texts: list[str] = []
        while len(texts) < count:
            for msg in await sub.fetch(count - len(texts), timeout=10):
                texts.append(json.loads(msg.data)["message"]["text"])
                await msg.ack_sync()
        return texts
    finally:
        await nc.close()


def message(update_id: int, text: str) -> dict:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1,
            "chat": {"id": 42, "type": "private"},
            "from": {"id": 42, "is_bot": False, "first_name": "A"},
            "text": text,
        },
    }


def test_an_agent_gets_a_pull_consumer_of_the_updates_it_asks_for(stack, gateway):
    bot, other = stack.bot_ids
    answer = stack.request(
        "telegram.consumers.create",
        {"name": "replier", "filter_subjects": [f"telegram.in.{bot}.message"], "ack_wait": 10},
    )
    assert answer["ok"] is True, answer
    result = answer["result"]
    assert result["stream"] == "TELEGRAM" and result["name"] == "replier"
    assert result["filter_subjects"] == [f"telegram.in.{bot}.message"]
    assert result["deliver_policy"] == "all" and result["ack_wait"] == 10
    stack.emulator.inject(bot, [message(1, "for the agent"), message(2, "and this")])
    stack.emulator.inject(other, [message(1, "another bot's")])
    wait_until(lambda: stack.stream_count() >= 3, 15, "three updates stored")
    texts = asyncio.run(fetch_texts(stack, "replier", 2))
    assert texts == ["for the agent", "and this"]
    # asking again with the same settings is fine (an agent's start-up does it every time)
    again = stack.request(
        "telegram.consumers.create",
        {"name": "replier", "filter_subjects": [f"telegram.in.{bot}.message"], "ack_wait": 10},
    )
    assert again["ok"] is True and again["result"]["num_pending"] == 0
    deleted = stack.request("telegram.consumers.delete", {"name": "replier"})
    assert deleted == {"ok": True, "result": {"stream": "TELEGRAM", "name": "replier"}}
    gone = stack.request("telegram.consumers.delete", {"name": "replier"})
    assert gone["ok"] is False and gone["error_code"] == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "deliver_subject": "agents.victim"}, "deliver_subject"),
        ({"name": "x", "deliver_group": "g"}, "deliver_subject"),
        ({"name": "x", "filter_subjects": ["agents.>"]}, "filter_subjects"),
        ({"name": "x", "filter_subjects": ["telegram.in"]}, "filter_subjects"),
        ({"name": "x", "filter_subjects": ["telegram.in.>.x"]}, "filter_subjects"),
        ({"name": "x", "filter_subjects": ["telegram.in.1 .message"]}, "filter_subjects"),
        ({"name": "x", "filter_subjects": []}, "filter_subjects"),
        ({"name": "x", "filter_subjects": "telegram.in.>"}, "filter_subjects"),
        ({"name": "no spaces"}, "name"),
        ({"name": "a.b"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({}, "name"),
        ({"name": "x", "deliver_policy": "sometimes"}, "deliver_policy"),
        ({"name": "x", "deliver_policy": "by_start_sequence"}, "opt_start_seq"),
        ({"name": "x", "opt_start_seq": 5}, "opt_start_seq"),
        ({"name": "x", "ack_wait": 0}, "ack_wait"),
        ({"name": "x", "ack_wait": True}, "ack_wait"),
        ({"name": "x", "max_deliver": 0}, "max_deliver"),
        ({"name": "x", "max_ack_pending": 10**6}, "max_ack_pending"),
        ({"name": "x", "mirror": "y"}, "mirror"),
        ([], "body"),
    ],
)
def test_a_consumer_request_that_is_not_a_pull_consumer_of_updates_is_refused(body, field):
    with pytest.raises(ValueError) as refused:
        consumer_config(body)
    assert str(refused.value).startswith(f"{field}: ")


def test_refusals_come_back_as_400_envelopes_and_create_nothing(stack, gateway):
    answer = stack.request(
        "telegram.consumers.create", {"name": "spy", "deliver_subject": "agents.victim"}
    )
    assert answer["ok"] is False and answer["error_code"] == 400
    assert answer["description"].startswith("Bad Request: deliver_subject: push consumers")
    bad_json = stack.request("telegram.consumers.create", b"{not json")
    assert bad_json["error_code"] == 400 and "body" in bad_json["description"]
    missing = stack.request("telegram.consumers.delete", {"name": "spy"})
    assert missing["error_code"] == 404  # nothing was created
