"""Every error the gateway raises on purpose, in one place.

Hierarchy::

    GatewayError
    ├── ConfigError          a setting or the routes file is missing or malformed (start-up)
    ├── BotApiError          a Bot API call did not produce a result
    │   ├── BotApiUnavailable    broken after the request went out, or not an answer -> HTTP 502
    │   │   └── BotApiUnreachable    no connection at all: the request was not sent      -> HTTP 502
    │   ├── BotApiTimeout        no answer within the caller's bound                 -> HTTP 504
    │   └── TelegramError        the Bot API answered {"ok": false, ...}             -> its code
    ├── BusError             NATS could not do what was asked
    │   ├── BusUnavailable       not connected (yet / any more), or no answer in time
    │   │   └── NoResponders         nobody serves a request's subject
    │   ├── PublishFailed        JetStream did not acknowledge a publish after retries
    │   ├── RevisionMismatch     a Key-Value create/update lost the race
    │   └── ConsumerRefused      JetStream refused an agent's consumer              -> 409
    ├── InvalidRequest       a /send body or NATS payload is malformed ("<field>: <reason>") -> 400
    ├── IdempotencyUnavailable  the Idempotency-Key bucket cannot be used (NATS, full)  -> 503
    ├── PacingUnavailable    no send slot from the bot's owner (NATS down, no owner)     -> 503
    └── RateLimited          Telegram's limits put the message later than GATEWAY_SEND_MAX_WAIT
                             (nothing was sent; retry after ``retry_after`` s)          -> 429

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


class BotApiUnreachable(BotApiUnavailable):
    """No connection to the Bot API server could be made: the request was certainly not sent."""


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


class RevisionMismatch(BusError):
    """A Key-Value create or update lost the race: the key exists or changed meanwhile."""


class ConsumerRefused(BusError):
    """JetStream refused to create or update a consumer (e.g. one of that name exists with a
    configuration that cannot be changed)."""


class InvalidRequest(GatewayError):
    """A request to send something is malformed; ``str()`` is ``"<field>: <reason>"``."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class RateLimited(GatewayError):
    """Telegram's limits would delay the message beyond the allowed wait; nothing was sent."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PacingUnavailable(GatewayError):
    """No slot could be had from the bot's owner (NATS down, no owner during a takeover, the
    owner did not answer); nothing was sent, retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoResponders(BusUnavailable):
    """Nobody serves the subject of a request (yet)."""


class IdempotencyUnavailable(GatewayError):
    """The Idempotency-Key store (the Key-Value bucket TELEGRAM_IDEMPOTENCY) cannot be used right
    now: NATS is unreachable or the bucket is full."""
