"""Sends reach the bot's owner: the worker that paces a bot also calls the Bot API for it.

A ``POST /send`` or ``telegram.out.<bot>.<method>`` request may arrive at any worker. When
another worker owns the bot (:mod:`telegram_gateway.ownership`), the request's parameters go to
it over NATS (``_GATEWAY.send.<worker>``, gateway user only); the owner sends them through its
own :class:`~telegram_gateway.sender.Sender` -- its calendar, its departure re-checks, one
process deciding when each message leaves -- and answers with the :class:`Delivery`, which the
receiving worker turns into its HTTP or NATS answer. (Asking the owner only for a slot and
sending from the receiving worker adds the reply's latency between the decision and the Bot
API call; on a busy host that jitter was enough for Telegram's no-tolerance windows: 429s.)

Uploads (``multipart/form-data`` on ``/send``, up to 2,000 MB) do not fit a NATS message: the
receiving worker sends them itself, with slots granted by the owner
(:mod:`telegram_gateway.slots`). With pacing off nothing is forwarded.

Failures: no owner within the lease time, NATS down -> :class:`PacingUnavailable` (nothing
sent, 503); the owner took the request but its answer did not come back in time ->
:class:`BotApiTimeout` (the message may have been sent: an Idempotency-Key keeps that
outcome, a retry does not send twice).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Any

from telegram_gateway.bus import Bus, Request
from telegram_gateway.config import BotConfig, Settings
from telegram_gateway.errors import (
    BotApiTimeout,
    BotApiUnavailable,
    BotApiUnreachable,
    BusUnavailable,
    GatewayError,
    PacingUnavailable,
    RateLimited,
)
from telegram_gateway.health import Check
from telegram_gateway.ownership import Ownership

if TYPE_CHECKING:
    from telegram_gateway.sender import Delivery, Sender

logger = logging.getLogger(__name__)

#: ``_GATEWAY.send.<worker>``: the owner's send service (gateway user only)
SUBJECT_PREFIX = "_GATEWAY.send"


class OwnerSends:
    """Forwards a send to the bot's owner, or says to send here (see the module docstring)."""

    def __init__(self, settings: Settings, bus: Bus, ownership: Ownership) -> None:
        self.settings = settings
        self.bus = bus
        self.ownership = ownership
        self.subject = f"{SUBJECT_PREFIX}.{ownership.name}"
        self.sender: Sender | None = None  # set by the Sender it serves

    # ---- component protocol ----------------------------------------------------------------
    def start(self) -> None:
        self.bus.serve(self.subject, self.handle)

    def stop(self) -> None:
        pass

    def checks(self) -> dict[str, Check]:
        return {}

    # ---- the receiving worker ----------------------------------------------------------------
    def forward(self, bot: BotConfig, method: str, parts: list[dict[str, Any]]) -> Delivery | None:
        """The owner's delivery of the send; None when it is to be sent here (this worker owns
        the bot, or pacing is off)."""
        from telegram_gateway.sender import Delivery

        if not self.settings.send_pacing:
            return None
        assert self.sender is not None
        payload = json.dumps({"bot": bot.bot_id, "method": method, "parts": parts}).encode()
        timeout = self.sender.longest(len(parts)) + 5.0
        try:
            answer = self.ownership.ask_owner(bot.bot_id, SUBJECT_PREFIX, payload, timeout)
        except PacingUnavailable as exc:
            return Delivery(failure=exc)
        except BusUnavailable as exc:
            return Delivery(
                failure=BotApiTimeout(
                    method,
                    f"the worker that sends for bot {bot.label} did not answer in time ({exc}); "
                    "the message may have been sent",
                )
            )
        return None if answer is None else delivery_from(answer)

    # ---- the owner ---------------------------------------------------------------------------
    def handle(self, request: Request) -> bytes:
        assert self.sender is not None
        try:
            question = json.loads(request.data)
            bot_id = int(question["bot"])
            method = str(question["method"])
            parts = list(question["parts"])
        except (ValueError, KeyError, TypeError):
            return b'{"error":"malformed send request"}'
        bot = next((b for b in self.settings.bots if b.bot_id == bot_id), None)
        if bot is None or not self.ownership.holds(bot_id):
            return b'{"not_owner":true}'
        return json.dumps(delivery_to(self.sender.send_here(bot, method, parts))).encode()


_FAILURES: dict[str, type[GatewayError]] = {
    cls.__name__: cls
    for cls in (RateLimited, PacingUnavailable, BotApiTimeout, BotApiUnreachable, BotApiUnavailable)
}


def delivery_to(delivery: Delivery) -> dict[str, Any]:
    """A Delivery as JSON (the owner's answer)."""
    failure = delivery.failure
    encoded_failure = None
    if failure is not None:
        kind = next((name for name, cls in _FAILURES.items() if type(failure) is cls), "")
        encoded_failure = {
            "kind": kind or "BotApiUnavailable",
            "message": str(failure),
            "retry_after": getattr(failure, "retry_after", None),
            "method": getattr(failure, "method", ""),
        }
    return {
        "results": delivery.results,
        "telegram_error": delivery.telegram_error,
        "failure": encoded_failure,
        "migrated_to": delivery.migrated_to,
        "raw": base64.b64encode(delivery.raw).decode() if delivery.raw is not None else None,
    }


def delivery_from(answer: dict[str, Any]) -> Delivery:
    """The owner's answer as a Delivery again (the same failure classes, so the same HTTP and
    NATS answers and the same Idempotency-Key decision)."""
    from telegram_gateway.sender import Delivery

    failure: GatewayError | None = None
    encoded = answer.get("failure")
    if isinstance(encoded, dict):
        kind, message = encoded.get("kind"), str(encoded.get("message") or "")
        retry_after = int(encoded.get("retry_after") or 1)
        if kind == "RateLimited":
            failure = RateLimited(retry_after, message)
        elif kind == "PacingUnavailable":
            failure = PacingUnavailable(message, retry_after)
        else:
            cls = _FAILURES.get(str(kind), BotApiUnavailable)
            failure = cls(str(encoded.get("method") or ""), message)  # type: ignore[call-arg]
    raw = answer.get("raw")
    return Delivery(
        results=list(answer.get("results") or []),
        telegram_error=answer.get("telegram_error"),
        failure=failure,
        migrated_to=answer.get("migrated_to"),
        raw=base64.b64decode(raw) if isinstance(raw, str) else None,
    )
