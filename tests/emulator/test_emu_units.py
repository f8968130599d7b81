"""Pure functions of the emulator: formatting, tokens, multipart, queues, flood windows."""

from __future__ import annotations

import asyncio
import base64
import binascii
import secrets

import pytest

from botapi_emulator.bots import BotState
from botapi_emulator.chats import ChatState, chat_type_by_id
from botapi_emulator.cli import Options
from botapi_emulator.emulator import Emulator
from botapi_emulator.encoding import utf16_len
from botapi_emulator.formatting import (
    EntityParseError,
    auto_entities,
    parse_html,
    parse_markdown,
    parse_markdown_v2,
)
from botapi_emulator.generator import UpdateGenerator
from botapi_emulator.httpserver import parse_multipart
from botapi_emulator.limits import FloodState, Limits
from botapi_emulator.methods import METHODS
from botapi_emulator.persistence import restore, snapshot
from botapi_emulator.protocol import flood_error
from botapi_emulator.service import is_loopback
from botapi_emulator.tokens import (
    BASE64URL_ALPHABET,
    TokenError,
    is_base64url,
    parse_token,
    redact_text,
)
from botapi_emulator.update_types import KNOWN_UPDATE_TYPES, update_type_of
from harness.tokens import fake_token
from telegram_gateway.config import ALL_UPDATE_TYPES
from telegram_gateway.nats_api import ALLOWED_METHODS
from telegram_gateway.outbound import MEDIA_METHODS

pytestmark = pytest.mark.unit


