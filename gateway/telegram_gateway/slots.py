"""Send slots from the bot's owner: every worker sends, one worker paces each bot.

A ``POST /send`` or a ``telegram.out.<bot>.<method>`` request may arrive at any worker (of any
host), but only the bot's owner (:mod:`telegram_gateway.ownership`) keeps the bot's calendar
(:class:`telegram_gateway.pacing.Pacer`, in its memory). :class:`Slots` has the Pacer's
calls and routes each:

* this worker owns the bot: its own Pacer, no NATS round trip;
* another worker does: a NATS request to that worker's subject ``_GATEWAY.slots.<worker>``
  (only the gateway's NATS user may publish or subscribe there). ``reserve`` and ``cancel``
  answer at once; ``turn`` is answered when the slot is due (the owner sleeps until then and
  re-checks the chat's calendar, as for its own sends), and the asking worker calls the Bot API
  right away. The message itself never crosses NATS, so a 2,000 MB upload is sent by the worker
  that received it, and paced by the owner all the same;
* the gate (``depart`` and ``answered``) is the owner's as well: ``depart`` is answered when
  the call may leave, with an id, and ``answered`` tells the owner the call's answer is back (if
  that message is lost, the owner counts the call answered after ``answer_within``);
* nobody owns the bot right now (a takeover is under way): wait for an owner up to the lease
  time, then give up.

Whenever no slot can be had (NATS disconnected, no owner, the owner does not answer within
``ASK_TIMEOUT``) the send fails with :class:`PacingUnavailable` before anything was sent:
``/send`` answers 503 with ``Retry-After``, a NATS request gets a 503 envelope, and an
Idempotency-Key is released so that the retry really sends.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from typing import Any

from telegram_gateway.bus import Bus, Request
from telegram_gateway.config import Settings
from telegram_gateway.errors import BusUnavailable, PacingUnavailable, RateLimited
from telegram_gateway.health import Check
from telegram_gateway.ownership import Ownership
from telegram_gateway.pacing import Chat, Departure, Pacer

logger = logging.getLogger(__name__)

#: ``_GATEWAY.slots.<worker>``: the owner's slot service (gateway user only)
SUBJECT_PREFIX = "_GATEWAY.slots"
ASK_TIMEOUT = 1.0  # seconds an owner has to answer a reserve or cancel


class Slots:
    """The Pacer interface, routed to each bot's owner (see the module docstring)."""

    def __init__(self, settings: Settings, bus: Bus, ownership: Ownership, pacer: Pacer) -> None:
        self.settings = settings
        self.bus = bus
        self.ownership = ownership
        self.pacer = pacer
        self.max_wait = pacer.max_wait
        self.subject = f"{SUBJECT_PREFIX}.{ownership.name}"
        self._ids = itertools.count(1)
        self._remote: dict[str, Departure] = {}  # other workers' calls in flight, by id

    # ---- component protocol ----------------------------------------------------------------
    def start(self) -> None:
        self.bus.serve(self.subject, self.handle)

    def stop(self) -> None:
        self.pacer.close()

    def checks(self) -> dict[str, Check]:
        return {}

    # ---- the Pacer's calls -----------------------------------------------------------------
    def reserve(
        self, bot_id: int, chat: Chat | None, count: int = 1, max_wait: float | None = None
    ) -> list[float]:
        answer = self._ask(
            bot_id,
            {"op": "reserve", "chat": _chat(chat), "count": count, "max_wait": max_wait},
            ASK_TIMEOUT,
        )
        if answer is None:
            return self.pacer.reserve(bot_id, chat, count, max_wait)
        if "rate_limited" in answer:
            raise RateLimited(int(answer["rate_limited"]), str(answer.get("message") or ""))
        return [float(slot) for slot in answer["slots"]]

    def cancel(self, bot_id: int, chat: Chat | None, slots: list[float]) -> None:
        if not slots:
            return
        try:
            answer = self._ask(
                bot_id, {"op": "cancel", "chat": _chat(chat), "slots": slots}, ASK_TIMEOUT
            )
        except PacingUnavailable as exc:  # the slots just stay unused
            logger.debug("bot %s: could not give back %d slot(s): %s", bot_id, len(slots), exc)
            return
        if answer is None:
            self.pacer.cancel(bot_id, chat, slots)

    def wait_turn(self, bot_id: int, chat: Chat | None, slot: float) -> float:
        # the owner answers when the slot is due (its own re-checks included)
        timeout = max(0.0, slot - time.time()) + ASK_TIMEOUT + 5.0
        answer = self._ask(bot_id, {"op": "turn", "chat": _chat(chat), "slot": slot}, timeout)
        if answer is None:
            return self.pacer.wait_turn(bot_id, chat, slot)
        return float(answer["slot"])

    def depart(self, bot_id: int, chat: Chat | None, count: int = 1) -> Departure:
        timeout = self.pacer.answer_within + ASK_TIMEOUT
        question = {"op": "depart", "chat": _chat(chat), "count": count}
        answer = self._ask(bot_id, question, timeout)
        if answer is None:
            return self.pacer.depart(bot_id, chat, count)
        return Departure(time.time(), count, remote=(bot_id, str(answer["departure"])))

    def answered(self, departure: Departure) -> None:
        if departure.remote is None:
            self.pacer.answered(departure)
            return
        departure.done = time.time()
        bot_id, key = departure.remote
        try:
            self._ask(bot_id, {"op": "answered", "departure": key}, ASK_TIMEOUT)
        except PacingUnavailable as exc:  # the owner counts it answered after answer_within
            logger.debug("could not report an answered call to the owner: %s", exc)

    # ---- asking the owner ------------------------------------------------------------------
    def _ask(self, bot_id: int, question: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The owner's answer; None when this worker owns the bot (use the local Pacer), or
        when pacing is off (GATEWAY_SEND_PACING=false: nothing to agree on)."""
        if not self.pacer.enabled:
            return None
        question["bot"] = bot_id
        payload = json.dumps(question).encode()
        try:
            return self.ownership.ask_owner(bot_id, SUBJECT_PREFIX, payload, timeout)
        except BusUnavailable as exc:
            raise PacingUnavailable(
                f"the worker that paces bot {bot_id} did not answer ({exc}); nothing was sent"
            ) from None

    def handle(self, request: Request) -> bytes:
        """Another worker asks this one, the owner, for a slot."""
        try:
            question = json.loads(request.data)
            bot_id = int(question["bot"])
            op = question["op"]
            chat = _unchat(question.get("chat"))
        except (ValueError, KeyError, TypeError):
            return b'{"error":"malformed slot request"}'
        if not self.ownership.holds(bot_id):
            return b'{"not_owner":true}'
        answer: dict[str, Any]
        if op == "reserve":
            try:
                max_wait = question.get("max_wait")
                slots = self.pacer.reserve(
                    bot_id,
                    chat,
                    int(question.get("count") or 1),
                    None if max_wait is None else float(max_wait),
                )
                answer = {"slots": slots}
            except RateLimited as exc:
                answer = {"rate_limited": exc.retry_after, "message": str(exc)}
        elif op == "cancel":
            self.pacer.cancel(bot_id, chat, [float(slot) for slot in question.get("slots", [])])
            answer = {"ok": True}
        elif op == "turn":
            answer = {"slot": self.pacer.wait_turn(bot_id, chat, float(question["slot"]))}
        elif op == "depart":
            departure = self.pacer.depart(bot_id, chat, int(question.get("count") or 1))
            key = str(next(self._ids))
            self._remote[key] = departure
            stale = time.time() - self.pacer.answer_within  # counted as answered by now
            while self._remote:
                oldest = next(iter(self._remote))
                if self._remote[oldest].left >= stale:
                    break
                del self._remote[oldest]
            answer = {"departure": key}
        elif op == "answered":
            gone = self._remote.pop(str(question.get("departure")), None)
            if gone is not None:
                self.pacer.answered(gone)
            answer = {"ok": gone is not None}
        else:
            answer = {"error": f"unknown op {op!r}"}
        return json.dumps(answer).encode()


def _chat(chat: Chat | None) -> list[Any] | None:
    return None if chat is None else [chat.key, chat.private]


def _unchat(value: Any) -> Chat | None:
    if value is None:
        return None
    key, private = value
    return Chat(str(key), bool(private))
