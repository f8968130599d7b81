"""No token in what the gateway passes on: getFile's ``file_path`` and the second line of
defence (:mod:`telegram_gateway.replies`), alone and through the sender as the NATS replies and
the ``/send`` answers are built from it."""

from __future__ import annotations

import json
import timeit
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness.tokens import fake_token
from telegram_gateway import metrics
from telegram_gateway.botapi import Reply
from telegram_gateway.config import BotConfig, load_settings
from telegram_gateway.nats_api import _reply_bytes
from telegram_gateway.outbound import Upload
from telegram_gateway.redact import REDACTED
from telegram_gateway.replies import WITHHELD, ReplyGuard, redact_json, relative_file_path
from telegram_gateway.sender import Sender
from telegram_gateway.web.send import outcome_of

pytestmark = pytest.mark.unit

BOT_ID = 740000001
OTHER_ID = 740000002


@pytest.fixture
def token() -> str:
    return fake_token(BOT_ID)


def secret(token: str) -> str:
    return token.split(":", 1)[1]


def reply(envelope: dict[str, Any]) -> Reply:
    return Reply(envelope, json.dumps(envelope).encode())


def redactions(bot_id: int, method: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "telegram_gateway_reply_redactions_total", {"bot": str(bot_id), "method": method}
    )
    return value or 0.0


# ---- getFile's file_path ----------------------------------------------------------------------
@pytest.mark.parametrize("separator", [":", "~"])
@pytest.mark.parametrize("test_dc", ["", "T"])
def test_a_local_mode_path_becomes_relative_to_the_bots_folder(token, separator, test_dc):
    folder = token.replace(":", separator) + (f"{separator}T" if test_dc else "")
    path = f"/var/lib/telegram-bot-api/{folder}/documents/file_3.pdf"
    assert relative_file_path(path, token) == "documents/file_3.pdf"


def test_a_relative_path_of_the_non_local_mode_is_kept(token):
    assert relative_file_path("voice/file_12.oga", token) == "voice/file_12.oga"


def test_an_absolute_path_outside_the_bots_folder_is_kept(token):
    # a file the bot sent from a local path: the server names where it read it
    assert relative_file_path("/srv/outbox/report.pdf", token) == "/srv/outbox/report.pdf"
    # another bot's folder is not this bot's (the second line of defence redacts it)
    other = fake_token(OTHER_ID).replace(":", "~")
    path = f"/var/lib/telegram-bot-api/{other}/photos/file_1.jpg"
    assert relative_file_path(path, token) == path


def test_a_folder_name_only_as_a_prefix_is_not_the_bots_folder(token):
    path = f"/var/lib/telegram-bot-api/{token.replace(':', '~')}X/photos/file_1.jpg"
    assert relative_file_path(path, token) == path


def test_get_file_answer_keeps_the_rest_of_the_file_object(token):
    result = {
        "file_id": "BQACAgIAAxkBAAIBZ2",
        "file_unique_id": "AgADZ2",
        "file_size": 1234,
        "file_path": f"/var/lib/telegram-bot-api/{token.replace(':', '~')}/documents/file_3.pdf",
    }
    cleaned = ReplyGuard([BotConfig(BOT_ID, token)]).clean(
        BotConfig(BOT_ID, token), "getFile", reply({"ok": True, "result": result})
    )
    assert cleaned.envelope == {
        "ok": True,
        "result": dict(result, file_path="documents/file_3.pdf"),
    }
    assert json.loads(cleaned.raw) == cleaned.envelope
    assert secret(token).encode() not in cleaned.raw and b"~" not in cleaned.raw


def test_a_non_local_get_file_answer_is_passed_on_as_served(token):
    bot = BotConfig(BOT_ID, token)
    served = Reply(
        {"ok": True, "result": {"file_id": "x", "file_path": "documents/file_3.pdf"}},
        b'{"ok":true,"result":{"file_id":"x","file_path":"documents/file_3.pdf"}}',
    )
    assert ReplyGuard([bot]).clean(bot, "getFile", served) is served


# ---- the second line of defence ---------------------------------------------------------------
def test_a_secret_anywhere_in_an_answer_is_redacted_nested_and_in_keys(token):
    other = fake_token(OTHER_ID)
    bot, other_bot = BotConfig(BOT_ID, token), BotConfig(OTHER_ID, other)
    envelope = {
        "ok": True,
        "result": {
            "text": f"see /bot{token}/logOut",
            "entities": [{"url": f"https://x.invalid/{secret(other)}?a=1"}],
            "deep": [[{"folder": f"/d/{token.replace(':', '~')}/photos/file_1.jpg"}]],
            secret(token): "as a key",
            "message_id": 7,
        },
    }
    before = redactions(BOT_ID, "sendMessage")
    cleaned = ReplyGuard([bot, other_bot]).clean(bot, "sendMessage", reply(envelope))
    for text in (secret(token), secret(other)):
        assert text.encode() not in cleaned.raw
        assert text not in json.dumps(cleaned.envelope)
    assert json.loads(cleaned.raw) == cleaned.envelope
    result = cleaned.envelope["result"]
    assert result["text"] == f"see /bot{BOT_ID}:{REDACTED}/logOut"
    assert result["entities"][0]["url"] == f"https://x.invalid/{REDACTED}?a=1"
    assert result["deep"][0][0]["folder"] == f"/d/{BOT_ID}~{REDACTED}/photos/file_1.jpg"
    assert result[REDACTED] == "as a key" and result["message_id"] == 7
    assert redactions(BOT_ID, "sendMessage") == before + 1


