"""What the gateway needs to know about one Telegram Update, read from its raw JSON.

An Update is ``{"update_id": N, "<update_type>": {...}}``. :func:`describe` reads the update
type (the field other than ``update_id``), the chat and the user it concerns where there is
one, and the text a routing rule may match. The Update itself is never changed: the payload
published to NATS is the JSON the Bot API returned (unknown fields included).

Headers and subject follow the design contract::

    subject  telegram.in.<bot_id>.<update_type>
    headers  Nats-Msg-Id: <bot_id>:<update_id>@<host>   (JetStream de-duplication)
             Telegram-Bot-Id, Telegram-Update-Id, Telegram-Update-Type,
             Telegram-Bot-Api-Server (the host whose Bot API server delivered it),
             Telegram-Chat-Id and Telegram-User-Id where the update has them

Each Bot API server numbers a bot's updates itself (from a random start, kept in its own
queue), so an ``update_id`` says nothing across servers: the host part keeps JetStream from
dropping one server's update as a repeat of another's with the same number, while a batch the
same server delivers again (after a crash) keeps its ids and is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telegram_gateway.config import ALL_UPDATE_TYPES

INBOUND_PREFIX = "telegram.in"
UNKNOWN_TYPE = "unknown"
_SUBJECT_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KNOWN_TYPES = frozenset(ALL_UPDATE_TYPES)


@dataclass(frozen=True, slots=True)
class UpdateInfo:
    """The routing-relevant facts of one Update."""

    bot_id: int
    update_id: int
    update_type: str
    chat_id: int | None = None
    chat_type: str | None = None
    user_id: int | None = None
    text: str | None = None

    def msg_id(self, server: str) -> str:
        """The de-duplication id of this update as Bot API server ``server`` delivered it."""
        return f"{self.bot_id}:{self.update_id}@{server}"

    @property
    def subject(self) -> str:
        return f"{INBOUND_PREFIX}.{self.bot_id}.{self.update_type}"

    def headers(self, server: str) -> dict[str, str]:
        """The headers of the update as the Bot API server on host ``server`` delivered it."""
        headers = {
            "Nats-Msg-Id": self.msg_id(server),
            "Telegram-Bot-Id": str(self.bot_id),
            "Telegram-Update-Id": str(self.update_id),
            "Telegram-Update-Type": self.update_type,
            "Telegram-Bot-Api-Server": server,
        }
        if self.chat_id is not None:
            headers["Telegram-Chat-Id"] = str(self.chat_id)
        if self.user_id is not None:
            headers["Telegram-User-Id"] = str(self.user_id)
        return headers


_EMPTY: Mapping[str, Any] = {}


def _int(value: Any) -> int | None:
    return value if type(value) is int else None  # not bool, which is an int too


def _dict(value: Any) -> Mapping[str, Any]:
    # parsed JSON objects are dicts; isinstance(..., Mapping) would be 10x slower
    return value if type(value) is dict else _EMPTY


def update_id_of(update: Any) -> int | None:
    """The Update's ``update_id``, or None when it has none (not a Bot API Update)."""
    return _int(update.get("update_id")) if isinstance(update, Mapping) else None


def update_type_of(update: Mapping[str, Any]) -> str:
    """The Update's field other than ``update_id``: a known update type if there is one
    (a future top-level field next to it does not change the type), else the first other
    field holding an object (a type newer than this code); ``unknown`` when there is none or
    it cannot be a NATS subject token."""
    for key in update:
        if key in _KNOWN_TYPES:
            return key
    for key, value in update.items():
        if key != "update_id" and isinstance(value, Mapping):
            return key if _SUBJECT_TOKEN.match(key) else UNKNOWN_TYPE
    return UNKNOWN_TYPE


def describe(bot_id: int, update: Mapping[str, Any]) -> UpdateInfo:
    """Facts of ``update``; raises ValueError when it has no integer ``update_id``."""
    update_id = update_id_of(update)
    if update_id is None:
        raise ValueError("not a Telegram Update: no integer update_id")
    update_type = update_type_of(update)
    body = _dict(update.get(update_type))

    chat = _dict(body.get("chat")) or _dict(_dict(body.get("message")).get("chat"))
    if not chat:
        chat = _dict(body.get("voter_chat"))  # poll_answer of an anonymous chat admin
    chat_id = _int(chat.get("id"))
    chat_type = chat.get("type") if isinstance(chat.get("type"), str) else None
    if chat_id is None and _int(body.get("user_chat_id")) is not None:  # business_connection
        chat_id, chat_type = _int(body.get("user_chat_id")), "private"
    if chat_type is None and isinstance(body.get("chat_type"), str):  # inline_query
        chat_type = body["chat_type"]

    user = (
        _dict(body.get("from"))
        or _dict(body.get("user"))
        or _dict(_dict(_dict(body.get("boost")).get("source")).get("user"))  # chat_boost
        or _dict(_dict(body.get("source")).get("user"))  # removed_chat_boost
    )
    user_id = _int(user.get("id"))

    text = body.get("text")
    if not isinstance(text, str):
        text = body.get("caption") if isinstance(body.get("caption"), str) else None

    return UpdateInfo(
        bot_id=bot_id,
        update_id=update_id,
        update_type=update_type,
        chat_id=chat_id,
        chat_type=chat_type,
        user_id=user_id,
        text=text,
    )


def encode(update: Mapping[str, Any]) -> bytes:
    """The Update as compact UTF-8 JSON: the same JSON value the Bot API returned."""
    return json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()
