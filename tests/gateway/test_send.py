"""``POST /send`` against the real stack: gunicorn + gevent gateway, emulator, nats-server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
import time

import pytest
from outbound_fixtures import (
    BLOCKED,
    BOT,
    BOT_NAME,
    CHANNEL,
    CHANNEL_NAME,
    GROUP,
    NEW_SUPERGROUP,
    OLD_GROUP,
    OTHER_BOT,
    PRIVATE,
    outbound_stack,
)

pytestmark = pytest.mark.integration

FIVE_MB = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    with outbound_stack(tmp_path_factory.mktemp("send")) as stack:
        yield stack


def chat(index: int) -> int:
    """A private chat of its own for each test (Telegram's 1/s per chat stays out of the way)."""
    return PRIVATE[index]


# ---- authentication --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token-of-some-length", "Basic dXNlcjpwYXNz", "token"],
)
def test_missing_or_wrong_token_is_401(out, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    before = len(out.sent())
    status, body, response_headers = out.send(
        {"chat_id": chat(0), "text": "x"}, token=None, headers=headers
    )
    assert status == 401
    assert body["ok"] is False and "unauthorized" in body["error"]
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert len(out.sent()) == before


def test_token_with_a_suffix_is_401(out):
    status, _, _ = out.send({"chat_id": chat(0), "text": "x"}, token=out.api_token + "x")
    assert status == 401


# ---- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "body: not valid JSON"),
        (b"", "body: must be a JSON object"),
        (b"[1, 2]", "body: must be a JSON object"),
        (b"[" * 100000, "body: not valid JSON"),
        (b'{"bot":1,"chat_id":1,"text":"a\\ud800b"}', "body: contains a lone UTF-16 surrogate"),
        (b'{"bot":1,"chat_id":NaN,"text":"x"}', "body: NaN and Infinity"),
        (b'{"bot":1,"chat_id":' + b"9" * 5000 + b',"text":"x"}', "body: not valid JSON"),
        ({"bot": BOT, "text": "x"}, "chat_id: required"),
        ({"bot": BOT, "chat_id": "x", "text": "x"}, "chat_id: must be an integer or @username"),
        ({"bot": BOT, "chat_id": 1, "text": 12}, "text: must be a string"),
        ({"bot": BOT, "chat_id": 1, "text": "   "}, "text: must not be empty"),
        ({"bot": BOT, "chat_id": 1}, "text: required"),
        ({"bot": BOT, "chat_id": 1, "text": "x", "photo": "https://e.org/a.png"}, "text: give"),
        ({"bot": "nobody", "chat_id": 1, "text": "x"}, "bot: unknown bot 'nobody'"),
        ({"chat_id": 1, "text": "x"}, "bot: required: several bots are configured"),
        ({"bot": BOT, "chat_id": 1, "photo": "AgAC", "caption": "c" * 1025}, "caption: longer"),
        ({"bot": BOT, "chat_id": 1, "text": "x", "disable_notification": 1}, "disable_notif"),
        ({"bot": BOT, "chat_id": 1, "text": "x", "unknown": 1}, "unknown: unknown field"),
    ],
)
def test_malformed_requests_are_400_naming_the_field(out, body, error):
    before = len(out.sent())
    if isinstance(body, bytes):
        status, answer, _ = out.send_raw(body, "application/json")
    else:
        status, answer, _ = out.send(body)
    assert status == 400, answer
    assert answer["ok"] is False
    assert answer["error"].startswith(error), answer
    assert re.match(r"^[A-Za-z_-]+: ", answer["error"])
    assert len(out.sent()) == before


def test_a_malformed_idempotency_key_is_400(out):
    status, answer, _ = out.send({"bot": BOT, "chat_id": chat(0), "text": "x"}, key=" " * 3)
    assert status == 400 and answer["error"].startswith("Idempotency-Key: ")


def test_body_without_json_content_type_is_still_json(out):
    body = json.dumps({"bot": BOT, "chat_id": chat(1), "text": "plain curl -d"}).encode()
    status, answer, _ = out.send_raw(body, "application/x-www-form-urlencoded")
    assert status == 200, answer


# ---- sending -------------------------------------------------------------------------------------
def test_text_message_result_is_the_bot_apis_message(out):
    status, answer, _ = out.send({"bot": BOT, "chat_id": chat(2), "text": "hello, world"})
    assert status == 200
    assert answer["ok"] is True
    (message,) = answer["result"]
    (record,) = out.sent(chat(2))
    assert message == record["result"]  # unchanged, field for field
    assert message["text"] == "hello, world"


def test_bot_by_name_and_by_id(out):
    assert out.send({"bot": BOT_NAME, "chat_id": chat(3), "text": "by name"})[0] == 200
    assert out.send({"bot": str(OTHER_BOT), "chat_id": chat(3), "text": "by id"})[0] == 200
    assert out.sent_texts(chat(3), BOT) == ["by name"]
    assert out.sent_texts(chat(3), OTHER_BOT) == ["by id"]


