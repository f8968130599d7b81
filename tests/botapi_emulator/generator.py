"""Realistic generated updates (with optional unknown fields) for the control API."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from botapi_emulator.bots import BotState
from botapi_emulator.chats import ChatState, chat_type_by_id
from botapi_emulator.encoding import now_unix, utf16_len
from botapi_emulator.errors import ControlError

GENERATED_KINDS = (
    "message",
    "edited_message",
    "channel_post",
    "callback_query",
    "my_chat_member",
    "chat_member",
    "message_reaction",
)
FIRST_NAMES = ("Alice", "Bob", "Carol", "Dmitri", "Eve", "Fatima", "Grace", "Hiro", "Иван", "Zoë")
TEXTS = (
    "hello",
    "how are you?",
    "Привет, мир!",
    "こんにちは世界",
    "price is 5$ 🚀🚀",
    "multi\nline\ntext",
    'quotes "inside" and \\ backslash',
    "see https://example.org/page?x=1",
    "emoji 👨‍👩‍👧 family",
    "a" * 300,
)
REACTIONS = ("👍", "❤", "🔥", "🎉", "😁")


class UpdateGenerator:
    """Realistic Update objects for one bot (control API ``generate``)."""

    def __init__(self, bot: BotState, spec: dict[str, Any]) -> None:
        self.bot = bot
        self.count = int(spec.get("count", 1))
        kinds = spec.get("kinds") or ["message"]
        unknown = [k for k in kinds if k not in GENERATED_KINDS]
        if unknown or not isinstance(kinds, list):
            raise ControlError(f"unknown kinds {unknown}; choose from {list(GENERATED_KINDS)}")
        if not 0 <= self.count <= 1_000_000:
            raise ControlError("count must be between 0 and 1000000")
        self.kinds: list[str] = kinds
        self.commands = [str(c) for c in spec.get("commands") or ["/start", "/help", "/ask"]]
        self.ratio = float(spec.get("unknown_field_ratio", 0.0))
        self.rng = random.Random(spec.get("seed"))
        self.now = now_unix()
        self.users = [self._user(i) for i in range(12)]
        self.chats = self._chats(spec.get("chat_ids"))
        self.channels = [c for c in self.chats if c.type == "channel"]
        self.non_channels = [c for c in self.chats if c.type != "channel"] or self.chats

    def _user(self, index: int) -> dict[str, Any]:
        user_id = 100_000_000 + (self.bot.id * 7919 + index * 104_729) % 800_000_000
        user: dict[str, Any] = {
            "id": user_id,
            "is_bot": False,
            "first_name": FIRST_NAMES[index % len(FIRST_NAMES)],
        }
        if index % 3:
            user["username"] = f"user{user_id}"
        user["language_code"] = ("en", "ru", "de", "ja")[index % 4]
        return user

    def _chats(self, chat_ids: Any) -> list[ChatState]:
        if chat_ids:
            chats = []
            for raw in chat_ids:
                chat_id = int(raw)
                chat = self.bot.chats.get(chat_id) or ChatState(chat_id, chat_type_by_id(chat_id))
                if chat.type == "private" and not chat.first_name:
                    chat.first_name = FIRST_NAMES[chat_id % len(FIRST_NAMES)]
                chats.append(chat)
            return chats
        base = self.bot.id % 1_000_000
        specs = [
            ChatState(u["id"], "private", first_name=u["first_name"], username=u.get("username"))
            for u in self.users[:5]
        ]
        specs.append(ChatState(-(4_000_000_000 + base), "group", title="Emulated group"))
        specs.append(
            ChatState(-(1_001_000_000_000 + base), "supergroup", title="Emulated supergroup")
        )
        if "channel_post" in self.kinds:
            specs.append(
                ChatState(-(1_002_000_000_000 + base), "channel", title="Emulated channel")
            )
        return [self.bot.chats.get(spec.id) or spec for spec in specs]

    def generate(self) -> list[dict[str, Any]]:
        makers: dict[str, Callable[[], dict[str, Any]]] = {
            "message": self._message_update,
            "edited_message": self._edited_update,
            "channel_post": self._channel_update,
            "callback_query": self._callback_update,
            "my_chat_member": self._my_member_update,
            "chat_member": self._member_update,
            "message_reaction": self._reaction_update,
        }
        kinds = self.kinds
        updates = []
        for index in range(self.count):
            update = makers[kinds[index % len(kinds)]]()
            if self.ratio and self.rng.random() < self.ratio:
                self._add_unknown_fields(update, index)
            updates.append(update)
        return updates

    # pieces -----------------------------------------------------------------------
    def _chat(self) -> ChatState:
        return self.rng.choice(self.non_channels)

    def _sender(self, chat: ChatState) -> dict[str, Any]:
        if chat.type == "private":
            for user in self.users:
                if user["id"] == chat.id:
                    return user
            return {"id": chat.id, "is_bot": False, "first_name": chat.first_name or "User"}
        return self.rng.choice(self.users)

    def _message(self, chat: ChatState, sender: dict[str, Any] | None) -> dict[str, Any]:
        chat.last_message_id += 1
        message: dict[str, Any] = {"message_id": chat.last_message_id}
        if sender is not None:
            message["from"] = sender
        else:
            message["sender_chat"] = chat.to_chat()
        message["chat"] = chat.to_chat()
        message["date"] = self.now
        if self.commands and self.rng.random() < 0.4:
            command = self.rng.choice(self.commands)
            if chat.type != "private" and self.rng.random() < 0.5:
                command = f"{command}@{self.bot.username}"
            message["text"] = f"{command} {self.rng.choice(TEXTS)}"
            message["entities"] = [
                {"offset": 0, "length": utf16_len(command), "type": "bot_command"}
            ]
        else:
            message["text"] = self.rng.choice(TEXTS)
        return message

    def _message_update(self) -> dict[str, Any]:
        chat = self._chat()
        return {"message": self._message(chat, self._sender(chat))}

    def _edited_update(self) -> dict[str, Any]:
        chat = self._chat()
        message = self._message(chat, self._sender(chat))
        if chat.last_message_id > 1:
            message["message_id"] = self.rng.randint(1, chat.last_message_id - 1)
        message["edit_date"] = self.now
        return {"edited_message": message}

    def _channel_update(self) -> dict[str, Any]:
        if not self.channels:
            return self._message_update()
        chat = self.rng.choice(self.channels)
        return {"channel_post": self._message(chat, None)}

    def _callback_update(self) -> dict[str, Any]:
        chat = self._chat()
        chat.last_message_id += 1
        data = self.rng.choice(("yes", "no", "page:2", "vote:😀"))
        message = {
            "message_id": chat.last_message_id,
            "from": self.bot.user(),
            "chat": chat.to_chat(),
            "date": self.now,
            "text": "Choose:",
            "reply_markup": {
                "inline_keyboard": [
                    [
                        {"text": "Yes", "callback_data": "yes"},
                        {"text": "No", "callback_data": "no"},
                    ]
                ]
            },
        }
        query = {
            "id": str(self.rng.getrandbits(62)),
            "from": self._sender(chat),
            "message": message,
            "chat_instance": str(self.rng.getrandbits(63) - (1 << 62)),
            "data": data,
        }
        return {"callback_query": query}

    def _member_change(self, chat: ChatState, member: dict[str, Any]) -> dict[str, Any]:
        joined = self.rng.random() < 0.5
        old, new = ("left", "member") if joined else ("member", "left")
        if chat.type == "private":
            old, new = ("member", "kicked") if joined else ("kicked", "member")
        old_member = _chat_member(member, old)
        new_member = _chat_member(member, new)
        return {
            "chat": chat.to_chat(),
            "from": self._sender(chat),
            "date": self.now,
            "old_chat_member": old_member,
            "new_chat_member": new_member,
        }

    def _my_member_update(self) -> dict[str, Any]:
        chat = self._chat()
        return {"my_chat_member": self._member_change(chat, self.bot.user())}

    def _member_update(self) -> dict[str, Any]:
        chat = self._chat()
        return {"chat_member": self._member_change(chat, self.rng.choice(self.users))}

    def _reaction_update(self) -> dict[str, Any]:
        chat = self._chat()
        if chat.last_message_id == 0:
            chat.last_message_id = 1
        reaction = {
            "chat": chat.to_chat(),
            "message_id": self.rng.randint(1, chat.last_message_id),
            "user": self._sender(chat),
            "date": self.now,
            "old_reaction": [],
            "new_reaction": [{"type": "emoji", "emoji": self.rng.choice(REACTIONS)}],
        }
        return {"message_reaction": reaction}

    def _add_unknown_fields(self, update: dict[str, Any], index: int) -> None:
        """Fields no Bot API version has, to prove lossless passthrough."""
        update["x_future_field"] = {
            "seq": index,
            "tags": ["alpha", "βeta", "🚀"],
            "nested": {"flag": True, "ratio": 0.125, "none": None},
        }
        payload = next(iter(update.values()))
        if isinstance(payload, dict):
            target = payload.get("message") if "message" in payload else payload
            if isinstance(target, dict):
                target["x_future_message_field"] = {"kind": "new", "values": [1, 2, 3]}


def _chat_member(user: dict[str, Any], status: str) -> dict[str, Any]:
    """A ChatMember; a banned one ("kicked") always says until when (0 = forever)."""
    member: dict[str, Any] = {"user": user, "status": status}
    if status == "kicked":
        member["until_date"] = 0
    return member