class TestFormatting:
    def test_html(self) -> None:
        text, entities = parse_html(
            '<b>a<i>b</i></b> &lt;x&gt; &#128512; <span class="tg-spoiler">s</span> '
            '<a href="tg://user?id=42">u</a> <pre><code class="language-py">p</code></pre>'
        )
        assert text == "ab <x> 😀 s u p"
        assert entities == [
            {"offset": 0, "length": 2, "type": "bold"},
            {"offset": 1, "length": 1, "type": "italic"},
            {"offset": 10, "length": 1, "type": "spoiler"},
            {"offset": 12, "length": 1, "type": "text_mention", "user": {"id": 42}},
            {"offset": 14, "length": 1, "type": "pre", "language": "py"},
        ]

    @pytest.mark.parametrize(
        ("source", "message"),
        [
            ("<x>a</x>", 'Unsupported start tag "x" at byte offset 0'),
            ("a</b>", "Unexpected end tag at byte offset 1"),
            ("<b>a</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
            ("<b", "Unclosed start tag at byte offset 0"),
            ("<span>x</span>", 'Unsupported start tag "span" at byte offset 0'),
        ],
    )
    def test_html_errors(self, source: str, message: str) -> None:
        with pytest.raises(EntityParseError, match=message.replace("/", ".")):
            parse_html(source)

    def test_markdown_v2(self) -> None:
        text, entities = parse_markdown_v2(
            "*bold _both_*\n[link](https://t\\.me) ```py\nx = 1\n``` \\!\n>quote"
        )
        assert text == "bold both\nlink x = 1\n !\nquote"
        assert [e["type"] for e in entities] == [
            "bold",
            "italic",
            "text_link",
            "pre",
            "blockquote",
        ]
        assert entities[2]["url"] == "https://t.me"
        assert entities[3]["language"] == "py"

    def test_markdown_v2_errors(self) -> None:
        with pytest.raises(EntityParseError, match="Character '!' is reserved"):
            parse_markdown_v2("hi!")
        with pytest.raises(EntityParseError, match="Can't find end of Bold"):
            parse_markdown_v2("*open")

    def test_legacy_markdown(self) -> None:
        text, entities = parse_markdown("_i_ *b* `c` \\* 🚀 [t](u)")
        assert text == "i b c * 🚀 t"
        assert [(e["type"], e["offset"]) for e in entities] == [
            ("italic", 0),
            ("bold", 2),
            ("code", 4),
            ("text_link", 11),
        ]

    def test_utf16_offsets_and_auto_entities(self) -> None:
        text = "🚀 /start@my_bot #tag @someone mail@example.org http://x.org/a."
        found = auto_entities(text, [])
        assert [(e["type"], e["offset"], e["length"]) for e in found] == [
            ("bot_command", 3, 13),
            ("hashtag", 17, 4),
            ("mention", 22, 8),
            ("email", 31, 16),
            ("url", 48, 14),
        ]
        assert utf16_len("a🚀") == 3

    def test_no_auto_entities_inside_code(self) -> None:
        existing = [{"offset": 0, "length": 6, "type": "code"}]
        assert auto_entities("/start", existing) == existing


class TestTokensAndRouting:
    def test_parse_token(self) -> None:
        assert parse_token("123:" + "a" * 24) == 123
        for token, status in [
            ("", 401),
            ("0123:" + "a" * 30, 401),
            ("12/3:" + "a" * 30, 401),
            ("x:" + "a" * 30, 421),
            ("-5:" + "a" * 30, 401),
            ("123:" + "a" * 23, 401),
            ("123:" + "a" * 81, 401),
            ("123:" + "a" * 29, 401),  # length mod 4 == 1
            ("123:" + "a" * 30, 401),  # last character not canonical
            ("123:" + "a" * 31, 401),
            ("123:" + "a" * 27 + "+", 401),
        ]:
            with pytest.raises(TokenError) as caught:
                parse_token(token)
            assert caught.value.status == status, token
            if token.startswith("123:") and len(token) <= 80:
                assert caught.value.description == "Unauthorized", token
        with pytest.raises(TokenError) as caught:
            parse_token("124:" + "a" * 32, 1, 2)
        assert caught.value.status == 421
        assert parse_token("123:" + "A" * 30) == parse_token("123:" + "Q" * 31) == 123
        assert parse_token("123:" + "A" * 26 + "==") == 123

    @pytest.mark.parametrize("length", range(33))
    def test_base64url_of_any_bytes_is_accepted(self, length: int) -> None:
        encoded = base64.urlsafe_b64encode(secrets.token_bytes(length)).decode()
        assert is_base64url(encoded)
        assert is_base64url(encoded.rstrip("="))

    def test_base64url_agrees_with_a_round_trip(self) -> None:
        """Canonical means: decoding and encoding again gives the same characters back."""

        def round_trips(text: str) -> bool:
            try:
                raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            except binascii.Error:
                return False
            return base64.urlsafe_b64encode(raw).decode().rstrip("=") == text

        for prefix in ("", "A", "Zm", "Zm9", "Zm9v"):
            for last in BASE64URL_ALPHABET:
                text = prefix + last
                assert is_base64url(text) == round_trips(text), text

    def test_base64url_padding_and_characters(self) -> None:
        for good in ("", "AA==", "AAA=", "AAAA", "AQ", "AAE", "-_-_"):
            assert is_base64url(good), good
        for bad in ("A", "AA=", "A===", "AAAA=", "=", "AB==", "AAF", "AA+/", "AA A", "AA.A"):
            assert not is_base64url(bad), bad

    def test_fake_tokens_are_well_formed(self) -> None:
        for bot_id in (1, 123456, (1 << 54) - 1):
            assert parse_token(fake_token(bot_id)) == bot_id

    def test_redaction(self) -> None:
        line = "GET /bot123456:" + "A" * 27 + "_-x/getMe"
        assert redact_text(line) == "GET /bot123456:<redacted>/getMe"

    def test_loopback_peers(self) -> None:
        for host in ("127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"):
            assert is_loopback(host)
        for host in ("10.0.0.1", "192.168.1.2", "::ffff:10.0.0.1", "fe80::1", ""):
            assert not is_loopback(host)

    def test_update_type(self) -> None:
        assert update_type_of({"update_id": 1, "x_new": {}, "message": {}}) == ("message")
        assert update_type_of({"update_id": 1, "brand_new": {}}) == "brand_new"

    def test_every_method_the_gateway_allows_is_implemented(self) -> None:
        implemented = {name for name, _ in METHODS.values()}
        assert set(ALLOWED_METHODS) - implemented == set()
        assert set(MEDIA_METHODS.values()) <= implemented

    def test_update_types_are_the_gateways(self) -> None:
        assert KNOWN_UPDATE_TYPES == ALL_UPDATE_TYPES

    def test_chat_type_by_id(self) -> None:
        assert chat_type_by_id(5) == "private"
        assert chat_type_by_id(-5) == "group"
        assert chat_type_by_id(-1001234567890) == "supergroup"


class TestMultipart:
    def test_parts(self) -> None:
        body = (
            b"preamble\r\n--XYZ\r\n"
            b'Content-Disposition: form-data; name="chat_id"\r\n\r\n42\r\n'
            b"--XYZ\r\n"
            b'Content-Disposition: form-data; name="document"; filename="a \\"b\\".txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nline1\r\n--XY not the end\r\n"
            b"--XYZ\r\n"
            b"Content-Disposition: form-data; name=\"n\"; filename*=UTF-8''%C3%A9.txt\r\n\r\n"
            b"\r\n--XYZ--\r\n"
        )
        parts = parse_multipart(body, b"XYZ")
        assert [(p.name, p.filename, p.data) for p in parts] == [
            ("chat_id", None, b"42"),
            ("document", 'a "b".txt', b"line1\r\n--XY not the end"),
            ("n", "é.txt", b""),
        ]
        assert parts[1].content_type == "text/plain"

    def test_malformed(self) -> None:
        for body in (b"no boundary", b"--XYZ\r\nContent-Disposition: form-data\r\n\r\nx"):
            with pytest.raises(ValueError):
                parse_multipart(body, b"XYZ")


def make_bot(count: int, types: list[str] | None = None):
    bot = BotState(
        id=1, token="1:" + "a" * 24, first_name="B", username="b_bot", next_update_id=100
    )
    for index in range(count):
        kind = types[index] if types else "message"
        bot.append_update(b'{"update_id":%d}' % (100 + index), kind)
    bot.next_update_id = 100 + count
    return bot


class TestQueue:
    def test_confirm_and_collect(self) -> None:
        bot = make_bot(10)
        assert len(bot.collect(3)) == 3
        assert bot.confirm(105) is True and bot.pending_count == 5
        assert bot.confirm(50) is False
        assert bot.confirm(-2) is True and bot.collect(100) == [
            b'{"update_id":108}',
            b'{"update_id":109}',
        ]
        assert bot.confirm(10_000) is True and bot.pending_count == 0

    def test_filtered_head_is_dropped(self) -> None:
        types = ["chat_member", "chat_member", "message", "chat_member", "message"]
        bot = make_bot(5, types)
        assert bot.collect(100) == [b'{"update_id":102}', b'{"update_id":104}']
        assert bot.first_pending_id() == 102
        bot.allowed_updates = ["chat_member"]
        assert bot.collect(1) == [b'{"update_id":103}']


class TestFlood:
    def test_windows(self) -> None:
        """Strict: measured at arrival, no tolerance."""
        limits = Limits()
        flood = FloodState()
        private = ChatState(1, "private")
        group = ChatState(-1, "group")
        now = 1000.0
        assert flood.wait(limits, private, now) == 0
        flood.commit(limits, private, now)
        assert flood.wait(limits, private, now) == pytest.approx(1.0)
        assert flood.wait(limits, private, now + 0.999) > 0
        assert flood.wait(limits, private, now + 1.0) == 0
        for step in range(20):
            assert flood.wait(limits, group, now + step) == 0
            flood.commit(limits, group, now + step)
        assert flood.wait(limits, group, now + 20) == pytest.approx(40.0)
        assert flood.wait(limits, group, now + 59.999) > 0
        assert flood.wait(limits, group, now + 60) == 0

    def test_an_album_needs_room_for_every_item(self) -> None:
        limits, flood = Limits(), FloodState()
        group, private = ChatState(-1, "group"), ChatState(1, "private")
        now = 1000.0
        flood.commit(limits, group, now, 15)
        assert flood.wait(limits, group, now, 5) == 0
        assert flood.wait(limits, group, now, 6) == pytest.approx(60.0)
        # a private chat: the album goes on one message's turn, each item then costs one
        flood.commit(limits, private, now, 10)
        assert flood.wait(limits, private, now) == pytest.approx(10.0)
        assert flood.wait(limits, private, now + 1, 5) == pytest.approx(9.0)
        assert flood.wait(limits, private, now + 10) == 0

    def test_retry_after_is_rounded_up(self) -> None:
        error = flood_error(0.2)
        assert error.parameters == {"retry_after": 1}
        assert flood_error(39.95).description == "Too Many Requests: retry after 40"


class TestPersistenceRoundTrip:
    def test_snapshot_restore(self, tmp_path) -> None:
        opts = Options(api_id=1, api_hash="h")

        async def build():
            emu = Emulator(opts, str(tmp_path), None)
            bot = emu.register_bot("77:" + "b" * 32)
            emu.register_chat(bot, {"id": 5, "blocked": True})
            emu.inject(bot, UpdateGenerator(bot, {"count": 5, "seed": 1}).generate())
            bot.confirm(bot.base_id + 2)
            return emu

        emu = asyncio.run(build())
        lines = b"".join(snapshot(emu)).split(b"\n")
        copy = Emulator(opts, str(tmp_path), None)
        assert restore(copy, [*lines, b"garbage"]) == len(lines) - 1
        original, restored = emu.bots[77], copy.bots[77]
        assert restored.history == original.history
        assert restored.history_types == original.history_types
        assert restored.pending_start == 2 and restored.next_update_id == original.next_update_id
        assert restored.chats[5].blocked is True
        assert {c: s.last_message_id for c, s in restored.chats.items()} == {
            c: s.last_message_id for c, s in original.chats.items()
        }