def test_an_error_description_with_a_secret_is_redacted(token, caplog):
    bot = BotConfig(BOT_ID, token)
    envelope = {"ok": False, "error_code": 400, "description": f"Bad Request: {secret(token)}"}
    with caplog.at_level("WARNING", logger="telegram_gateway.replies"):
        cleaned = ReplyGuard([bot]).clean(bot, "getChat", reply(envelope))
    assert cleaned.envelope == {
        "ok": False,
        "error_code": 400,
        "description": f"Bad Request: {REDACTED}",
    }
    assert "held a bot token's secret" in caplog.text and "getChat" in caplog.text
    assert secret(token) not in caplog.text


def test_a_clean_answer_is_passed_on_as_the_same_bytes(token):
    bot = BotConfig(BOT_ID, token)
    served = Reply({"ok": True, "result": True}, b'{"ok":true,"result":true}')
    assert ReplyGuard([bot]).clean(bot, "sendChatAction", served) is served


def test_a_secret_outside_any_string_withholds_the_answer():
    # a secret of digits only can hide in a JSON number, where no string redaction reaches it
    digits = "7" * 35
    bot = BotConfig(5, f"5:{digits}")
    served = Reply({"ok": True, "result": int(digits)}, f'{{"ok":true,"result":{digits}}}'.encode())
    cleaned = ReplyGuard([bot]).clean(bot, "getMe", served)
    assert cleaned.envelope == WITHHELD and digits.encode() not in cleaned.raw


def test_redact_json_leaves_other_values_alone(token):
    value = {"a": [1, 2.5, None, True, {"b": "plain"}]}
    assert redact_json(value, [secret(token)]) == value


# ---- through the sender: what NATS and /send are built from -----------------------------------
class FakeBotApi:
    """Answers every post with the envelope given for its method."""

    def __init__(self, answers: Mapping[str, dict[str, Any]]) -> None:
        self.answers = answers

    def post(
        self,
        token: str,
        method: str,
        params: Mapping[str, Any],
        upload: Upload | None = None,
        timeout: float = 30.0,
    ) -> Reply:
        return reply(self.answers[method])


def sender_for(tmp_path: Path, tokens: list[str], answers: Mapping[str, Any]) -> Sender:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKENS": ",".join(tokens),
            "GATEWAY_API_TOKEN": "a" * 24,
            "GATEWAY_STATE_DIR": str(tmp_path),
            "GATEWAY_SEND_PACING": "false",
        }
    )
    return Sender(settings, FakeBotApi(answers))  # type: ignore[arg-type]


def test_the_sender_answers_get_file_without_the_token_folder(tmp_path, token):
    path = f"{tmp_path}/api/{token.replace(':', '~')}/voice/file_9.oga"
    answer = {"ok": True, "result": {"file_id": "AwAC", "file_unique_id": "u", "file_path": path}}
    sender = sender_for(tmp_path, [token], {"getFile": answer})
    try:
        bot = sender.settings.bots[0]
        delivery = sender.send(bot, "getFile", [{"file_id": "AwAC"}])
    finally:
        sender.stop()
    nats_reply = _reply_bytes(delivery)
    assert secret(token).encode() not in nats_reply
    assert json.loads(nats_reply)["result"]["file_path"] == "voice/file_9.oga"


def test_the_sender_redacts_a_secret_for_nats_and_for_send(tmp_path, token):
    other = fake_token(OTHER_ID)
    message = {"message_id": 1, "chat": {"id": 5}, "text": f"tokens {token} and {other}"}
    refusal = {"ok": False, "error_code": 400, "description": f"Bad Request: {secret(other)}"}
    sender = sender_for(
        tmp_path,
        [token, other],
        {"sendMessage": {"ok": True, "result": message}, "sendPhoto": refusal},
    )
    try:
        bot = sender.settings.bots[0]
        sent = sender.send(bot, "sendMessage", [{"chat_id": 5, "text": "x"}])
        refused = sender.send(bot, "sendPhoto", [{"chat_id": 5, "photo": "AgAC"}])
    finally:
        sender.stop()
    for delivery in (sent, refused):
        answers = [_reply_bytes(delivery), json.dumps(outcome_of(delivery).body).encode()]
        for answer in answers:
            assert secret(token).encode() not in answer
            assert secret(other).encode() not in answer
    assert outcome_of(refused).body["description"] == f"Bad Request: {REDACTED}"


# ---- the cost on the hot path -----------------------------------------------------------------
def test_the_check_of_a_clean_answer_is_cheap(token):
    """One ``bytes in`` per configured token on a typical sendMessage answer (~400 bytes): far
    below the ~230 us of CPU a Bot API call costs the gateway (see botapi.py)."""
    bots = [BotConfig(BOT_ID + n, fake_token(BOT_ID + n)) for n in range(10)]
    guard = ReplyGuard(bots)
    message = {
        "message_id": 12345,
        "from": {"id": BOT_ID, "is_bot": True, "first_name": "Bot", "username": "a_bot"},
        "chat": {"id": 5100001, "first_name": "User", "username": "user", "type": "private"},
        "date": 1764536400,
        "text": "a reply of ordinary length " * 8,
    }
    served = reply({"ok": True, "result": message})
    runs = 20000
    seconds = min(timeit.repeat(lambda: guard.clean(bots[0], "sendMessage", served), number=runs))
    per_reply_us = seconds / runs * 1e6
    print(f"ReplyGuard.clean, 10 tokens, {len(served.raw)}-byte answer: {per_reply_us:.2f} us")
    assert per_reply_us < 20
