"""Everything the emulator serves parses with typed models of the current Bot API.

aiogram (a maintained Bot API client library, pinned in requirements-dev.txt) ships pydantic
models of every Bot API object and, per method, the type of its result: an object the
emulator serves must validate against them (required fields present, types right) and carry
no field the Bot API does not have (aiogram's models accept unknown fields, so that is
checked here). The emulator itself stays standard-library only; only this test uses the
library.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiogram
import aiogram.methods
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from botapi_emulator.generator import GENERATED_KINDS
from botapi_emulator.methods import METHODS
from botapi_emulator.update_types import KNOWN_UPDATE_TYPES
from harness.emulator import BotHandle, encode_multipart, private_message, raw_request

# what the methods answer, not how often they may be called (test_emu_limits)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("unlimited")]

PRIVATE = 4242
GROUP = -555
SUPERGROUP = -1001000000001
CHANNEL = -1002000000001
URL = "https://example.org/files/"


def unknown_fields(value: Any, path: str = "result") -> list[str]:
    """Every field of a parsed value that the Bot API's models do not define."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{name}" for name in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found += unknown_fields(item, f"{path}[{index}]")
    return found


def parse_result(method: str, result: Any) -> Any:
    """``result`` parsed as aiogram parses the answer of ``method``; fails on any mismatch."""
    model = getattr(aiogram.methods, method[0].upper() + method[1:])
    try:
        parsed = TypeAdapter(model.__returning__).validate_python(result)
    except ValidationError as exc:
        pytest.fail(f"{method} answered what the Bot API models refuse:\n{exc}\n{result}")
    assert unknown_fields(parsed) == [], (method, result)
    return parsed


@dataclass
class Scene:
    """A bot with one chat of each type, a user message, a callback and an inline query."""

    bot: BotHandle
    callback_query_id: str
    inline_query_id: str
    answers: list[tuple[str, Any]] = field(default_factory=list)

    def ok(self, method: str, **params: Any) -> Any:
        result = self.bot.ok(method, **params)
        self.answers.append((method, result))
        return result

    def upload(self, method: str, field: str, data: bytes, name: str, **fields: Any) -> Any:
        body, content_type = encode_multipart(
            {key: str(value) for key, value in fields.items()},
            {field: (name, data, "application/octet-stream")},
        )
        path = f"/bot{self.bot.token}/{method}"
        status, _, raw = raw_request(
            self.bot.emu.port, "POST", path, body, {"Content-Type": content_type}
        )
        envelope = json.loads(raw)
        assert status == 200 and envelope["ok"] is True, envelope
        self.answers.append((method, envelope["result"]))
        return envelope["result"]


@pytest.fixture
def scene(bot: BotHandle) -> Scene:
    bot.chat(PRIVATE, "private", first_name="Ann", username="ann_user")
    bot.chat(GROUP, "group", title="Team")
    bot.chat(SUPERGROUP, "supergroup", title="Forum", is_forum=True)
    bot.chat(CHANNEL, "channel", title="News", username="news_channel")
    user = {"id": PRIVATE, "is_bot": False, "first_name": "Ann"}
    bot.inject(
        [
            private_message(PRIVATE, "hello", message_id=10),
            {"inline_query": {"id": "4711", "from": user, "query": "cats", "offset": ""}},
        ]
    )
    bot.emu.generate(bot.id, 1, kinds=["callback_query"], chat_ids=[PRIVATE])
    updates = bot.ok("getUpdates")
    callback = next(u["callback_query"]["id"] for u in updates if "callback_query" in u)
    bot.ok("getUpdates", offset=updates[-1]["update_id"] + 1, timeout=0)
    return Scene(bot, callback, "4711")


def _send_message(s: Scene) -> object:
    markup = {"inline_keyboard": [[{"text": "Open", "url": "https://example.org"}]]}
    return [
        s.ok("sendMessage", chat_id=PRIVATE, text="plain /start @ann https://example.org"),
        s.ok(
            "sendMessage",
            chat_id=PRIVATE,
            text="<b>bold</b> <a href='https://example.org'>link</a> <tg-spoiler>s</tg-spoiler>",
            parse_mode="HTML",
            reply_markup=markup,
            reply_parameters={"message_id": 10},
            link_preview_options={"is_disabled": True},
            protect_content=True,
        ),
        s.ok("sendMessage", chat_id=SUPERGROUP, text="*topic*", parse_mode="MarkdownV2"),
        s.ok("sendMessage", chat_id=SUPERGROUP, text="in a topic", message_thread_id=5),
        s.ok("sendMessage", chat_id=CHANNEL, text="_news_", parse_mode="Markdown"),
        s.ok("sendMessage", chat_id=GROUP, text="group"),
    ]


