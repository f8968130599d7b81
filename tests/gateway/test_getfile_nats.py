"""``getFile`` over NATS against the emulator in ``--local`` mode: the reply names the file
relative to the bot's folder and holds neither the token's secret nor its folder name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from outbound_fixtures import BOT, PRIVATE, outbound_stack

from harness.stack import Stack
from telegram_gateway.redact import bot_folder_names

pytestmark = pytest.mark.integration

SUBJECT = f"telegram.out.{BOT}.getFile"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    with outbound_stack(tmp_path_factory.mktemp("getfile")) as stack:
        yield stack


def get_file(stack: Stack, file_id: str) -> tuple[bytes, dict[str, Any]]:
    """The NATS reply to getFile: its bytes as an agent receives them, and parsed."""
    raw = stack.requester.request(SUBJECT, json.dumps({"file_id": file_id}).encode(), None, 60)
    return raw, json.loads(raw)


def assert_no_token(stack: Stack, raw: bytes) -> None:
    token = stack.tokens[BOT]
    assert token.split(":", 1)[1].encode() not in raw, "the bot's secret is in the reply"
    for folder in bot_folder_names(token):
        assert folder.encode() not in raw, "the bot's folder name is in the reply"
    assert b"~" not in raw


def served_path(stack: Stack, file_id: str) -> str:
    """What the Bot API server itself answers (the gateway's view, token in hand)."""
    status, envelope, _ = stack.emulator.call(stack.tokens[BOT], "getFile", file_id=file_id)
    assert status == 200 and envelope["ok"] is True, envelope
    return str(envelope["result"]["file_path"])


def bot_folder(stack: Stack, absolute: str) -> Path:
    """The bot's folder the server's absolute path runs through (``~`` or ``:`` form)."""
    for name in bot_folder_names(stack.tokens[BOT]):
        folder = stack.emulator.dir.resolve() / name
        if Path(absolute).resolve().is_relative_to(folder):
            return folder
    raise AssertionError(f"{absolute} is not in a folder named after the bot's token")


@pytest.mark.parametrize(
    ("kind", "data", "file_name", "mime_type"),
    [
        ("document", b"%PDF-1.4\n% getFile over NATS\n", "report.pdf", "application/pdf"),
        ("voice", b"OggS\x00\x02" + bytes(range(200)), None, "audio/ogg"),
        ("photo", b"\xff\xd8\xff\xe0" + b"\x10JFIF" * 40, None, None),
        ("video", b"\x00\x00\x00\x18ftypmp42" + bytes(300), "clip.mp4", "video/mp4"),
        ("audio", b"ID3\x04\x00" + bytes(range(256)), "song.mp3", "audio/mpeg"),
    ],
    ids=["document", "voice", "photo", "video", "audio"],
)
def test_get_file_over_nats_names_a_received_file_without_the_token(
    out, kind, data, file_name, mime_type
):
    injected = out.emulator.inject_file(
        out.tokens[BOT], kind, data, PRIVATE[60], file_name=file_name, mime_type=mime_type
    )
    absolute = served_path(out, injected["file_id"])
    raw, reply = get_file(out, injected["file_id"])

    assert reply["ok"] is True, reply
    assert_no_token(out, raw)
    result = reply["result"]
    relative = result["file_path"]
    assert not relative.startswith("/") and ".." not in Path(relative).parts
    folder = bot_folder(out, absolute)
    assert folder / relative == Path(absolute).resolve()
    assert (folder / relative).read_bytes() == data
    # the rest of the File object is the server's
    assert result["file_id"] == injected["file_id"]
    assert result["file_unique_id"] == injected["file_unique_id"]
    assert result["file_size"] == len(data)
    # the first line of defence did it: nothing was left for the second
    assert out.metric("telegram_gateway_reply_redactions_total") == 0


def test_a_file_the_bot_sent_from_a_local_path_keeps_that_path(out, tmp_path):
    # the server names the file where it read it: no token there, nothing to take away
    source = tmp_path / "outbox" / "sent.txt"
    source.parent.mkdir()
    source.write_bytes(b"sent from a local path")
    status, sent, _ = out.emulator.call(
        out.tokens[BOT], "sendDocument", chat_id=PRIVATE[61], document=source.as_uri()
    )
    assert status == 200, sent
    file_id = sent["result"]["document"]["file_id"]
    raw, reply = get_file(out, file_id)
    assert reply["ok"] is True, reply
    assert_no_token(out, raw)
    assert reply["result"]["file_path"] == served_path(out, file_id) == str(source)


def test_an_unknown_file_id_gets_the_bot_apis_error(out):
    raw, reply = get_file(out, "BQACAgIAAxkBAAnotafileidatall")
    assert reply == {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
    assert_no_token(out, raw)


def test_a_secret_in_any_answer_is_redacted_and_counted(out):
    # the Bot API echoes what it was sent: the second line of defence redacts it on the way back
    token = out.tokens[BOT]
    folder = token.replace(":", "~")
    before = out.metric("telegram_gateway_reply_redactions_total", method="sendMessage")
    raw = out.requester.request(
        f"telegram.out.{BOT}.sendMessage",
        json.dumps({"chat_id": PRIVATE[62], "text": f"/srv/{folder}/x and {token}"}).encode(),
        None,
        60,
    )
    reply = json.loads(raw)
    assert reply["ok"] is True, reply
    assert token.split(":", 1)[1].encode() not in raw
    assert reply["result"]["text"] == f"/srv/{BOT}~<redacted>/x and {BOT}:<redacted>"
    after = out.metric("telegram_gateway_reply_redactions_total", method="sendMessage")
    assert after == before + 1
