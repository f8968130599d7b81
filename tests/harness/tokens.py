"""Fake but well-formed bot tokens, made at run time (no token-shaped literal is committed).

Shaped like Telegram's own: the secret is the base64url of 26 random bytes (35 characters),
so it decodes as base64url the way the real telegram-bot-api decodes it (tdlib's
``base64url_decode``: a canonical last character); the server refuses any other secret with
401 ``Unauthorized``.
"""

from __future__ import annotations

import base64
import secrets


def fake_token(bot_id: int) -> str:
    secret = base64.urlsafe_b64encode(secrets.token_bytes(26)).decode().rstrip("=")
    return f"{bot_id}:{secret}"
