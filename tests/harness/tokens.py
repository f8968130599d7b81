"""Fake but well-formed bot tokens, made at run time (no token-shaped literal is committed)."""

from __future__ import annotations

import secrets


def fake_token(bot_id: int) -> str:
    return f"{bot_id}:FAKE{secrets.token_urlsafe(24)[:32]}"
