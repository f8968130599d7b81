"""NATS request/reply to the Bot API: ``telegram.out.<bot>.<method>``, queue group
``telegram-gateway``.

The request payload is the method's parameters as a JSON object (empty payload: no
parameters); the reply is the Bot API's answer envelope, ``{"ok":true,"result":…}`` or
``{"ok":false,"error_code":…,"description":…}`` -- the Bot API's own bytes when nothing had to
change. No reply carries a token: ``getFile``'s ``file_path`` is relative to the bot's folder
and every answer is checked for the configured secrets (:mod:`telegram_gateway.replies`).
``<bot>`` is the bot id or its configured name (each worker subscribes ``telegram.out.<id>.*``
and ``telegram.out.<name>.*`` for every bot it has a token for, so a request for an unknown bot
finds no responder). Every worker of every gateway on the host is in
the queue group: each request is answered once.

Only :data:`ALLOWED_METHODS` pass: what an agent needs to talk in chats. Anything else
(``getUpdates``, ``setWebhook``, ``logOut``, administration, ...) gets a 403 envelope.
Messages go through the same :class:`~telegram_gateway.sender.Sender` as ``POST /send``
(pacing, 429 retries, group migration); gateway-side failures come back in the same envelope
shape with HTTP-like codes: 400 malformed payload, 403 method not allowed, 429 the pacing
queue is longer than ``GATEWAY_SEND_MAX_WAIT`` (``parameters.retry_after``), 502 the Bot API is
unreachable, 503 NATS or the Idempotency-Key bucket is unusable or no worker paces the bot
right now (``parameters.retry_after``; nothing was sent), 504 the Bot API did not answer within
``GATEWAY_SEND_TIMEOUT``. A request header ``Idempotency-Key`` works as on ``/send``.

Requesters should allow ``GATEWAY_SEND_MAX_WAIT + GATEWAY_SEND_TIMEOUT`` plus a margin as the
request timeout.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from telegram_gateway.bus import Bus, Request
from telegram_gateway.config import BotConfig, Settings
from telegram_gateway.errors import (
    BotApiTimeout,
    GatewayError,
    IdempotencyUnavailable,
    InvalidRequest,
    PacingUnavailable,
    RateLimited,
)
from telegram_gateway.health import Check
from telegram_gateway.idempotency import IdempotencyStore, Outcome, fingerprint, valid_key
from telegram_gateway.outbound import chat_id_of, check_encodable, check_local_files
from telegram_gateway.sender import (
    BOT_WRITE_METHODS,
    CHAT_EDIT_METHODS,
    CHAT_MESSAGE_METHODS,
    Delivery,
    Sender,
)

logger = logging.getLogger(__name__)

SUBJECT_PREFIX = "telegram.out"
QUEUE_GROUP = "telegram-gateway"
IDEMPOTENCY_HEADER = "Idempotency-Key"

READ_METHODS: tuple[str, ...] = ("getMe", "getChat", "getChatMember", "getFile")
#: chat identifiers in parameters: checked before anything else (pacing keys on chat_id)
CHAT_ID_FIELDS = ("chat_id", "from_chat_id")

#: the Bot API methods agents may call through NATS
ALLOWED_METHODS: tuple[str, ...] = (
    # sending (paced by the sender)
    *CHAT_MESSAGE_METHODS,
    # changing what was sent, chat actions, answering interactions (paced bot-wide)
    *CHAT_EDIT_METHODS,
    *BOT_WRITE_METHODS,
    # reading (not paced; an Idempotency-Key is accepted and ignored)
    *READ_METHODS,
)
_CANONICAL = {name.lower(): name for name in ALLOWED_METHODS}


def envelope_error(code: int, description: str, **parameters: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return body


def failure_envelope(error: GatewayError) -> dict[str, Any]:
    """A gateway-side failure as a Bot API style error envelope."""
    if isinstance(error, RateLimited):
        return envelope_error(
            429,
            f"Too Many Requests: retry after {error.retry_after} ({error})",
            retry_after=error.retry_after,
        )
    if isinstance(error, BotApiTimeout):
        return envelope_error(504, f"Gateway Timeout: {error}")
    if isinstance(error, IdempotencyUnavailable):
        return envelope_error(503, f"Service Unavailable: {error}", retry_after=1)
    if isinstance(error, PacingUnavailable):
        return envelope_error(503, f"Service Unavailable: {error}", retry_after=error.retry_after)
    return envelope_error(502, f"Bad Gateway: {error}")


class OutboundService:
    """Answers ``telegram.out.<bot>.<method>`` requests; a gateway component."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        sender: Sender,
        idempotency: IdempotencyStore,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.sender = sender
        self.idempotency = idempotency
        self.subjects: list[str] = []

    def start(self) -> None:
        for bot in self.settings.bots:
            for ref in dict.fromkeys([str(bot.bot_id), bot.name]):
                if ref:
                    subject = f"{SUBJECT_PREFIX}.{ref}.*"
                    self.bus.serve(subject, self.handle, QUEUE_GROUP)
                    self.subjects.append(subject)

    def stop(self) -> None:
        self.idempotency.close()

    def checks(self) -> dict[str, Check]:
        return {}

    def handle(self, request: Request) -> bytes:
        """One request: never raises (an unexpected error is still an error envelope)."""
        try:
            return self._handle(request)
        except Exception:
            logger.exception("telegram.out request on %s failed", request.subject)
            return _dump(envelope_error(500, "Internal Server Error: see the gateway's log"))

    def _handle(self, request: Request) -> bytes:
        tokens = request.subject.split(".")
        bot = self.settings.bot(tokens[2]) if len(tokens) == 4 else None
        if bot is None:
            return _dump(envelope_error(404, f"Not Found: no bot for subject {request.subject}"))
        method = _CANONICAL.get(tokens[3].lower())
        if method is None:
            return _dump(
                envelope_error(
                    403,
                    f"Forbidden: method {tokens[3][:64]} is not in the gateway's allow-list "
                    "(see the README, 'Sending messages')",
                )
            )
        params = _params(request.data)
        if params is None:
            return _dump(
                envelope_error(
                    400,
                    "Bad Request: the payload must be a JSON object of the method's parameters "
                    "(UTF-8, no lone surrogates, no NaN)",
                )
            )
        try:
            for field in CHAT_ID_FIELDS:  # before pacing or idempotency touch any state
                if field in params:
                    params[field] = chat_id_of(params[field], field)
            # local files only from GATEWAY_MEDIA_DIRS; nothing reaches the Bot API otherwise
            check_local_files(params, self.settings)
        except InvalidRequest as exc:
            return _dump(envelope_error(400, f"Bad Request: {exc}"))
        key = _header(request.headers, IDEMPOTENCY_HEADER)
        if key is None or method in READ_METHODS:  # reading twice changes nothing
            return self._call(bot, method, params)
        if not valid_key(key):
            return _dump(
                envelope_error(400, "Bad Request: Idempotency-Key must be 1-255 printable ASCII")
            )

        def compute() -> Outcome:
            delivery = self.sender.send(bot, method, [params])
            body = json.loads(_reply_bytes(delivery))
            return Outcome(status=200, body=body, store=delivery.final)

        try:
            outcome, _ = self.idempotency.run(
                f"nats:{key}",
                fingerprint({"bot": bot.bot_id, "method": method, "params": params}),
                compute,
                self.sender.longest(1),
            )
        except IdempotencyUnavailable as exc:
            return _dump(failure_envelope(exc))
        if outcome.body.get("ok") is False and "error_code" not in outcome.body:
            # the store's own answers (key reused, in flight): as an envelope
            return _dump(envelope_error(outcome.status, str(outcome.body.get("error"))))
        return _dump(outcome.body)

    def _call(self, bot: BotConfig, method: str, params: dict[str, Any]) -> bytes:
        return _reply_bytes(self.sender.send(bot, method, [params]))


def _reply_bytes(delivery: Delivery) -> bytes:
    if delivery.failure is not None:
        return _dump(failure_envelope(delivery.failure))
    if delivery.telegram_error is not None:
        body = dict(delivery.telegram_error)
    elif delivery.raw is not None:
        return delivery.raw
    else:
        body = {"ok": True, "result": delivery.results[0] if delivery.results else None}
    if delivery.migrated_to is not None:
        body["migrated_to_chat_id"] = delivery.migrated_to
    return _dump(body)


def _params(data: bytes) -> dict[str, Any] | None:
    if not data.strip():
        return {}
    try:
        value = json.loads(data)
        check_encodable(value)
    except (ValueError, RecursionError, InvalidRequest):
        return None
    return value if isinstance(value, dict) else None


def _header(headers: dict[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