def _media(kind: str, extension: str) -> Callable[[Scene], object]:
    method = f"send{kind.capitalize()}"

    def recipe(s: Scene) -> object:
        return [
            s.ok(
                method,
                chat_id=PRIVATE,
                **{kind: f"{URL}{kind}.{extension}"},
                caption="<i>caption</i>",
                parse_mode="HTML",
            ),
            s.upload(method, kind, b"\x00data" * 100, f"{kind}.{extension}", chat_id=CHANNEL),
        ]

    return recipe


def _get_updates(s: Scene) -> object:
    s.bot.emu.generate(s.bot.id, 30, kinds=GENERATED_KINDS, chat_ids=[PRIVATE, GROUP])
    return [s.ok("getUpdates", allowed_updates=list(KNOWN_UPDATE_TYPES))]


def _webhook(s: Scene) -> object:
    return [
        s.ok("setWebhook", url="https://example.org/hook", max_connections=5),
        s.ok("getWebhookInfo"),
        s.ok("deleteWebhook", drop_pending_updates=True),
        s.ok("getWebhookInfo"),
    ]


def _edit_text(s: Scene) -> object:
    sent = s.ok("sendMessage", chat_id=PRIVATE, text="before")
    return [s.ok("editMessageText", chat_id=PRIVATE, message_id=sent["message_id"], text="after")]


def _edit_caption(s: Scene) -> object:
    sent = s.ok("sendPhoto", chat_id=PRIVATE, photo=URL + "a.jpg", caption="before")
    message_id = sent["message_id"]
    return [
        s.ok(
            "editMessageCaption",
            chat_id=PRIVATE,
            message_id=message_id,
            caption="<b>after</b>",
            parse_mode="HTML",
        ),
    ]


def _edit_media(s: Scene) -> object:
    sent = s.ok("sendPhoto", chat_id=PRIVATE, photo=URL + "a.jpg")
    media = {"type": "video", "media": URL + "b.mp4", "caption": "now a video"}
    return [s.ok("editMessageMedia", chat_id=PRIVATE, message_id=sent["message_id"], media=media)]


