"""Every error the gateway raises on purpose, in one place.

Hierarchy::

    GatewayError
    ├── ConfigError          a setting or the routes file is missing or malformed (start-up)
    ├── BotApiError          a Bot API call did not produce a result
    │   ├── BotApiUnavailable    connection refused / dropped, or a non-JSON answer  -> HTTP 502
    │   ├── BotApiTimeout        no answer within the caller's bound                 -> HTTP 504
    │   └── TelegramError        the Bot API answered {"ok": false, ...}             -> its code
    └── BusError             NATS could not do what was asked
        ├── BusUnavailable       not connected (yet / any more)
        └── PublishFailed        JetStream did not acknowledge a publish after retries

Messages say what failed and what to do, and never contain a token or a password.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Base of every deliberate gateway error."""


class ConfigError(GatewayError):
    """A setting is missing or malformed; the message names it."""


class BotApiError(GatewayError):
    """A Bot API call failed."""

    def __init__(self, method: str, message: str) -> None:
        super().__init__(message)
        self.method = method


class BotApiUnavailable(BotApiError):
    """The Bot API server could not be reached or answered something that is not the Bot API."""


class BotApiTimeout(BotApiError):
    """The Bot API server did not answer within the bound."""


class TelegramError(BotApiError):
    """The Bot API answered ``ok: false``; ``envelope`` is its answer, unchanged."""

    def __init__(self, method: str, envelope: dict[str, Any]) -> None:
        self.envelope = envelope
        self.error_code = int(envelope.get("error_code") or 500)
        self.description = str(envelope.get("description") or "")
        self.parameters: dict[str, Any] = dict(envelope.get("parameters") or {})
        super().__init__(method, f"{method}: {self.error_code} {self.description}")

    @property
    def retry_after(self) -> float | None:
        value = self.parameters.get("retry_after")
        return float(value) if value is not None else None


class BusError(GatewayError):
    """NATS could not do what was asked."""


class BusUnavailable(BusError):
    """Not connected to NATS; the caller should retry later (nothing was sent)."""


class PublishFailed(BusError):
    """JetStream did not acknowledge a publish within the retries."""
