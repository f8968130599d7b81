"""What the emulator knows about one chat of one bot."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHAT_TYPES = ("private", "group", "supergroup", "channel")


def chat_type_by_id(chat_id: int) -> str:
    """Telegram's id convention: >0 private, -100… supergroup/channel, other <0 group."""
    if chat_id > 0:
        return "private"
    if str(chat_id).startswith("-100") and chat_id <= -1000000000000:
        return "supergroup"
    return "group"


@dataclass
class ChatState:
    """A chat known to one bot (registered, or seen in an injected update)."""

    id: int
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    is_forum: bool = False
    blocked: bool = False
    migrate_to_chat_id: int | None = None
    last_message_id: int = 0
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)  # sent by the bot
    deleted: set[int] = field(default_factory=set)
    pinned: set[int] = field(default_factory=set)
    # users seen in this chat's injected updates (getChatMember): id -> User
    members: dict[int, dict[str, Any]] = field(default_factory=dict)

    def to_chat(self) -> dict[str, Any]:
        """The Chat object as it appears inside a Message."""
        chat: dict[str, Any] = {"id": self.id}
        if self.type == "private":
            chat["first_name"] = self.first_name or f"User {self.id}"
            if self.last_name:
                chat["last_name"] = self.last_name
        else:
            chat["title"] = self.title or f"{self.type.capitalize()} {abs(self.id)}"
        if self.username:
            chat["username"] = self.username
        chat["type"] = self.type
        if self.is_forum:
            chat["is_forum"] = True
        return chat

    def to_record(self) -> dict[str, Any]:
        """Everything worth keeping across a restart (journal) or showing (control API)."""
        record: dict[str, Any] = {"id": self.id, "type": self.type}
        for key in ("title", "username", "first_name", "last_name", "migrate_to_chat_id"):
            value = getattr(self, key)
            if value is not None:
                record[key] = value
        record["is_forum"] = self.is_forum
        record["blocked"] = self.blocked
        record["last_message_id"] = self.last_message_id
        return record

    def update_from(self, spec: dict[str, Any]) -> None:
        for key in ("title", "username", "first_name", "last_name"):
            if key in spec:
                setattr(self, key, None if spec[key] is None else str(spec[key]))
        if "is_forum" in spec:
            self.is_forum = bool(spec["is_forum"])
        if "blocked" in spec:
            self.blocked = bool(spec["blocked"])
        if "migrate_to_chat_id" in spec:
            value = spec["migrate_to_chat_id"]
            self.migrate_to_chat_id = None if value is None else int(value)
        if "last_message_id" in spec:
            self.last_message_id = max(self.last_message_id, int(spec["last_message_id"]))

    def message_exists(self, message_id: int) -> bool:
        return 0 < message_id <= self.last_message_id and message_id not in self.deleted