def test_options_reach_the_bot_api(out):
    markup = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}
    status, answer, _ = out.send(
        {
            "bot": BOT,
            "chat_id": chat(4),
            "text": "<b>bold</b> and <i>italic</i>",
            "parse_mode": "HTML",
            "reply_markup": markup,
            "disable_notification": True,
            "link_preview_options": {"is_disabled": True},
        }
    )
    assert status == 200, answer
    message = answer["result"][0]
    assert message["text"] == "bold and italic"
    assert [e["type"] for e in message["entities"]] == ["bold", "italic"]
    assert message["reply_markup"] == markup
    params = out.sent(chat(4))[0]["params"]
    assert params["disable_notification"] is True


def test_channel_by_username(out):
    status, answer, _ = out.send({"bot": BOT, "chat_id": CHANNEL_NAME, "text": "to the channel"})
    assert status == 200, answer
    assert answer["result"][0]["chat"]["id"] == CHANNEL


def test_ten_thousand_characters_are_three_messages_in_order(out):
    paragraphs, length, index = [], 0, 0
    while length < 10_000:
        paragraph = f"Paragraph {index}. " + " ".join(f"word{index}-{j}" for j in range(90))
        paragraphs.append(paragraph)
        length += len(paragraph) + 2
        index += 1
    text = "\n\n".join(paragraphs)[:10_000].rstrip()
    text = text if len(text) == 10_000 else text + "x" * (10_000 - len(text))
    assert len(text) == 10_000
    status, answer, _ = out.send({"bot": BOT, "chat_id": chat(5), "text": text})
    assert status == 200, answer
    parts = [message["text"] for message in answer["result"]]
    assert len(parts) == 3
    assert all(len(part) <= 4096 for part in parts)
    # cut at paragraph breaks only: joining the parts with the "\n\n" they were cut at gives
    # back exactly the original text
    assert "\n\n".join(parts) == text
    # the emulator received them in this order
    assert out.sent_texts(chat(5)) == parts
    ids = [message["message_id"] for message in answer["result"]]
    assert ids == sorted(ids)


def test_chat_not_found_keeps_telegrams_400(out):
    status, answer, _ = out.send({"bot": BOT, "chat_id": 999_999_999, "text": "x"})
    assert status == 400
    assert answer == {
        "ok": False,
        "error": "Bad Request: chat not found",
        "error_code": 400,
        "description": "Bad Request: chat not found",
    }


def test_blocked_by_the_user_is_403(out):
    status, answer, _ = out.send({"bot": BOT, "chat_id": BLOCKED, "text": "x"})
    assert status == 403
    assert answer["description"] == "Forbidden: bot was blocked by the user"
    assert answer["error_code"] == 403


def test_a_migrated_group_is_retried_on_the_supergroup(out):
    status, answer, _ = out.send({"bot": BOT, "chat_id": OLD_GROUP, "text": "after upgrade"})
    assert status == 200, answer
    assert answer["migrated_to_chat_id"] == NEW_SUPERGROUP
    assert answer["result"][0]["chat"]["id"] == NEW_SUPERGROUP
    assert out.sent_texts(NEW_SUPERGROUP) == ["after upgrade"]
    # the move is remembered: the next message goes straight to the supergroup, still reported
    status, answer, _ = out.send({"bot": BOT, "chat_id": OLD_GROUP, "text": "second"})
    assert status == 200 and answer["migrated_to_chat_id"] == NEW_SUPERGROUP


# ---- media ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_file(out):
    # in the gateway's default GATEWAY_MEDIA_DIRS, <GATEWAY_STATE_DIR>/outbox
    outbox = out.gateway.state_dir / "outbox"
    outbox.mkdir(exist_ok=True)
    path = outbox / "report 2026.bin"
    path.write_bytes(os.urandom(FIVE_MB))
    return path


def test_photo_by_url(out):
    status, answer, _ = out.send(
        {"bot": BOT, "chat_id": GROUP, "photo": "https://example.org/cat.jpg", "caption": "cat"}
    )
    assert status == 200, answer
    message = answer["result"][0]
    assert message["caption"] == "cat" and message["photo"]
    assert out.sent(GROUP)[-1]["params"]["photo"] == "https://example.org/cat.jpg"


def test_document_from_a_local_path_is_sent_as_file_uri(out, big_file):
    status, answer, _ = out.send(
        {"bot": BOT, "chat_id": chat(6), "document": str(big_file), "caption": "5 MB"}
    )
    assert status == 200, answer
    document = answer["result"][0]["document"]
    assert document["file_size"] == FIVE_MB
    assert document["file_name"] == big_file.name
    sent_as = out.sent(chat(6))[-1]["params"]["document"]
    assert sent_as.startswith("file:///") and sent_as.endswith("report%202026.bin")


