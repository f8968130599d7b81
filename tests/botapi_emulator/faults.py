"""Injected faults: errors, delays, dropped connections, the API listener down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botapi_emulator.constants import CONFLICT_OTHER_POLLER


@dataclass
class Fault:
    """An injected failure for matching Bot API requests (see the control API)."""

    id: int
    mode: str
    methods: frozenset[str] | None
    bot_id: int | None
    remaining: int | None
    expires_at: float | None
    status: int
    description: str
    delay: float
    retry_after: int

    def active(self, now: float) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        return self.expires_at is None or now < self.expires_at

    def matches(self, bot_id: int | None, method: str) -> bool:
        if self.bot_id is not None and self.bot_id != bot_id:
            return False
        return self.methods is None or method in self.methods

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "mode": self.mode,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "bot_id": self.bot_id,
            "remaining": self.remaining,
            "expires_in": None if self.expires_at is None else round(self.expires_at - now, 3),
            "status": self.status,
            "description": self.description,
            "delay": self.delay,
        }


DEFAULT_ERROR_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: CONFLICT_OTHER_POLLER,
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
