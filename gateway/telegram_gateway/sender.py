"""The one outbound path: every message from ``POST /send`` and from NATS goes through here.

One :class:`Sender` per worker process, shared by all its greenlets. For each Bot API call it

0. hands the send to the bot's owner when another worker owns it
   (:mod:`telegram_gateway.owner_sends`), which does the rest; an upload stays here;
1. reserves a time slot within Telegram's limits (:mod:`telegram_gateway.slots`: this worker's
   own calendar, or for an upload the owning worker's over NATS; too far away ->
   :class:`RateLimited`, no owner to be had -> :class:`PacingUnavailable`, nothing sent);
2. waits until the slot, then calls the Bot API, bounded by ``GATEWAY_SEND_TIMEOUT``;
3. on a 429 waits Telegram's ``retry_after`` and tries again (at most ``ATTEMPTS`` times, and
   only while the extra wait stays within ``GATEWAY_SEND_MAX_WAIT``);
4. on ``400`` with ``parameters.migrate_to_chat_id`` (a group became a supergroup) sends once
   more to the new chat id, remembers the move for later messages, and reports it.

Several messages (the parts of a long text) reserve consecutive slots at once, so they leave in
order and nobody else's message to that chat gets between them.

The HTTP is :class:`telegram_gateway.botapi.BotApi`, the gateway's one Bot API client (shared
with the pollers and the health probe), which tells "never reached the Bot API" apart from
"may have been sent". Every answer passes :class:`telegram_gateway.replies.ReplyGuard` before
anything else sees it: getFile's ``file_path`` without the token folder, no token's secret
anywhere (the NATS replies and ``/send`` answers are built from what it returns).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from telegram_gateway import metrics
from telegram_gateway.botapi import BotApi, Reply
from telegram_gateway.config import BotConfig, Settings
from telegram_gateway.errors import (
    BotApiError,
    BotApiTimeout,
    BotApiUnreachable,
    GatewayError,
    PacingUnavailable,
    RateLimited,
)
from telegram_gateway.health import Check
from telegram_gateway.outbound import Upload
from telegram_gateway.pacing import PRIVATE_INTERVAL, Chat, Departure, Pacer
from telegram_gateway.redact import redact
from telegram_gateway.replies import ReplyGuard

if TYPE_CHECKING:
    from telegram_gateway.owner_sends import OwnerSends
    from telegram_gateway.slots import Slots

logger = logging.getLogger(__name__)

ATTEMPTS = 3  # Bot API calls per message at most (429 retries included)

#: methods that put a message into a chat: paced per bot *and* per chat (Telegram's limits)
CHAT_MESSAGE_METHODS: tuple[str, ...] = (
    "sendMessage",
    "sendPhoto",
    "sendDocument",
    "sendAudio",
    "sendVideo",
    "sendVoice",
    "sendAnimation",
    "sendVideoNote",
    "sendSticker",
    "sendMediaGroup",
    "sendLocation",
    "sendVenue",
    "sendContact",
    "sendPoll",
    "sendDice",
    "copyMessage",
    "forwardMessage",
)
#: methods that change a message in a chat: paced like messages (Telegram counts an edit as one)
CHAT_EDIT_METHODS: tuple[str, ...] = (
    "editMessageText",
    "editMessageCaption",
    "editMessageMedia",
    "editMessageReplyMarkup",
)
#: other methods that write to a chat: they take a slot of the bot's 30 per second too
BOT_WRITE_METHODS: tuple[str, ...] = (
    "sendChatAction",
    "deleteMessage",
    "deleteMessages",
    "pinChatMessage",
    "unpinChatMessage",
    "setMessageReaction",
    "answerCallbackQuery",
    "answerInlineQuery",
)
_CHAT_PACED = frozenset((*CHAT_MESSAGE_METHODS, *CHAT_EDIT_METHODS))
_PACED = _CHAT_PACED | frozenset(BOT_WRITE_METHODS)


@dataclass
class Delivery:
    """What became of a send: the ``results`` of the messages that went out (in order), and
    either nothing else (all sent) or the Telegram error envelope / gateway error that
    stopped it. ``raw``: the Bot API's own bytes when a single call's envelope can be passed
    on unchanged."""

    results: list[Any] = field(default_factory=list)
    telegram_error: dict[str, Any] | None = None
    failure: GatewayError | None = None
    migrated_to: int | None = None
    raw: bytes | None = None

    @property
    def ok(self) -> bool:
        return self.telegram_error is None and self.failure is None

    @property
    def final(self) -> bool:
        """False when certainly nothing reached Telegram (refused by pacing, Bot API not
        reachable, 429 to the end): a retry may send. True otherwise, ambiguous cases
        (timeout, broken connection, 5xx) included."""
        if self.results or self.ok:
            return True
        if self.failure is not None:
            return not isinstance(self.failure, RateLimited | BotApiUnreachable | PacingUnavailable)
        assert self.telegram_error is not None
        return self.telegram_error.get("error_code") != 429


class Sender:
    """Paced, retried sends for every bot of this worker (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        api: BotApi,
        pacer: Pacer | Slots | None = None,
        owner_sends: OwnerSends | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        self.pacer = pacer or Pacer(
            settings.send_max_wait, settings.send_pacing, answer_within=settings.send_timeout
        )
        self.owner_sends = owner_sends
        if owner_sends is not None:
            owner_sends.sender = self
        self._moved: dict[tuple[int, str], int] = {}  # (bot, old chat) -> supergroup id
        self.guard = ReplyGuard(settings.bots)  # no token in what leaves the gateway

    # component protocol: nothing runs in the background
    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.pacer.close()

    def checks(self) -> dict[str, Check]:
        return {}

    def longest(self, parts: int) -> float:
        """An upper bound of how long sending ``parts`` messages can take, in seconds."""
        s = self.settings
        per_part = ATTEMPTS * (s.send_timeout + 1.0) + s.send_max_wait
        return s.send_max_wait + parts * (PRIVATE_INTERVAL + per_part) + 5.0

    def send(
        self,
        bot: BotConfig,
        method: str,
        parts: list[dict[str, Any]],
        upload: Upload | None = None,
    ) -> Delivery:
        """Send ``method`` once per entry of ``parts`` (in order), paced and retried: through
        the bot's owner when another worker owns it (:mod:`telegram_gateway.owner_sends`; an
        upload is sent here, with the owner's slots). Never raises for Telegram or transport
        failures: they are in the :class:`Delivery`."""
        if upload is None and self.owner_sends is not None:
            forwarded = self.owner_sends.forward(bot, method, parts)
            if forwarded is not None:
                return forwarded
        return self.send_here(bot, method, parts, upload)

    def send_here(
        self,
        bot: BotConfig,
        method: str,
        parts: list[dict[str, Any]],
        upload: Upload | None = None,
    ) -> Delivery:
        """:meth:`send` in this worker (its pacer decides when each part leaves)."""
        delivery = Delivery()
        label = str(bot.bot_id)
        given = parts[0].get("chat_id") if parts else None
        chat_id = self._moved.get((bot.bot_id, str(given)), given)
        if chat_id != given:
            delivery.migrated_to = chat_id
        paced = method in _PACED
        chat = _pacing_chat(method, chat_id)
        slots: list[float] = []
        if paced:
            try:
                slots = self.pacer.reserve(bot.bot_id, chat, sum(_count(method, p) for p in parts))
            except (RateLimited, PacingUnavailable) as exc:
                metrics.SENDS.labels(label, method, _refusal(exc)).inc()
                delivery.failure = exc
                return delivery
        reserved = time.time()
        for index, part in enumerate(parts):
            params = dict(part)
            if "chat_id" in params:
                params["chat_id"] = chat_id
            if index < len(slots):
                try:
                    self.pacer.wait_turn(bot.bot_id, chat, slots[index])
                except PacingUnavailable as exc:  # the owner went away: this part is not sent
                    metrics.SENDS.labels(label, method, _refusal(exc)).inc()
                    delivery.failure = exc
                    break
                metrics.SEND_WAIT.labels(label).observe(max(0.0, slots[index] - reserved))
            fresh = paced and index >= len(slots)
            reply, error = self._attempts(bot, method, params, upload, chat, fresh)
            moved = _migrate_to(reply.envelope) if reply is not None else None
            if moved is not None and delivery.migrated_to is None and "chat_id" in params:
                # the group is a supergroup now: this part and the rest go there
                self._remember_move(bot, chat_id, moved)
                self.pacer.cancel(bot.bot_id, chat, slots[index + 1 :])
                slots = slots[: index + 1]
                chat_id = delivery.migrated_to = params["chat_id"] = moved
                chat = _pacing_chat(method, moved)
                reply, error = self._attempts(bot, method, params, upload, chat, paced)
            if error is not None:
                delivery.failure = error
            elif reply is not None and reply.envelope.get("ok"):
                delivery.results.append(reply.envelope.get("result"))
                delivery.raw = reply.raw if len(parts) == 1 else None
            elif reply is not None:
                delivery.telegram_error = reply.envelope
            if not delivery.ok:
                self.pacer.cancel(bot.bot_id, chat, slots[index + 1 :])
                break
        if delivery.migrated_to is not None:
            delivery.raw = None
        return delivery

    # ---- one message, with 429 retries -----------------------------------------------------
    def _attempts(
        self,
        bot: BotConfig,
        method: str,
        params: dict[str, Any],
        upload: Upload | None,
        chat: Chat | None,
        fresh_slot: bool,
    ) -> tuple[Reply | None, GatewayError | None]:
        """Call the Bot API for one message, retrying after 429s; the last reply, or the
        gateway error that ended it."""
        label = str(bot.bot_id)
        budget = self.settings.send_max_wait  # extra seconds this message may wait
        reply: Reply | None = None
        for attempt in range(ATTEMPTS):
            if fresh_slot:
                started = time.time()
                try:
                    (slot,) = self.pacer.reserve(bot.bot_id, chat, 1, max_wait=budget)
                    waited = time.time()
                    self.pacer.wait_turn(bot.bot_id, chat, slot)
                except (RateLimited, PacingUnavailable) as exc:
                    metrics.SENDS.labels(label, method, _refusal(exc)).inc()
                    return reply, exc
                budget -= time.time() - waited
                metrics.SEND_WAIT.labels(label).observe(max(0.0, slot - started))
            if upload is not None:
                upload.stream.seek(0)
            departure: Departure | None = None
            if method in _PACED:
                try:  # the gate: the facts of earlier calls' answers (see pacing)
                    departure = self.pacer.depart(bot.bot_id, chat, _count(method, params))
                except PacingUnavailable as exc:
                    metrics.SENDS.labels(label, method, _refusal(exc)).inc()
                    return reply, exc
            began = time.perf_counter()
            try:
                reply = self.api.post(bot.token, method, params, upload, self.settings.send_timeout)
            except BotApiError as exc:
                status = "timeout" if isinstance(exc, BotApiTimeout) else "unavailable"
                metrics.SENDS.labels(label, method, status).inc()
                logger.warning("bot %s: %s", bot.label, redact(str(exc)))
                return None, exc
            finally:
                if departure is not None:
                    self.pacer.answered(departure)
                metrics.SEND_SECONDS.labels(method).observe(time.perf_counter() - began)
            reply = self.guard.clean(bot, method, reply)
            envelope = reply.envelope
            if envelope.get("ok"):
                metrics.SENDS.labels(label, method, "ok").inc()
                return reply, None
            code = envelope.get("error_code")
            metrics.SENDS.labels(label, method, str(code)).inc()
            if code != 429:
                return reply, None
            metrics.BOTAPI_429.labels(label).inc()
            retry_after = _retry_after(envelope)
            logger.warning(
                "bot %s: the Bot API answered 429 to %s (retry after %s s, attempt %d/%d)",
                bot.label,
                method,
                retry_after,
                attempt + 1,
                ATTEMPTS,
            )
            if attempt + 1 >= ATTEMPTS or retry_after > budget:
                return reply, None
            time.sleep(retry_after)
            budget -= retry_after
            fresh_slot = method in _PACED
        return reply, None

    def _remember_move(self, bot: BotConfig, old: Any, new: int) -> None:
        if len(self._moved) > 10000:
            self._moved.clear()
        self._moved[(bot.bot_id, str(old))] = new
        logger.info("bot %s: chat %s moved to supergroup %s", bot.label, old, new)


def _refusal(exc: GatewayError) -> str:
    """The sends metric's status for a message that was not sent."""
    return "refused" if isinstance(exc, RateLimited) else "unavailable"


def _pacing_chat(method: str, chat_id: Any) -> Chat | None:
    """The chat whose limit a call counts against; None: only the bot's (a method that does
    not put a message into a chat, or an edit of an inline message, which has no chat_id)."""
    return Chat.of(chat_id) if method in _CHAT_PACED else None


def _count(method: str, params: Mapping[str, Any]) -> int:
    """How many messages one call puts into the chat (an album: one per item)."""
    if method == "sendMediaGroup":
        media = params.get("media")
        if isinstance(media, list) and media:
            return min(len(media), 10)
    return 1


def _retry_after(envelope: Mapping[str, Any]) -> float:
    parameters = envelope.get("parameters")
    value = parameters.get("retry_after") if isinstance(parameters, dict) else None
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def _migrate_to(envelope: Mapping[str, Any]) -> int | None:
    if envelope.get("error_code") != 400:
        return None
    parameters = envelope.get("parameters")
    value = parameters.get("migrate_to_chat_id") if isinstance(parameters, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
