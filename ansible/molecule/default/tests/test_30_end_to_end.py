"""End to end through the deployed services, from inside the host (probe.py).

Inbound: an update injected at the Bot API emulator is in stream TELEGRAM within 5 s.
Outbound: POST /send and a NATS request on telegram.out.<bot>.sendMessage reach the emulator.
"""

from __future__ import annotations

import json

import pytest

from conftest import BOT_ID

INBOUND_DEADLINE = 5.0


@pytest.fixture(scope="module")
def chat_id(probe, agents):
    return probe("chat", **agents)["chat_id"]


def test_inbound_update_reaches_jetstream_within_5s(probe, agents, host):
    res = probe("inbound", count=3, timeout=INBOUND_DEADLINE + 5, **agents)
    print(f"\nINBOUND 3 updates emulator -> stream TELEGRAM in {res['seconds']} s")
    env_file = host.file("/etc/telegram-gateway/telegram-gateway.env").content_string
    by_id = {m["update"]["update_id"]: m for m in res["messages"]}
    for update_id in res["injected"]:
        assert update_id in by_id, f"update {update_id} not in stream TELEGRAM: {res}"
        msg = by_id[update_id]
        assert msg["subject"] == f"telegram.in.{BOT_ID}.message"
        headers = msg["headers"]
        # the host's Bot API server numbered it: its name (GATEWAY_HOST_NAME, the inventory
        # name) is in the id
        server = headers["Telegram-Bot-Api-Server"]
        assert f'GATEWAY_HOST_NAME="{server}"' in env_file
        assert server in ("telegram-gateway-debian12", "telegram-gateway-debian13")
        assert headers["Nats-Msg-Id"] == f"{BOT_ID}:{update_id}@{server}"
        assert headers["Telegram-Bot-Id"] == str(BOT_ID)
        assert headers["Telegram-Update-Id"] == str(update_id)
        assert headers["Telegram-Update-Type"] == "message"
        # the Update exactly as the Bot API returned it
        assert msg["update"] == res["originals"][str(update_id)]
    ids = [m["update"]["update_id"] for m in res["messages"]]
    assert len(ids) == len(set(ids)), f"duplicates in the stream: {ids}"
    assert res["seconds"] <= INBOUND_DEADLINE


def test_send_over_http(probe, secrets, chat_id):
    text = "hello from molecule over HTTP"
    res = probe(
        "send_http",
        bot_id=BOT_ID,
        chat_id=chat_id,
        text=text,
        api_token=secrets["gateway_api_token"],
    )
    assert res["with_token"]["status"] == 200, res
    assert res["without_token"]["status"] == 401, res
    assert res["wrong_token"]["status"] == 401, res
    recorded = [r for r in res["recorded"] if r["method"].lower() == "sendmessage"]
    assert len(recorded) == 1, f"the emulator should have one sendMessage: {res['recorded']}"
    assert recorded[0]["chat_id"] == chat_id
    assert text in json.dumps(recorded[0])


def test_send_over_nats_request(probe, agents, chat_id):
    text = "hello from molecule over NATS"
    res = probe("nats_request", chat_id=chat_id, text=text, **agents)
    assert res["reply"].get("ok") is True, res
    assert res["reply"]["result"]["chat"]["id"] == chat_id
    assert res["reply"]["result"]["text"] == text
    recorded = [r for r in res["recorded"] if r["method"].lower() == "sendmessage"]
    assert len(recorded) == 1 and recorded[0]["chat_id"] == chat_id, res["recorded"]
