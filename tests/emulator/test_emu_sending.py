"""sendMessage & co.: validation texts, formatting, media, edits, deletes, chat states."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from harness.emulator import (
    BotHandle,
    EmulatorProcess,
    encode_multipart,
    private_message,
    raw_request,
)

# what the methods answer, not how often they may be called (test_emu_limits)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("unlimited")]


@pytest.fixture
def chat(bot: BotHandle) -> int:
    bot.chat(4242, "private", first_name="Ann", username="ann_user")
    return 4242


class TestSendMessage:
    def test_result_is_a_realistic_message(self, bot: BotHandle, chat: int) -> None:
        first = bot.ok("sendMessage", chat_id=chat, text="hello", disable_notification=True)
        second = bot.ok("sendMessage", chat_id=str(chat), text="again")
        assert second["message_id"] == first["message_id"] + 1
        assert first["from"] == {
            "id": bot.id,
            "is_bot": True,
            "first_name": f"Emulated Bot {bot.id}",
            "username": f"emulated_{bot.id}_bot",
        }
        assert first["chat"] == {
            "id": chat,
            "first_name": "Ann",
            "username": "ann_user",
            "type": "private",
        }
        assert isinstance(first["date"], int) and first["text"] == "hello"
        records = bot.sent(chat_id=chat)
        assert [r["method"] for r in records] == ["sendMessage", "sendMessage"]
        assert records[0]["result"] == first and records[0]["params"]["text"] == "hello"
        assert records[1]["seq"] > records[0]["seq"]
        assert bot.sent(since=records[0]["seq"]) == [records[1]]

    def test_message_ids_are_per_chat(self, bot: BotHandle, chat: int) -> None:
        bot.chat(-555, "group", title="Team")
        assert bot.ok("sendMessage", chat_id=chat, text="a")["message_id"] == 1
        assert bot.ok("sendMessage", chat_id=-555, text="b")["message_id"] == 1
        bot.inject([private_message(chat, "from user", message_id=10)])
        assert bot.ok("sendMessage", chat_id=chat, text="c")["message_id"] == 11

    @pytest.mark.parametrize(
        ("params", "description"),
        [
            ({"text": "x"}, "Bad Request: chat_id is empty"),
            ({"chat_id": 4242}, "Bad Request: message text is empty"),
            ({"chat_id": 4242, "text": ""}, "Bad Request: message text is empty"),
            ({"chat_id": 4242, "text": "  \n "}, "Bad Request: message text is empty"),
            ({"chat_id": 4242, "text": "x" * 4097}, "Bad Request: message is too long"),
            ({"chat_id": 999, "text": "x"}, "Bad Request: chat not found"),
            ({"chat_id": "@nobody", "text": "x"}, "Bad Request: chat not found"),
            ({"chat_id": "abc", "text": "x"}, "Bad Request: chat not found"),
            (
                {"chat_id": 4242, "text": "<b>x", "parse_mode": "HTML"},
                "Bad Request: can't parse entities: "
                'Can\'t find end tag corresponding to start tag "b"',
            ),
            (
                {"chat_id": 4242, "text": "a.b", "parse_mode": "MarkdownV2"},
                "Bad Request: can't parse entities: Character '.' is reserved and must be "
                "escaped with the preceding '\\'",
            ),
            (
                {"chat_id": 4242, "text": "*x", "parse_mode": "Markdown"},
                "Bad Request: can't parse entities: Can't find end of the entity starting at "
                "byte offset 0",
            ),
            (
                {"chat_id": 4242, "text": "x", "parse_mode": "BBCode"},
                "Bad Request: unsupported parse_mode",
            ),
            (
                {"chat_id": 4242, "text": "x", "reply_markup": "{nope"},
                "Bad Request: can't parse reply keyboard markup JSON object",
            ),
            (
                {"chat_id": 4242, "text": "x", "reply_to_message_id": 77},
                "Bad Request: message to be replied not found",
            ),
            (
                {
                    "chat_id": 4242,
                    "text": "x",
                    "reply_markup": {
                        "inline_keyboard": [[{"text": "t", "callback_data": "d" * 65}]]
                    },
                },
                "Bad Request: BUTTON_DATA_INVALID",
            ),
        ],
    )
    def test_validation_errors(
        self, bot: BotHandle, chat: int, params: dict[str, Any], description: str
    ) -> None:
        assert bot.error("sendMessage", **params)[:2] == (400, description)
        assert bot.sent() == []

    def test_length_limit_is_inclusive_and_counts_after_parsing(
        self, bot: BotHandle, chat: int
    ) -> None:
        assert len(bot.ok("sendMessage", chat_id=chat, text="é" * 4096)["text"]) == 4096
        text = "<b>" + "x" * 4096 + "</b>"
        assert (
            len(bot.ok("sendMessage", chat_id=chat, text=text, parse_mode="HTML")["text"]) == 4096
        )

    def test_parse_modes_produce_entities(self, bot: BotHandle, chat: int) -> None:
        html = bot.ok(
            "sendMessage",
            chat_id=chat,
            text='<b>bold</b> &amp; <a href="https://t.me">link</a> 🚀<i>it</i>',
            parse_mode="HTML",
        )
        assert html["text"] == "bold & link 🚀it"
        assert html["entities"] == [
            {"offset": 0, "length": 4, "type": "bold"},
            {"offset": 7, "length": 4, "type": "text_link", "url": "https://t.me"},
            {"offset": 14, "length": 2, "type": "italic"},
        ]
        v2 = bot.ok(
            "sendMessage",
            chat_id=chat,
            text="*b* _i_ __u__ ||s|| `c` 1\\.5",
            parse_mode="MarkdownV2",
        )
        assert v2["text"] == "b i u s c 1.5"
        assert [e["type"] for e in v2["entities"]] == [
            "bold",
            "italic",
            "underline",
            "spoiler",
            "code",
        ]
        legacy = bot.ok(
            "sendMessage", chat_id=chat, text="*b* [t](http://x.org)", parse_mode="Markdown"
        )
        assert legacy["text"] == "b t"
        assert legacy["entities"][1] == {
            "offset": 2,
            "length": 1,
            "type": "text_link",
            "url": "http://x.org",
        }

    def test_explicit_entities_and_auto_detection(self, bot: BotHandle, chat: int) -> None:
        entities = [{"type": "bold", "offset": 0, "length": 3}]
        result = bot.ok(
            "sendMessage", chat_id=chat, text="hey /start https://example.org", entities=entities
        )
        assert result["entities"] == [
            {"type": "bold", "offset": 0, "length": 3},
            {"offset": 4, "length": 6, "type": "bot_command"},
            {"offset": 11, "length": 19, "type": "url"},
        ]

    def test_reply_thread_markup_and_preview_are_reflected(self, bot: BotHandle) -> None:
        bot.chat(-1001234567890, "supergroup", title="Forum", is_forum=True)
        original = bot.ok("sendMessage", chat_id=-1001234567890, text="original")
        markup = {"inline_keyboard": [[{"text": "Open", "url": "https://example.org"}]]}
        reply = bot.ok(
            "sendMessage",
            chat_id=-1001234567890,
            text="reply",
            message_thread_id=7,
            reply_parameters={"message_id": original["message_id"]},
            reply_markup=markup,
            link_preview_options={"is_disabled": True},
            protect_content=True,
        )
        assert reply["message_thread_id"] == 7 and reply["is_topic_message"] is True
        assert reply["reply_to_message"]["message_id"] == original["message_id"]
        assert reply["reply_to_message"]["text"] == "original"
        assert reply["reply_markup"] == markup
        assert reply["link_preview_options"] == {"is_disabled": True}
        assert reply["has_protected_content"] is True
        legacy = bot.ok(
            "sendMessage",
            chat_id=-1001234567890,
            text="legacy reply",
            reply_to_message_id=original["message_id"],
        )
        assert legacy["reply_to_message"]["message_id"] == original["message_id"]
        loose = bot.ok(
            "sendMessage",
            chat_id=-1001234567890,
            text="no target",
            reply_parameters={"message_id": 9999, "allow_sending_without_reply": True},
        )
        assert "reply_to_message" not in loose

    def test_chat_kinds(self, bot: BotHandle) -> None:
        bot.chat(-100777000111, "channel", title="News", username="news_chan")
        post = bot.ok("sendMessage", chat_id="@news_chan", text="post")
        assert "from" not in post and post["sender_chat"]["id"] == -100777000111
        assert post["chat"]["type"] == "channel"
        bot.chat(-123)
        assert bot.ok("sendMessage", chat_id=-123, text="g")["chat"]["type"] == "group"
        bot.chat(-1009999999999)
        assert (
            bot.ok("sendMessage", chat_id=-1009999999999, text="s")["chat"]["type"] == "supergroup"
        )

    def test_blocked_user_and_kicked_bot(self, bot: BotHandle, chat: int) -> None:
        bot.chat(chat, blocked=True)
        status, description, _ = bot.error("sendMessage", chat_id=chat, text="x")
        assert (status, description) == (403, "Forbidden: bot was blocked by the user")
        assert bot.error("sendChatAction", chat_id=chat, action="typing")[0] == 403
        bot.chat(-4000000001, "group", blocked=True)
        assert bot.error("sendMessage", chat_id=-4000000001, text="x")[:2] == (
            403,
            "Forbidden: bot was kicked from the group chat",
        )
        bot.chat(chat, blocked=False)
        bot.ok("sendMessage", chat_id=chat, text="unblocked")

    def test_migrated_group(self, bot: BotHandle) -> None:
        bot.chat(-4000000002, "group", migrate_to_chat_id=-1004000000002)
        status, description, body = bot.error("sendMessage", chat_id=-4000000002, text="x")
        assert (status, description) == (
            400,
            "Bad Request: group chat was upgraded to a supergroup chat",
        )
        assert body["parameters"] == {"migrate_to_chat_id": -1004000000002}

    def test_chats_known_from_injected_updates(self, bot: BotHandle) -> None:
        assert bot.error("sendMessage", chat_id=31, text="x")[1] == "Bad Request: chat not found"
        bot.inject([private_message(31, "hi")])
        assert bot.ok("sendMessage", chat_id=31, text="x")["chat"]["first_name"] == "Tester"


class TestOtherMethods:
    def test_send_chat_action(self, bot: BotHandle, chat: int) -> None:
        assert bot.ok("sendChatAction", chat_id=chat, action="typing") is True
        status, description, _ = bot.error("sendChatAction", chat_id=chat, action="dancing")
        assert (status, description) == (400, "Bad Request: wrong parameter action in request")
        assert bot.sent(method="sendChatAction")[0]["result"] is True

    def test_edit_message_text(self, bot: BotHandle, chat: int) -> None:
        sent = bot.ok("sendMessage", chat_id=chat, text="draft")
        edited = bot.ok(
            "editMessageText",
            chat_id=chat,
            message_id=sent["message_id"],
            text="<i>final</i>",
            parse_mode="HTML",
        )
        assert edited["message_id"] == sent["message_id"] and edited["text"] == "final"
        assert edited["entities"] == [{"offset": 0, "length": 5, "type": "italic"}]
        assert isinstance(edited["edit_date"], int)
        again = bot.error(
            "editMessageText",
            chat_id=chat,
            message_id=sent["message_id"],
            text="<i>final</i>",
            parse_mode="HTML",
        )
        assert again[1].startswith("Bad Request: message is not modified")
        assert bot.error("editMessageText", chat_id=chat, message_id=999, text="x")[1] == (
            "Bad Request: message to edit not found"
        )
        assert bot.error("editMessageText", chat_id=chat, text="x")[1] == (
            "Bad Request: message identifier is not specified"
        )
        bot.inject([private_message(chat, "user text", message_id=50)])
        assert bot.error("editMessageText", chat_id=chat, message_id=50, text="x")[1] == (
            "Bad Request: message can't be edited"
        )
        assert sent == bot.sent()[0]["result"]

    def test_delete_message(self, bot: BotHandle, chat: int) -> None:
        sent = bot.ok("sendMessage", chat_id=chat, text="bye")
        assert bot.ok("deleteMessage", chat_id=chat, message_id=sent["message_id"]) is True
        assert bot.error("deleteMessage", chat_id=chat, message_id=sent["message_id"])[1] == (
            "Bad Request: message to delete not found"
        )
        assert bot.error("editMessageText", chat_id=chat, message_id=sent["message_id"], text="x")[
            1
        ] == ("Bad Request: message to edit not found")
        assert bot.error("deleteMessage", chat_id=chat, message_id=12345)[0] == 400

    def test_answer_callback_query(self, bot: BotHandle) -> None:
        bot.emu.generate(bot.id, 1, kinds=["callback_query"])
        query = bot.ok("getUpdates")[0]["callback_query"]
        assert bot.ok("answerCallbackQuery", callback_query_id=query["id"], text="ok") is True
        status, description, _ = bot.error("answerCallbackQuery", callback_query_id=query["id"])
        assert status == 400 and description.startswith("Bad Request: query is too old")

    def test_get_chat(self, bot: BotHandle, chat: int) -> None:
        info = bot.ok("getChat", chat_id=chat)
        assert info["id"] == chat and info["type"] == "private" and info["first_name"] == "Ann"
        assert bot.error("getChat", chat_id=1)[1] == "Bad Request: chat not found"

    def test_copy_and_forward(self, bot: BotHandle, chat: int) -> None:
        bot.chat(-777, "group")
        source = bot.ok("sendMessage", chat_id=chat, text="copy me")
        copied = bot.ok(
            "copyMessage", chat_id=-777, from_chat_id=chat, message_id=source["message_id"]
        )
        assert copied == {"message_id": 1}
        forwarded = bot.ok(
            "forwardMessage", chat_id=-777, from_chat_id=chat, message_id=source["message_id"]
        )
        assert forwarded["text"] == "copy me" and forwarded["forward_origin"]["type"] == "user"
        assert bot.error("copyMessage", chat_id=-777, from_chat_id=chat, message_id=99)[1] == (
            "Bad Request: message to copy not found"
        )


class TestMedia:
    def test_photo_upload_then_file_id_then_url(
        self, bot: BotHandle, chat: int, tmp_path: Path
    ) -> None:
        body, content_type = encode_multipart(
            {"chat_id": str(chat), "caption": "a cat"},
            {"photo": ("cat.jpg", os.urandom(5000), "image/jpeg")},
        )
        status, _, raw = raw_request(
            bot.emu.port,
            "POST",
            f"/bot{bot.token}/sendPhoto",
            body,
            {"Content-Type": content_type},
        )
        assert status == 200
        uploaded = json.loads(raw)["result"]
        sizes = uploaded["photo"]
        assert len(sizes) == 3 and sizes[-1]["file_size"] == 5000
        assert all({"file_id", "file_unique_id", "width", "height"} <= set(s) for s in sizes)
        assert uploaded["caption"] == "a cat"
        again = bot.ok("sendPhoto", chat_id=chat, photo=sizes[-1]["file_id"])
        assert again["photo"][-1]["file_unique_id"] == sizes[-1]["file_unique_id"]
        by_url = bot.ok("sendPhoto", chat_id=chat, photo="https://example.org/a.jpg")
        assert by_url["photo"][-1]["file_size"] > 0
        assert (
            bot.error("sendPhoto", chat_id=chat)[1]
            == "Bad Request: there is no photo in the request"
        )
        assert bot.error("sendPhoto", chat_id=chat, photo="bad id!")[1] == (
            "Bad Request: wrong file identifier/HTTP URL specified"
        )

    def test_local_paths(self, bot: BotHandle, chat: int, tmp_path: Path) -> None:
        document = tmp_path / "report.pdf"
        document.write_bytes(b"%PDF-1.4 emulator")
        result = bot.ok("sendDocument", chat_id=chat, document=f"file://{document}")
        assert result["document"]["file_name"] == "report.pdf"
        assert result["document"]["mime_type"] == "application/pdf"
        assert result["document"]["file_size"] == len(b"%PDF-1.4 emulator")
        info = bot.ok("getFile", file_id=result["document"]["file_id"])
        assert info["file_path"] == str(document)
        status, description, _ = bot.error(
            "sendDocument", chat_id=chat, document=str(tmp_path / "missing.pdf")
        )
        assert (status, description) == (400, "Bad Request: file not found")
        empty = tmp_path / "empty.txt"
        empty.write_bytes(b"")
        assert bot.error("sendDocument", chat_id=chat, document=str(empty))[1] == (
            "Bad Request: file must be non-empty"
        )

    @pytest.mark.parametrize("kind", ["audio", "video", "voice", "animation", "document"])
    def test_each_media_method(self, bot: BotHandle, chat: int, kind: str) -> None:
        method = f"send{kind.capitalize()}"
        result = bot.ok(
            method,
            chat_id=chat,
            caption="c",
            duration=3,
            **{kind: f"https://example.org/x/{kind}.bin"},
        )
        media = result[kind]
        assert media["file_id"] and media["file_unique_id"] and media["file_size"] > 0
        if kind != "document":
            assert media["duration"] == 3
        if kind == "animation":
            assert result["document"]["file_id"] == media["file_id"]
        assert bot.sent()[-1]["method"] == method

    def test_caption_limit(self, bot: BotHandle, chat: int) -> None:
        url = "https://example.org/p.png"
        assert (
            bot.ok("sendPhoto", chat_id=chat, photo=url, caption="c" * 1024)["caption"]
            == "c" * 1024
        )
        status, description, _ = bot.error("sendPhoto", chat_id=chat, photo=url, caption="c" * 1025)
        assert (status, description) == (400, "Bad Request: message caption is too long")


@pytest.mark.integration
def test_local_paths_need_local_mode(tmp_path: Path) -> None:
    document = tmp_path / "doc.txt"
    document.write_text("local")
    with EmulatorProcess(tmp_path / "state", local=False) as emu:
        handle = BotHandle.register(emu)
        handle.chat(5)
        for value in (str(document), f"file://{document}"):
            status, description, _ = handle.error("sendDocument", chat_id=5, document=value)
            assert (status, description) == (
                400,
                "Bad Request: wrong file identifier/HTTP URL specified",
            )
        status, description, _ = handle.error("setWebhook", url="http://example.org/hook")
        assert status == 400 and "HTTPS" in description
        body, content_type = encode_multipart(
            {"chat_id": "5"}, {"document": ("notes.txt", b"downloadable", "text/plain")}
        )
        status, _, raw = raw_request(
            emu.port,
            "POST",
            f"/bot{handle.token}/sendDocument",
            body,
            {"Content-Type": content_type},
        )
        file_id = json.loads(raw)["result"]["document"]["file_id"]
        file_path = handle.ok("getFile", file_id=file_id)["file_path"]
        assert not file_path.startswith("/")
        status, _, data = raw_request(emu.port, "GET", f"/file/bot{handle.token}/{file_path}")
        assert (status, data) == (200, b"downloadable")
        assert raw_request(emu.port, "GET", f"/file/bot{handle.token}/nope")[0] == 404
        assert handle.error("getFile", file_id="x" * 30)[1] == "Bad Request: invalid file_id"
        too_big = f"Content-Length: {60 * 1024 * 1024}\r\nContent-Type: multipart/form-data"
        head = f"POST /bot{handle.token}/sendDocument HTTP/1.1\r\n{too_big}\r\n\r\n"
        with socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock:
            sock.sendall(head.encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 413 Request Entity Too Large")