def test_document_uploaded_as_multipart(out, big_file):
    boundary = "----test" + secrets.token_hex(8)
    content = big_file.read_bytes()
    fields = {"bot": str(BOT), "chat_id": str(chat(7)), "caption": "uploaded"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="document"; '
        f'filename="upload.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body += content + f"\r\n--{boundary}--\r\n".encode()
    status, answer, _ = out.send_raw(body, f"multipart/form-data; boundary={boundary}")
    assert status == 200, answer
    assert answer["result"][0]["document"]["file_size"] == FIVE_MB
    assert answer["result"][0]["caption"] == "uploaded"
    received = out.sent(chat(7))[-1]["params"]["document"]
    assert received["upload"] == "upload.bin"
    assert received["size"] == FIVE_MB
    assert received["sha256"] == hashlib.sha256(content).hexdigest()
    # ... and by the file_id Telegram gave it
    file_id = answer["result"][0]["document"]["file_id"]
    status, again, _ = out.send({"bot": BOT, "chat_id": chat(8), "document": file_id})
    assert status == 200, again
    assert again["result"][0]["document"]["file_id"] == file_id


def test_a_missing_local_file_is_telegrams_400(out, big_file):
    # inside GATEWAY_MEDIA_DIRS (the outbox of big_file); outside it is the gateway's 400
    status, answer, _ = out.send(
        {"bot": BOT, "chat_id": chat(9), "document": str(big_file.parent / "nope.pdf")}
    )
    assert status == 400 and answer["description"] == "Bad Request: file not found"


# ---- idempotency ----------------------------------------------------------------------------
def test_same_idempotency_key_sends_once(out):
    body = {"bot": BOT, "chat_id": chat(10), "text": "exactly once"}
    key = "order-" + secrets.token_hex(6)
    first = out.send(body, key=key)
    second = out.send(body, key=key)
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    assert second[2].get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first[2]
    assert out.sent_texts(chat(10)) == ["exactly once"]


def test_a_retry_listing_the_fields_in_another_order_is_the_same_request(out):
    key = "order-" + secrets.token_hex(6)
    markup = {"inline_keyboard": [[{"text": "ok", "callback_data": "1"}]]}
    first = out.send(
        {"bot": BOT, "chat_id": chat(13), "text": "same", "reply_markup": markup}, key=key
    )
    again = {"reply_markup": {"inline_keyboard": [[{"callback_data": "1", "text": "ok"}]]}}
    second = out.send({**again, "text": "same", "chat_id": chat(13), "bot": BOT}, key=key)
    assert first[0] == second[0] == 200, second
    assert second[2].get("Idempotent-Replayed") == "true"
    assert out.sent_texts(chat(13)) == ["same"]


def test_concurrent_duplicates_send_once(out):
    body = {"bot": BOT, "chat_id": chat(11), "text": "racing duplicates"}
    key = "race-" + secrets.token_hex(6)
    answers: list[tuple[int, dict]] = []

    def call() -> None:
        status, answer, _ = out.send(body, key=key)
        answers.append((status, answer))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [status for status, _ in answers] == [200] * 8
    assert len({json.dumps(answer, sort_keys=True) for _, answer in answers}) == 1
    assert out.sent_texts(chat(11)) == ["racing duplicates"]


def test_key_reused_for_another_request_is_422(out):
    key = "reuse-" + secrets.token_hex(6)
    assert out.send({"bot": BOT, "chat_id": chat(12), "text": "a"}, key=key)[0] == 200
    status, answer, _ = out.send({"bot": BOT, "chat_id": chat(12), "text": "b"}, key=key)
    assert status == 422 and "different request" in answer["error"]
    assert out.sent_texts(chat(12)) == ["a"]


def test_a_telegram_refusal_is_remembered_too(out):
    key = "refused-" + secrets.token_hex(6)
    first = out.send({"bot": BOT, "chat_id": BLOCKED, "text": "x"}, key=key)
    second = out.send({"bot": BOT, "chat_id": BLOCKED, "text": "x"}, key=key)
    assert first[0] == second[0] == 403
    assert second[2].get("Idempotent-Replayed") == "true"


# ---- metrics ---------------------------------------------------------------------------------
def test_sends_are_counted(out):
    before = out.metric("telegram_gateway_sends_total", bot=str(BOT), method="sendMessage")
    started = time.monotonic()
    assert out.send({"bot": BOT, "chat_id": chat(13), "text": "count me"})[0] == 200
    after = out.metric("telegram_gateway_sends_total", bot=str(BOT), method="sendMessage")
    assert after == before + 1
    assert out.metric("telegram_gateway_botapi_429_total") == 0
    assert out.metric("telegram_gateway_send_wait_seconds_count", bot=str(BOT)) > 0
    assert time.monotonic() - started < 5
