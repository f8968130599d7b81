from __future__ import annotations

import json

import pytest
from telebot import util

from harness.tokens import fake_token
from telegram_gateway.config import ALL_UPDATE_TYPES, load_settings
from telegram_gateway.errors import ConfigError
from telegram_gateway.updates import UNKNOWN_TYPE, describe, encode, update_type_of

pytestmark = pytest.mark.unit

BOT = 4242


def test_message_facts_subject_and_headers():
    update = {
        "update_id": 900,
        "message": {
            "message_id": 1,
            "from": {"id": 77, "is_bot": False, "first_name": "A"},
            "chat": {"id": -100123, "type": "supergroup"},
            "text": "/ask@helper_bot what now?",
        },
    }
    info = describe(BOT, update)
    assert (info.update_type, info.chat_id, info.chat_type, info.user_id) == (
        "message",
        -100123,
        "supergroup",
        77,
    )
    assert info.text == "/ask@helper_bot what now?"
    assert info.subject == "telegram.in.4242.message"
    assert info.headers("host-a") == {
        "Nats-Msg-Id": "4242:900@host-a",
        "Telegram-Bot-Id": "4242",
        "Telegram-Update-Id": "900",
        "Telegram-Update-Type": "message",
        "Telegram-Bot-Api-Server": "host-a",
        "Telegram-Chat-Id": "-100123",
        "Telegram-User-Id": "77",
    }


@pytest.mark.parametrize(
    ("update_type", "body", "chat_id", "user_id"),
    [
        ("callback_query", {"from": {"id": 5}, "message": {"chat": {"id": 9}}, "data": "x"}, 9, 5),
        ("inline_query", {"from": {"id": 5}, "query": "q", "chat_type": "sender"}, None, 5),
        ("message_reaction", {"chat": {"id": 9, "type": "group"}, "user": {"id": 5}}, 9, 5),
        ("message_reaction_count", {"chat": {"id": 9, "type": "group"}}, 9, None),
        ("poll", {"id": "p", "question": "?"}, None, None),
        ("poll_answer", {"poll_id": "p", "user": {"id": 5}}, None, 5),
        ("poll_answer", {"poll_id": "p", "voter_chat": {"id": -9, "type": "channel"}}, -9, None),
        ("my_chat_member", {"chat": {"id": 9}, "from": {"id": 5}}, 9, 5),
        ("chat_boost", {"chat": {"id": 9}, "boost": {"source": {"user": {"id": 5}}}}, 9, 5),
        ("removed_chat_boost", {"chat": {"id": 9}, "source": {"user": {"id": 5}}}, 9, 5),
        ("business_connection", {"user": {"id": 5}, "user_chat_id": 55}, 55, 5),
        (
            "channel_post",
            {"chat": {"id": -1, "type": "channel"}, "sender_chat": {"id": -1}},
            -1,
            None,
        ),
    ],
)
def test_chat_and_user_of_every_shape(update_type, body, chat_id, user_id):
    info = describe(BOT, {"update_id": 1, update_type: body})
    assert info.update_type == update_type
    assert info.chat_id == chat_id
    assert info.user_id == user_id
    headers = info.headers("host-a")
    assert ("Telegram-Chat-Id" in headers) == (chat_id is not None)
    assert ("Telegram-User-Id" in headers) == (user_id is not None)


def test_unknown_and_odd_updates():
    # a future update type is published under its own name, unknown fields untouched
    info = describe(BOT, {"update_id": 3, "brand_new_thing": {"chat": {"id": 1}, "x": [1]}})
    assert info.subject == "telegram.in.4242.brand_new_thing"
    assert update_type_of({"update_id": 1}) == UNKNOWN_TYPE
    assert update_type_of({"update_id": 1, "a.b*": {}}) == UNKNOWN_TYPE
    # a future top-level field beside a known type, in any order
    assert update_type_of({"update_id": 1, "x_new": {"a": 1}, "poll": {}}) == "poll"
    assert update_type_of({"update_id": 1, "x_flag": True, "new_kind": {}}) == "new_kind"
    # ids that are not integers are not headers
    info = describe(BOT, {"update_id": 4, "message": {"chat": {"id": "9"}, "from": {"id": True}}})
    assert info.chat_id is None and info.user_id is None
    with pytest.raises(ValueError, match="update_id"):
        describe(BOT, {"message": {}})
    with pytest.raises(ValueError, match="update_id"):
        describe(BOT, {"update_id": "7", "message": {}})


def test_caption_is_the_text_of_media():
    info = describe(BOT, {"update_id": 5, "message": {"chat": {"id": 1}, "caption": "/ask x"}})
    assert info.text == "/ask x"


def test_encode_is_json_equal_and_keeps_unknown_fields():
    update = {"update_id": 1, "message": {"text": "héllo ✓", "new_field": {"deep": [1.5, None]}}}
    assert json.loads(encode(update)) == update
    assert "héllo ✓".encode() in encode(update)


def test_allowed_updates_setting():
    # "all" really is all: every type the pinned library knows, including the three that
    # Telegram leaves out unless asked
    assert set(util.update_types) <= set(ALL_UPDATE_TYPES)
    base = {"TELEGRAM_BOT_TOKENS": fake_token(1), "GATEWAY_API_TOKEN": "a" * 20}
    settings = load_settings(base)
    assert settings.allowed_updates == ALL_UPDATE_TYPES
    assert {"chat_member", "message_reaction", "message_reaction_count"} <= set(
        settings.allowed_updates
    )
    chosen = load_settings({**base, "GATEWAY_ALLOWED_UPDATES": "message, callback_query"})
    assert chosen.allowed_updates == ("message", "callback_query")
    with pytest.raises(ConfigError, match=r"GATEWAY_ALLOWED_UPDATES .*mesage"):
        load_settings({**base, "GATEWAY_ALLOWED_UPDATES": "mesage"})


def test_the_same_update_id_from_two_bot_api_servers_is_two_updates():
    """Each Bot API server numbers a bot's updates itself: equal numbers from two hosts are
    different updates (two ids), the same server's repeat is the same one (one id)."""
    info = describe(4242, {"update_id": 7, "message": {"chat": {"id": 1}}})
    again = describe(4242, {"update_id": 7, "message": {"chat": {"id": 1}}})
    assert info.msg_id("host-a") != info.msg_id("host-b")
    assert info.msg_id("host-a") == again.msg_id("host-a")
