"""What /send accepts (``outbound.plan``) and how long text is split (``split_text``)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from telebot import util

from harness.tokens import fake_token
from telegram_gateway.config import load_settings
from telegram_gateway.errors import InvalidRequest
from telegram_gateway.outbound import (
    CAPTION_LIMIT,
    MAX_TEXT,
    TEXT_LIMIT,
    from_form,
    media_value,
    plan,
    split_text,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def one_bot():
    return load_settings({"TELEGRAM_BOT_TOKENS": fake_token(11), "GATEWAY_API_TOKEN": "t" * 20})


@pytest.fixture(scope="module")
def two_bots():
    return load_settings(
        {
            "TELEGRAM_BOT_TOKENS": f"news={fake_token(21)},{fake_token(22)}",
            "GATEWAY_API_TOKEN": "t" * 20,
        }
    )


def refused(body, settings, field: str, reason: str = "") -> None:
    with pytest.raises(InvalidRequest) as info:
        plan(body, settings)
    assert info.value.field == field, str(info.value)
    assert reason in info.value.reason, str(info.value)
    assert str(info.value).startswith(f"{field}: ")


def test_a_plain_text(one_bot):
    p = plan({"chat_id": 5, "text": "hi"}, one_bot)
    assert (p.bot.bot_id, p.method, p.chat_id) == (11, "sendMessage", 5)
    assert p.parts == [{"chat_id": 5, "text": "hi"}]


def test_bot_by_id_or_name(two_bots):
    assert plan({"bot": "news", "chat_id": 1, "text": "x"}, two_bots).bot.bot_id == 21
    assert plan({"bot": 22, "chat_id": 1, "text": "x"}, two_bots).bot.bot_id == 22
    assert plan({"bot": "22", "chat_id": 1, "text": "x"}, two_bots).bot.bot_id == 22
    refused({"chat_id": 1, "text": "x"}, two_bots, "bot", "several bots")
    refused({"bot": "nope", "chat_id": 1, "text": "x"}, two_bots, "bot", "unknown bot")
    refused({"bot": True, "chat_id": 1, "text": "x"}, two_bots, "bot")
    refused({"bot": [21], "chat_id": 1, "text": "x"}, two_bots, "bot")


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ([1, 2], "body", "JSON object"),
        ("text", "body", "JSON object"),
        ({"text": "x"}, "chat_id", "required"),
        ({"chat_id": 1}, "text", "required"),
        ({"chat_id": "abc", "text": "x"}, "chat_id", "integer or @username"),
        ({"chat_id": 1.5, "text": "x"}, "chat_id", "integer or @username"),
        ({"chat_id": True, "text": "x"}, "chat_id", "integer or @username"),
        ({"chat_id": 0, "text": "x"}, "chat_id", "not a chat id"),
        ({"chat_id": 2**60, "text": "x"}, "chat_id", "not a chat id"),
        ({"chat_id": 1, "text": ""}, "text", "empty"),
        ({"chat_id": 1, "text": " \n\t "}, "text", "empty"),
        ({"chat_id": 1, "text": 5}, "text", "string"),
        ({"chat_id": 1, "text": "x" * (MAX_TEXT + 1)}, "text", "longer than"),
        ({"chat_id": 1, "text": "x", "photo": "AgACAgIAAxkBAAIB"}, "text", "not both"),
        ({"chat_id": 1, "photo": "a", "document": "b"}, "document", "only one media"),
        ({"chat_id": 1, "text": "x", "colour": "red"}, "colour", "unknown field"),
        ({"chat_id": 1, "text": "x", "parse_mode": "BBCode"}, "parse_mode", "HTML"),
        ({"chat_id": 1, "text": "x", "parse_mode": "html"}, "parse_mode", "HTML"),
        ({"chat_id": 1, "text": "x", "disable_notification": "yes"}, "disable_notification", ""),
        ({"chat_id": 1, "text": "x", "reply_to_message_id": "3"}, "reply_to_message_id", ""),
        ({"chat_id": 1, "text": "x", "reply_to_message_id": True}, "reply_to_message_id", ""),
        ({"chat_id": 1, "text": "x", "message_thread_id": -1}, "message_thread_id", "range"),
        ({"chat_id": 1, "text": "x", "entities": {"type": "bold"}}, "entities", "array"),
        ({"chat_id": 1, "text": "x", "reply_markup": []}, "reply_markup", "object"),
        ({"chat_id": 1, "text": "x", "reply_markup": {}}, "reply_markup", "exactly one"),
        (
            {"chat_id": 1, "text": "x", "reply_markup": {"inline_keyboard": [1]}},
            "reply_markup",
            "rows",
        ),
        ({"chat_id": 1, "text": "x", "reply_parameters": {}}, "reply_parameters", "message_id"),
        ({"chat_id": 1, "text": "x", "caption": "c"}, "caption", "media messages"),
        ({"chat_id": 1, "photo": "AgAC", "entities": []}, "entities", "text messages"),
        ({"chat_id": 1, "photo": "AgAC", "performer": "x"}, "performer", "only with audio"),
        ({"chat_id": 1, "photo": ""}, "photo", "empty"),
        ({"chat_id": 1, "photo": "ftp://host/x.jpg"}, "photo", "file_id"),
        ({"chat_id": 1, "photo": "/etc/passwd"}, "photo", "GATEWAY_MEDIA_DIRS"),
        ({"chat_id": 1, "document": "file:///etc/passwd"}, "document", "GATEWAY_MEDIA_DIRS"),
        ({"chat_id": 1, "photo": "not a file id"}, "photo", "file_id"),
        ({"chat_id": 1, "photo": 7}, "photo", "string"),
        ({"chat_id": 1, "photo": "AgAC", "caption": "c" * (CAPTION_LIMIT + 1)}, "caption", "1024"),
        ({"chat_id": 1, "text": "a\ud800b"}, "body", "surrogate"),
        ({"chat_id": 1, "text": "x", "reply_markup": {"a": "\udfff"}}, "body", "surrogate"),
        ({"chat_id": 1, "text": "x", "reply_markup": {"x": float("nan")}}, "body", "NaN"),
    ],
)
def test_every_malformed_body_names_its_field(one_bot, body, field, reason):
    refused(body, one_bot, field, reason)


def test_chat_ids_as_the_bot_api_takes_them(one_bot):
    for value, expected in [
        (5, 5),
        ("5", 5),
        ("-1001234567890", -1001234567890),
        ("@channel_name", "@channel_name"),
    ]:
        assert plan({"chat_id": value, "text": "x"}, one_bot).chat_id == expected


def test_null_fields_count_as_absent(one_bot):
    p = plan({"chat_id": 1, "text": "x", "parse_mode": None, "bot": None}, one_bot)
    assert p.parts == [{"chat_id": 1, "text": "x"}]


def test_media_values(tmp_path):
    (tmp_path / "a b%.pdf").write_bytes(b"%PDF")
    (tmp_path / "x.pdf").write_bytes(b"%PDF")
    dirs = [tmp_path]
    assert media_value("photo", "https://example.org/a.jpg", dirs) == "https://example.org/a.jpg"
    assert media_value("photo", "AgACAgIAAxkBAAIB-_x", dirs) == "AgACAgIAAxkBAAIB-_x"
    assert media_value("document", f"{tmp_path}/a b%.pdf", dirs) == (
        f"file://{tmp_path}/a%20b%25.pdf"
    )
    assert media_value("document", f"file://{tmp_path}/x.pdf", dirs) == f"file://{tmp_path}/x.pdf"
    # outside GATEWAY_MEDIA_DIRS (tests/gateway/test_media_dirs.py has the details)
    with pytest.raises(InvalidRequest, match="GATEWAY_MEDIA_DIRS"):
        media_value("document", "/etc/passwd", dirs)


def test_media_plan(tmp_path):
    (tmp_path / "r.pdf").write_bytes(b"%PDF")
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKENS": fake_token(11),
            "GATEWAY_API_TOKEN": "t" * 20,
            "GATEWAY_MEDIA_DIRS": str(tmp_path),
        }
    )
    p = plan({"chat_id": 1, "document": f"{tmp_path}/r.pdf", "caption": "report"}, settings)
    assert p.method == "sendDocument"
    assert p.parts == [{"chat_id": 1, "document": f"file://{tmp_path}/r.pdf", "caption": "report"}]


def test_a_marked_up_caption_is_left_to_telegram(one_bot):
    body = {"chat_id": 1, "photo": "AgAC", "caption": "<b>x</b>" * 200, "parse_mode": "HTML"}
    assert plan(body, one_bot).parts[0]["caption"] == body["caption"]


def test_long_plain_text_is_split_and_options_follow_the_parts(one_bot):
    text = ("word " * 1000 + "\n\n") * 3  # 15006 characters
    p = plan(
        {
            "chat_id": 1,
            "text": text,
            "reply_to_message_id": 4,
            "reply_markup": {"inline_keyboard": [[{"text": "ok", "callback_data": "ok"}]]},
            "disable_notification": True,
        },
        one_bot,
    )
    assert len(p.parts) == 4
    assert all(len(part["text"]) <= TEXT_LIMIT for part in p.parts)
    assert [("reply_to_message_id" in part) for part in p.parts] == [True, False, False, False]
    assert [("reply_markup" in part) for part in p.parts] == [False, False, False, True]
    assert all(part["disable_notification"] is True for part in p.parts)


def test_long_text_with_markup_goes_as_one_message(one_bot):
    text = "<b>bold</b> " * 500
    p = plan({"chat_id": 1, "text": text, "parse_mode": "HTML"}, one_bot)
    assert [part["text"] for part in p.parts] == [text]


def test_split_prefers_paragraphs_then_lines_then_words():
    para = "a" * 3000 + "\n\n" + "b" * 3000
    assert split_text(para) == ["a" * 3000, "b" * 3000]
    lines = "a" * 3000 + "\n" + "b" * 500 + " " + "c" * 3000
    assert split_text(lines) == ["a" * 3000, "b" * 500 + " " + "c" * 3000]
    words = ("w" * 9 + " ") * 500
    pieces = split_text(words)
    assert all(len(p) <= TEXT_LIMIT for p in pieces)
    assert all(not p.endswith(" ") for p in pieces[:-1])  # the text's own last space stays
    assert split_text("x" * 5000) == ["x" * 4096, "x" * 904]  # no boundary: a hard cut
    assert split_text("short") == ["short"]


def test_why_the_librarys_splitter_is_not_used():
    """``telebot.util.smart_split`` makes messages Telegram refuses; if it stops doing so,
    this fails and split_text may give way to it."""
    assert util.smart_split("\n" + "a" * 5000, TEXT_LIMIT)[0] == "\n"  # whitespace only
    assert util.smart_split("a" * TEXT_LIMIT, TEXT_LIMIT)[-1] == ""  # an empty message
    assert util.smart_split("aaa\n" + "b " * 3000, TEXT_LIMIT)[0] == "aaa\n"  # a tiny piece
    assert all(piece.strip() for piece in split_text("\n" + "a" * 5000))
    assert split_text("a" * TEXT_LIMIT) == ["a" * TEXT_LIMIT]
    assert len(split_text("aaa\n" + "b " * 3000)[0]) > TEXT_LIMIT // 2


def test_the_limit_counts_code_points_as_telegram_does():
    emoji = "😀" * (TEXT_LIMIT + 1)  # two UTF-16 code units each, one code point
    assert [len(piece) for piece in split_text(emoji)] == [TEXT_LIMIT, 1]


def reassembles(text: str, parts: list[str]) -> bool:
    """``text`` is the parts in order with only whitespace between them."""
    return bool(re.fullmatch(r"\s*" + r"\s*".join(map(re.escape, parts)) + r"\s*", text))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(alphabet="abc xyz", min_size=1, max_size=900),
            st.sampled_from(["\n", "\n\n", " ", "\t"]),
            st.text(alphabet="é😀ж", min_size=1, max_size=300),
        ),
        min_size=1,
        max_size=40,
    ).map("".join)
)
def test_split_text_loses_nothing_but_whitespace_at_the_cuts(text):
    parts = split_text(text, 1000)
    assert all(0 < len(part) <= 1000 for part in parts)
    assert reassembles(text, parts)
    assert re.sub(r"\s+", "", "".join(parts)) == re.sub(r"\s+", "", text)


def test_form_fields_take_their_json_types():
    body = from_form(
        {
            "chat_id": "5",
            "caption": "c",
            "disable_notification": "true",
            "reply_to_message_id": "3",
            "reply_markup": '{"remove_keyboard": true}',
        }
    )
    assert body == {
        "chat_id": "5",
        "caption": "c",
        "disable_notification": True,
        "reply_to_message_id": 3,
        "reply_markup": {"remove_keyboard": True},
    }
    for bad in ({"duration": "long"}, {"has_spoiler": "maybe"}, {"reply_markup": "{"}):
        with pytest.raises(InvalidRequest):
            from_form(bad)