def _edit_markup(s: Scene) -> object:
    sent = s.ok("sendMessage", chat_id=GROUP, text="vote")
    markup = {"inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]}
    return [
        s.ok(
            "editMessageReplyMarkup",
            chat_id=GROUP,
            message_id=sent["message_id"],
            reply_markup=markup,
        ),
    ]


def _delete(s: Scene) -> object:
    ids = [s.ok("sendMessage", chat_id=PRIVATE, text=str(n))["message_id"] for n in range(3)]
    return [
        s.ok("deleteMessage", chat_id=PRIVATE, message_id=ids[0]),
        s.ok("deleteMessages", chat_id=PRIVATE, message_ids=ids[1:]),
    ]


def _pin(s: Scene) -> object:
    sent = s.ok("sendMessage", chat_id=GROUP, text="pin me")
    return [
        s.ok("pinChatMessage", chat_id=GROUP, message_id=sent["message_id"]),
        s.ok("unpinChatMessage", chat_id=GROUP, message_id=sent["message_id"]),
        s.ok("unpinChatMessage", chat_id=GROUP),
    ]


def _reaction(s: Scene) -> object:
    return [
        s.ok(
            "setMessageReaction",
            chat_id=PRIVATE,
            message_id=10,
            reaction=[{"type": "emoji", "emoji": "👍"}],
        ),
        s.ok("setMessageReaction", chat_id=PRIVATE, message_id=10),
    ]


def _copy(s: Scene) -> object:
    return [s.ok("copyMessage", chat_id=GROUP, from_chat_id=PRIVATE, message_id=10)]


def _forward(s: Scene) -> object:
    post = s.ok("sendMessage", chat_id=CHANNEL, text="post")
    return [
        s.ok("forwardMessage", chat_id=GROUP, from_chat_id=PRIVATE, message_id=10),
        s.ok("forwardMessage", chat_id=GROUP, from_chat_id=CHANNEL, message_id=post["message_id"]),
    ]


def _get_file(s: Scene) -> object:
    sent = s.upload("sendDocument", "document", b"%PDF-1.4 x", "a.pdf", chat_id=PRIVATE)
    return [s.ok("getFile", file_id=sent["document"]["file_id"])]


def _media_group(s: Scene) -> object:
    media = [
        {"type": "photo", "media": URL + "1.jpg", "caption": "<b>one</b>", "parse_mode": "HTML"},
        {"type": "video", "media": URL + "2.mp4"},
    ]
    documents = [{"type": "document", "media": URL + f"{n}.pdf"} for n in range(3)]
    return [
        s.ok("sendMediaGroup", chat_id=PRIVATE, media=media),
        s.ok("sendMediaGroup", chat_id=CHANNEL, media=documents),
    ]


def _poll(s: Scene) -> object:
    return [
        s.ok("sendPoll", chat_id=GROUP, question="Lunch?", options=["Pizza", "Sushi"]),
        s.ok(
            "sendPoll",
            chat_id=SUPERGROUP,
            question="2 + 2?",
            options=[{"text": "3"}, {"text": "4"}, {"text": "5"}],
            type="quiz",
            correct_option_id=1,
            is_anonymous=False,
            explanation="<b>four</b>",
            explanation_parse_mode="HTML",
        ),
    ]


RECIPES: dict[str, Callable[[Scene], object]] = {
    "getMe": lambda s: [s.ok("getMe")],
    "getUpdates": _get_updates,
    "setWebhook": _webhook,
    "deleteWebhook": _webhook,
    "getWebhookInfo": _webhook,
    "logOut": lambda s: [s.ok("logOut")],
    "close": lambda s: [s.ok("close")],
    "sendMessage": _send_message,
    "sendPhoto": _media("photo", "jpg"),
    "sendDocument": _media("document", "pdf"),
    "sendAudio": _media("audio", "mp3"),
    "sendVideo": _media("video", "mp4"),
    "sendVoice": _media("voice", "ogg"),
    "sendAnimation": _media("animation", "gif"),
    "sendVideoNote": lambda s: [
        s.upload(
            "sendVideoNote",
            "video_note",
            b"\x00note" * 50,
            "n.mp4",
            chat_id=PRIVATE,
            length=240,
            duration=3,
        ),
    ],
    "sendSticker": lambda s: [
        s.ok("sendSticker", chat_id=PRIVATE, sticker=URL + "s.webp", emoji="😀"),
        s.upload("sendSticker", "sticker", b"RIFF0000WEBP", "s.webp", chat_id=GROUP),
    ],
    "sendMediaGroup": _media_group,
    "sendLocation": lambda s: [
        s.ok("sendLocation", chat_id=PRIVATE, latitude=52.52, longitude=13.405),
        s.ok(
            "sendLocation",
            chat_id=GROUP,
            latitude="-33.86",
            longitude="151.2",
            live_period=60,
            heading=90,
            horizontal_accuracy=15.5,
        ),
    ],
    "sendVenue": lambda s: [
        s.ok(
            "sendVenue",
            chat_id=PRIVATE,
            latitude=48.8584,
            longitude=2.2945,
            title="Eiffel Tower",
            address="Champ de Mars",
            foursquare_id="4adcda",
        ),
    ],
    "sendContact": lambda s: [
        s.ok(
            "sendContact",
            chat_id=PRIVATE,
            phone_number="+49 30 1234567",
            first_name="Max",
            last_name="Muster",
        ),
    ],
    "sendPoll": _poll,
    "sendDice": lambda s: [
        s.ok("sendDice", chat_id=PRIVATE),
        s.ok("sendDice", chat_id=GROUP, emoji="🎰"),
        s.ok("sendDice", chat_id=GROUP, emoji="⚽"),
    ],
    "sendChatAction": lambda s: [s.ok("sendChatAction", chat_id=PRIVATE, action="typing")],
    "editMessageText": _edit_text,
    "editMessageCaption": _edit_caption,
    "editMessageMedia": _edit_media,
    "editMessageReplyMarkup": _edit_markup,
    "deleteMessage": _delete,
    "deleteMessages": _delete,
    "pinChatMessage": _pin,
    "unpinChatMessage": _pin,
    "setMessageReaction": _reaction,
    "answerCallbackQuery": lambda s: [
        s.ok("answerCallbackQuery", callback_query_id=s.callback_query_id, text="done"),
    ],
    "answerInlineQuery": lambda s: [
        s.ok(
            "answerInlineQuery",
            inline_query_id=s.inline_query_id,
            results=[
                {
                    "type": "article",
                    "id": "1",
                    "title": "Cats",
                    "input_message_content": {"message_text": "cats"},
                }
            ],
        ),
    ],
    "getChat": lambda s: (
        [s.ok("getChat", chat_id=c) for c in (PRIVATE, GROUP, SUPERGROUP)]
        + [s.ok("getChat", chat_id="@news_channel")]
    ),
    "getChatMember": lambda s: [
        s.ok("getChatMember", chat_id=PRIVATE, user_id=PRIVATE),
        s.ok("getChatMember", chat_id=GROUP, user_id=s.bot.id),
        s.ok("getChatMember", chat_id=CHANNEL, user_id=s.bot.id),
    ],
    "copyMessage": _copy,
    "forwardMessage": _forward,
    "getFile": _get_file,
}


def test_every_method_has_a_recipe() -> None:
    assert sorted(RECIPES) == sorted(name for name, _ in METHODS.values())


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_every_answer_parses(scene: Scene, method: str) -> None:
    RECIPES[method](scene)
    assert method in {called for called, _ in scene.answers}
    for called, result in scene.answers:
        parse_result(called, result)


@pytest.mark.parametrize("seed", [1, 2])
def test_every_generated_update_parses(bot: BotHandle, seed: int) -> None:
    bot.emu.generate(bot.id, 700, kinds=GENERATED_KINDS, seed=seed)
    served: list[Any] = []
    offset = 0
    while len(served) < 700:
        page = bot.ok("getUpdates", offset=offset, allowed_updates=list(KNOWN_UPDATE_TYPES))
        assert page, f"only {len(served)} of 700 updates served"
        served += page
        offset = page[-1]["update_id"] + 1
    updates = parse_result("getUpdates", served)
    kinds = {next(key for key in raw if key != "update_id") for raw in served}
    assert kinds == set(GENERATED_KINDS)
    for update, raw in zip(updates, served, strict=True):
        assert update.event_type in raw, raw


def test_unknown_future_fields_are_the_only_extras(bot: BotHandle) -> None:
    bot.emu.generate(bot.id, 100, kinds=GENERATED_KINDS, unknown_field_ratio=0.5, seed=3)
    served = bot.ok("getUpdates", allowed_updates=list(KNOWN_UPDATE_TYPES))
    updates = TypeAdapter(list[aiogram.types.Update]).validate_python(served)
    extras = {path.rpartition(".")[2] for path in unknown_fields(updates)}
    assert extras == {"x_future_field", "x_future_message_field"}


RECEIVED_SAMPLES = [
    ("photo", b"\xff\xd8\xff\xe0jpeg", None, None),
    ("voice", b"OggS voice", None, None),
    ("document", b"%PDF-1.4 doc", "a.pdf", None),
    ("video", b"\x00\x00\x00\x18ftypmp42", "v.mp4", "video/mp4"),
    ("audio", b"ID3 song", "s.mp3", "audio/mpeg"),
]


def test_every_received_file_update_parses(scene: Scene) -> None:
    """Updates carrying received media (emulator control call ``/files``) in every chat type,
    and the getFile answers for them, are what the Bot API models define."""
    bot = scene.bot
    injected = [
        bot.emu.inject_file(bot.token, kind, data, chat_id, name, mime)
        for chat_id in (PRIVATE, GROUP, SUPERGROUP, CHANNEL)
        for kind, data, name, mime in RECEIVED_SAMPLES
    ]
    served = bot.ok("getUpdates", offset=injected[0]["update_id"])
    assert [u["update_id"] for u in served] == [i["update_id"] for i in injected]
    updates = parse_result("getUpdates", served)
    for update, raw in zip(updates, served, strict=True):
        message = update.message or update.channel_post
        assert message is not None, raw
        kind = next(k for k, *_ in RECEIVED_SAMPLES if getattr(message, k) is not None)
        assert kind in (raw.get("message") or raw["channel_post"]), raw
    for item in injected:
        parse_result("getFile", bot.ok("getFile", file_id=item["file_id"]))
