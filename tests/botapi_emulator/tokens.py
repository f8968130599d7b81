"""Bot tokens: checked as telegram-bot-api checks them, and kept out of logs."""

from __future__ import annotations

import re

from botapi_emulator.constants import MAX_BOT_ID

BASE64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BASE64URL_VALUE = {char: value for value, char in enumerate(BASE64URL_ALPHABET)}
MIN_SECRET_LENGTH = 24
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


def is_base64url(text: str) -> bool:
    """Whether tdlib's ``base64url_decode`` (tdutils/td/utils/base64.cpp) accepts ``text``.

    Up to two ``=`` of padding (then the padded length is a multiple of 4); unpadded, the
    length mod 4 is not 1; only base64url characters; and the last character is canonical:
    the bits it carries beyond the last whole byte are zero (``value & 15 == 0`` when the
    length mod 4 is 2, ``value & 3 == 0`` when it is 3).
    """
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if padding >= 3 or (padding and len(text) % 4) or len(body) % 4 == 1:
        return False
    if any(char not in _BASE64URL_VALUE for char in body):
        return False
    unused_bits = {2: 15, 3: 3}.get(len(body) % 4, 0)
    return not body or _BASE64URL_VALUE[body[-1]] & unused_bits == 0


def parse_token(token: str, filter_rem: int = 0, filter_mod: int = 1) -> int:
    """Validate a bot token like telegram-bot-api does; return the bot id.

    Rules (ClientManager::send): empty, leading '0', longer than 80, containing '/' or no
    ':' -> 401 invalid token; id not an integer or outside ``--filter`` -> 421; id <= 0 or
    >= 2**54 -> 401 invalid token. Then (Client::start_up) a secret that is shorter than
    24 characters or that ``base64url_decode`` refuses -> 401 Unauthorized: the real server
    closes that bot's client at once.
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
    if len(secret) < MIN_SECRET_LENGTH or not is_base64url(secret):
        raise TokenError(401, "Unauthorized")
    return bot_id


def token_bot_id(token: str) -> int | None:
    """The bot id a token claims (for fault matching), or None."""
    id_part = token.partition(":")[0]
    return int(id_part) if id_part.isdigit() and len(id_part) < 19 else None


def redact_text(text: str) -> str:
    return TOKEN_IN_TEXT_RE.sub(lambda m: f"{m.group(1)}:<redacted>", text)
