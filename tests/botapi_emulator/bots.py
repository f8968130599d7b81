"""One bot's state: its update queue (pre-serialised JSON), chats, webhook, poller."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from botapi_emulator.chats import ChatState
from botapi_emulator.limits import FloodState
from botapi_emulator.update_types import DEFAULT_EXCLUDED_UPDATES


@dataclass
class BotState:
    """One registered bot: identity, update queue, chats, sent messages, flood state.

    Updates live as pre-serialised JSON bytes in ``history`` (every update injected since
    the last reset, ids consecutive from ``base_id``); the pending queue is the suffix from
    ``pending_start``.
    """

    id: int
    token: str
    first_name: str
    username: str
    next_update_id: int
    base_id: int = 0
    history: list[bytes] = field(default_factory=list)
    history_types: list[str] = field(default_factory=list)
    pending_start: int = 0
    confirmed_offset: int = 0
    allowed_updates: list[str] | None = None
    webhook: dict[str, Any] | None = None
    chats: dict[int, ChatState] = field(default_factory=dict)
    sent: list[dict[str, Any]] = field(default_factory=list)
    callback_ids: set[str] = field(default_factory=set)
    inline_ids: set[str] = field(default_factory=set)
    flood: FloodState = field(default_factory=FloodState)
    poller: asyncio.Future[str] | None = None
    logged_out: bool = False
    # when this server launched the bot's instance (time.monotonic(); None: not running here).
    # Any request launches it; close stops it and keeps its queue.
    launched_at: float | None = None

    def __post_init__(self) -> None:
        if not self.base_id:
            self.base_id = self.next_update_id

    # identity ---------------------------------------------------------------------
    def user(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "first_name": self.first_name, "username": self.username}

    # update queue -----------------------------------------------------------------
    @property
    def pending_count(self) -> int:
        return len(self.history) - self.pending_start

    def first_pending_id(self) -> int:
        return self.base_id + self.pending_start

    def append_update(self, data: bytes, update_type: str) -> None:
        self.history.append(data)
        self.history_types.append(update_type)

    def confirm(self, offset: int) -> bool:
        """Forget updates below ``offset`` (negative: keep the last -offset). Changed?"""
        before = (self.pending_start, self.confirmed_offset)
        total = len(self.history)
        if offset < 0:
            self.pending_start = max(self.pending_start, total + offset)
        elif offset > 0:
            self.confirmed_offset = max(self.confirmed_offset, offset)
            self.pending_start = max(self.pending_start, min(total, offset - self.base_id))
        return (self.pending_start, self.confirmed_offset) != before

    def drop_pending(self) -> None:
        self.pending_start = len(self.history)

    def allows(self, update_type: str) -> bool:
        if self.allowed_updates is None:
            return update_type not in DEFAULT_EXCLUDED_UPDATES
        return update_type in self.allowed_updates

    def collect(self, limit: int) -> list[bytes]:
        """Up to ``limit`` pending updates the bot's allowed_updates let through.

        Disallowed updates at the head of the queue are dropped (Telegram never delivers
        them); disallowed ones further on are skipped and go with the next confirmation.
        """
        types = self.history_types
        total = len(types)
        start = self.pending_start
        while start < total and not self.allows(types[start]):
            start += 1
        self.pending_start = start
        if self.allowed_updates is None and not DEFAULT_EXCLUDED_UPDATES.intersection(
            types[start : start + limit]
        ):
            return self.history[start : start + limit]
        picked: list[bytes] = []
        index = start
        while index < total and len(picked) < limit:
            if self.allows(types[index]):
                picked.append(self.history[index])
            index += 1
        return picked

    def wake(self, reason: str) -> None:
        poller = self.poller
        if poller is not None and not poller.done():
            poller.set_result(reason)

    def reset(self) -> None:
        """Forget updates (ids keep increasing), chats, webhook, sent records."""
        self.wake("reset")
        self.history = []
        self.history_types = []
        self.base_id = self.next_update_id
        self.pending_start = 0
        self.confirmed_offset = 0
        self.allowed_updates = None
        self.webhook = None
        self.chats = {}
        self.sent = []
        self.callback_ids = set()
        self.inline_ids = set()
        self.flood = FloodState()
        self.logged_out = False

    # chats ------------------------------------------------------------------------
    def chat_by_username(self, username: str) -> ChatState | None:
        wanted = username.lower()
        for chat in self.chats.values():
            if chat.username and chat.username.lower() == wanted:
                return chat
        return None
