"""Bot tokens: checked as telegram-bot-api checks them, and kept out of logs."""

from __future__ import annotations

import re

from botapi_emulator.constants import MAX_BOT_ID

TOKEN_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{24,}")
TOKEN_IN_TEXT_RE = re.compile(r"(\d{3,}):[A-Za-z0-9_-]{20,}")


def safe_bot_ref(bot_id: int) -> str:
    """How a bot appears in logs: never the secret part of its token."""
    return f"bot{bot_id}:<redacted>"


class TokenError(Exception):
    """A token the real server refuses before it ever talks to Telegram."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def parse_token(token: str, filter_rem: int = 0, filter_mod: int = 1) -> int:
    """Validate a bot token like telegram-bot-api does; return the bot id.

    Rules (ClientManager::send): empty, leading '0', longer than 80, containing '/' or no
    ':' -> 401 invalid token; id not an integer or outside ``--filter`` -> 421; id <= 0 or
    >= 2**54 -> 401 invalid token; secret not >= 24 base64url chars -> 401 Unauthorized
    (Telegram refuses it).
    """
    if not token or token[0] == "0" or len(token) > 80 or "/" in token or ":" not in token:
        raise TokenError(401, "Unauthorized: invalid token specified")
    id_part, _, secret = token.partition(":")
    if not re.fullmatch(r"-?\d{1,19}", id_part):
        raise TokenError(421, "Misdirected Request: unallowed token specified")
    bot_id = int(id_part)
    if filter_mod > 1 and bot_id % filter_mod != filter_rem:
        raise TokenError(421, "Misdirected Request: unallowed token specified")
    if bot_id <= 0 or bot_id >= MAX_BOT_ID:
        raise TokenError(401, "Unauthorized: invalid token specified")
    if not TOKEN_SECRET_RE.fullmatch(secret):
        raise TokenError(401, "Unauthorized")
    return bot_id


def token_bot_id(token: str) -> int | None:
    """The bot id a token claims (for fault matching), or None."""
    id_part = token.partition(":")[0]
    return int(id_part) if id_part.isdigit() and len(id_part) < 19 else None


def redact_text(text: str) -> str:
    return TOKEN_IN_TEXT_RE.sub(lambda m: f"{m.group(1)}:<redacted>", text)
