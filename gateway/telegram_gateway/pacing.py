"""Telegram's flood limits, enforced before sending, in the memory of the bot's owner.

Telegram answers 429 (``retry_after``) when a bot sends more than 30 messages per second
overall, more than 1 message per second to one private chat, or more than 20 messages per
minute to one group, supergroup or channel, each measured as a sliding window when a request
arrives, with no tolerance. The gateway never gets there: each message first *reserves a time
slot* that satisfies all three limits with a margin, then sleeps until its slot and sends.

Whose memory: every bot has one owner among the workers (its lease in ``TELEGRAM_OWNERS``,
:mod:`telegram_gateway.ownership`), and only the owner's :class:`Pacer` hands out the bot's
slots; a worker that receives a send for a bot it does not own asks the owner for the slot
(:mod:`telegram_gateway.slots`) and sends itself when the owner says go. So one calendar per bot
exists at a time, in one process, guarded by an in-process lock (cooperative under gevent).

The calendar (times are ``time.time()`` of the owner):

* per bot, every reserved send time of the last second and the future; a new slot keeps at
  least ``1/BOT_RATE`` s from every other one (evenly spaced: any 1 s window holds at most 30);
* per private chat (``chat_id`` > 0), the last reserved time; the next slot is at least
  ``PRIVATE_INTERVAL`` later;
* per group, supergroup or channel (``chat_id`` < 0, or ``@username``), the reserved times of
  the last ``GROUP_WINDOW`` s; at most ``GROUP_LIMIT`` of them in any window.

Sending late is as harmful as sending early: a process that did not get the CPU for a while
wakes up together with the punctual ones. A message more than ``LATE_TOLERANCE`` behind its
slot therefore takes a new bot-wide slot from now (``wait_turn``) instead of going at once,
and a message to a chat checks the chat's calendar again as it leaves: an earlier message to
that chat that left late moved its entry closer, and the later one moves to keep its
distance (``_chat_ready``).

The calendar is a plan made before sending; it cannot know when a request will *arrive*.
So every call also *departs* through a gate that only knows facts: Telegram cannot have
received a call later than its answer came back, nor earlier than it left. A call may leave
only once the call 30 messages before it (bot-wide), the previous one to the same private chat,
or the one 20 messages before it to the same group was answered at least the window's length
ago (``depart`` and ``answered``). Then, whatever the delays between the gateway and the Bot
API, no window can hold more than Telegram allows. On an idle host the calendar's margins keep
the gate open; on a starved one (a late answer, a queue at the server) the gate holds the next
calls back by exactly the delay. A call whose answer never comes counts as answered after
``answer_within`` seconds (the gateway's own timeout for it).

Slots are handed out in the order reservations arrive, and a chat's new slot is always later
than its previous ones, so messages to one chat leave in the order they were accepted; a long
text reserves consecutive slots for all its parts at once. When the earliest slot is more than
``max_wait`` seconds away nothing is reserved and :class:`RateLimited` tells the caller when
to retry (``/send`` answers 429 with ``Retry-After``) instead of keeping it waiting.

Entries implausibly far in the future (a clock that jumped back) are dropped.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from telegram_gateway.errors import RateLimited

logger = logging.getLogger(__name__)

# messages per second per bot, evenly spaced. Telegram counts 30 in any second at arrival;
# at 28.8/s, 31 messages span 1.042 s, so 42 ms of jitter between a send and its arrival are
# absorbed. Measured with the 1,000-message burst on a 2-core host with six CPU hogs (load ~7):
# one bot-wide 429 in 2 of 3 bursts at 29/s, in 1 of 3 at 28.8/s; with four (load ~4) none in
# 3 bursts at 28.8/s, one in 3 at 29/s. The
# burst then takes 1.041 x the theoretical minimum (target 1.05, which bounds the margin).
BOT_RATE = 28.8
BOT_SPACING = 1.0 / BOT_RATE + 1e-6  # (a microsecond against float rounding)
# Telegram measures every limit as a sliding window when a request *arrives*, with no
# tolerance: two messages to one private chat that arrive 999 ms apart are a 429. Send times
# are not arrival times (scheduling, the connection, the server's own queue), so every limit
# keeps a margin: 28.8 instead of 30 per second, 1.04 s instead of 1 s, 61 s instead of 60.
PRIVATE_INTERVAL = 1.04  # seconds between two messages to one private chat (Telegram: 1)
GROUP_LIMIT = 20  # messages per GROUP_WINDOW to one group / supergroup / channel
GROUP_WINDOW = 61.0  # Telegram says "per minute"; one second of margin for network jitter
KEEP_PAST = 1.0  # seconds of bot-wide history kept (only the last 1/BOT_RATE matters)
FUTURE_SLACK = 600.0  # entries further ahead than max_wait + this are a clock jump: dropped
LATE_TOLERANCE = 0.015  # a send this much behind its slot re-checks the bot-wide spacing
# the gate: a call leaves this long after the answer that bounds it, at least (Telegram's
# windows are exact: one second is not less than one second)
GATE_EPSILON = 0.001
GATE_POLL = 0.005  # seconds between looks at a call still in flight that the gate waits for
BOT_LIMIT = 30  # messages per second per bot (Telegram's window, for the gate)
PRIVATE_WINDOW = 1.0  # seconds per message to one private chat (Telegram's, for the gate)
GROUP_WINDOW_EXACT = 60.0  # seconds of Telegram's group window (for the gate)


@dataclass
class Departure:
    """A call that left for the Bot API with ``count`` messages: it counts in Telegram's
    windows from its arrival, some time between ``left`` and ``done`` (when its answer came
    back; None while in flight)."""

    left: float
    count: int = 1
    done: float | None = None
    remote: tuple[int, str] | None = None  # (bot, the owner's id for it): another worker paces


@dataclass(frozen=True)
class Chat:
    """The pacing identity of a chat: ``key`` in the calendar and whether it is private."""

    key: str
    private: bool

    @classmethod
    def of(cls, chat_id: int | str | None) -> Chat | None:
        """``chat_id`` > 0 is a user (private chat); < 0 a group (``-100…`` a supergroup or
        channel); ``@username`` a public supergroup or channel. None: not a chat message."""
        if chat_id is None or isinstance(chat_id, bool):
            return None
        if isinstance(chat_id, int):
            return cls(str(chat_id), chat_id > 0)
        text = str(chat_id).strip()
        if text.startswith("@"):
            return cls(text.lower(), False)
        try:
            number = int(text)
        except ValueError:
            return None
        return cls(str(number), number > 0)


class Pacer:
    """Reserves send slots for the bots this worker owns; one per worker process, shared by
    its greenlets."""

    def __init__(
        self,
        max_wait: float,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        answer_within: float = 60.0,
    ) -> None:
        self.max_wait = max_wait
        self.enabled = enabled
        self.answer_within = answer_within  # a call unanswered for this long counts as answered
        self.clock = clock
        self.sleep = sleep
        self._states: dict[int, dict[str, Any]] = {}
        self._local = threading.Lock()  # gevent-patched in workers: cooperative

    # ---- public --------------------------------------------------------------------------
    def reserve(
        self,
        bot_id: int,
        chat: Chat | None,
        count: int = 1,
        max_wait: float | None = None,
    ) -> list[float]:
        """Reserve ``count`` consecutive slots (times) for messages of ``bot_id`` to ``chat``
        (None: bot-wide limit only). Raises :class:`RateLimited` when the first slot is more
        than ``max_wait`` (default: the configured one) seconds away; then nothing is
        reserved."""
        if not self.enabled:
            return [self.clock()] * count
        bound = self.max_wait if max_wait is None else max_wait
        with self._locked(bot_id) as state:
            now = self.clock()  # after the lock: waiting for it must not age the request
            self._prune(state, now)
            slots = self._plan(state, chat, count, now)
            wait = slots[0] - now
            if wait > bound + 1e-6:
                raise RateLimited(
                    max(1, math.ceil(wait - bound)),
                    f"Telegram's limits allow the next message for this chat in {wait:.1f} s, "
                    f"longer than GATEWAY_SEND_MAX_WAIT ({bound:g} s)",
                )
            for slot in slots:
                bisect.insort(state["g"], slot)
                if chat is not None:
                    state["c"].setdefault(chat.key, []).append(slot)
        return slots

    def cancel(self, bot_id: int, chat: Chat | None, slots: list[float]) -> None:
        """Give back slots that will not be used (a later part failed, or a retry re-reserves)."""
        if not self.enabled or not slots:
            return
        with self._locked(bot_id) as state:
            for slot in slots:
                _remove(state["g"], slot)
                if chat is not None and chat.key in state["c"]:
                    _remove(state["c"][chat.key], slot)

    def wait_until(self, slot: float) -> float:
        """Sleep (cooperatively) until ``slot``; returns how long it slept."""
        delay = slot - self.clock()
        if delay > 0:
            self.sleep(delay)
            return delay
        return 0.0

    def wait_turn(self, bot_id: int, chat: Chat | None, slot: float) -> float:
        """Sleep until ``slot``, then make sure it is still a good time to send. A sleeper
        woken late (a busy host) would send right next to the on-time ones and bunch more
        messages into a second than the limit allows; it takes a new bot-wide slot from now
        instead. And a message to a chat checks the chat's calendar as it stands when it
        leaves: an earlier message to the same chat that was itself late has moved closer
        (``_chat_ready``). Returns the time it may send (now)."""
        for _ in range(10):
            self.wait_until(slot)
            if not self.enabled:
                return slot
            late = self.clock() - slot > LATE_TOLERANCE
            if not late and chat is None:
                return slot
            moved = self._move(bot_id, chat, slot, late)
            if moved == slot:
                return slot
            slot = moved
        return slot

    def _move(self, bot_id: int, chat: Chat | None, slot: float, late: bool) -> float:
        """``slot`` if the message may leave now; else the new slot it has taken."""
        with self._locked(bot_id) as state:
            now = self.clock()
            earliest = now if late else slot
            times = state["c"].setdefault(chat.key, []) if chat is not None else []
            if chat is not None:
                earliest = max(earliest, _chat_ready(chat, times, slot, now))
            if earliest == slot:
                return slot
            _remove(state["g"], slot)
            moved = _free_slot(state["g"], earliest, BOT_SPACING)
            bisect.insort(state["g"], moved)
            if chat is not None:
                _remove(times, slot)
                bisect.insort(times, moved)
        logger.debug(
            "bot %s: at %.0f ms past its slot, moved to a slot %.0f ms from now",
            bot_id,
            (now - slot) * 1000,
            (moved - now) * 1000,
        )
        return moved

    def depart(self, bot_id: int, chat: Chat | None, count: int = 1) -> Departure:
        """Wait until the gate lets a call with ``count`` messages of ``bot_id`` to ``chat``
        (None: bot-wide only) leave, and count it as gone from now; :meth:`answered` when its
        answer is back (see the module docstring)."""
        if not self.enabled:
            return Departure(self.clock(), count)
        while True:
            with self._locked(bot_id) as state:
                now = self.clock()
                wait = self._gate(state, chat, count, now)
                if wait <= 0:
                    departure = Departure(now, count)
                    gone: list[Departure] = state["d"]
                    gone.append(departure)
                    del gone[:-BOT_LIMIT]  # each holds a message at least: 30 are enough
                    if chat is not None:
                        log = state["dc"].setdefault(chat.key, [])
                        log.append(departure)
                        del log[: -(1 if chat.private else GROUP_LIMIT)]
                    return departure
            if wait > GATE_POLL:
                logger.debug("bot %s: the gate holds a call back for %.0f ms", bot_id, wait * 1e3)
            self.sleep(wait)

    def answered(self, departure: Departure) -> None:
        """The call's answer is back (or it failed): it arrived by now, if at all."""
        if departure.done is None:
            departure.done = self.clock()

    def _gate(self, state: dict[str, Any], chat: Chat | None, count: int, now: float) -> float:
        """Seconds until a call with ``count`` messages may leave (<= 0: now)."""
        within = self.answer_within
        waits = [_bound(state["d"], BOT_LIMIT + 1 - count, 1.0, now, within)]
        log: list[Departure] | None = state["dc"].get(chat.key) if chat is not None else None
        if chat is not None and log:
            if chat.private:
                last = log[-1]
                waits.append(_after(last, PRIVATE_WINDOW * last.count, now, within))
            else:
                waits.append(_bound(log, GROUP_LIMIT + 1 - count, GROUP_WINDOW_EXACT, now, within))
        return max(waits)

    def forget(self, bot_id: int) -> None:
        """Drop a bot's calendar (this worker no longer owns the bot)."""
        with self._local:
            self._states.pop(bot_id, None)

    def close(self) -> None:
        with self._local:
            self._states.clear()

    # ---- the calendar --------------------------------------------------------------------
    def _plan(
        self, state: dict[str, Any], chat: Chat | None, count: int, now: float
    ) -> list[float]:
        booked: list[float] = list(state["g"])
        history: list[float] = list(state["c"].get(chat.key, [])) if chat else []
        slots: list[float] = []
        spacing = BOT_SPACING
        earliest = now
        for _ in range(count):
            if chat is not None and history:
                if chat.private:
                    earliest = max(earliest, history[-1] + PRIVATE_INTERVAL)
                else:
                    earliest = max(earliest, history[-1] + spacing)
                    if len(history) >= GROUP_LIMIT:
                        earliest = max(earliest, history[-GROUP_LIMIT] + GROUP_WINDOW)
            slot = _free_slot(booked, earliest, spacing)
            bisect.insort(booked, slot)
            history.append(slot)
            slots.append(slot)
            earliest = slot
        return slots

    def _prune(self, state: dict[str, Any], now: float) -> None:
        horizon = now + self.max_wait + FUTURE_SLACK
        bot_wide = state["g"]
        start = bisect.bisect_left(bot_wide, now - KEEP_PAST)
        end = bisect.bisect_right(bot_wide, horizon)
        if start or end < len(bot_wide):
            state["g"] = bot_wide[start:end]
        logs: dict[str, list[Departure]] = state["dc"]
        for key, log in list(logs.items()):
            last = log[-1]
            window = PRIVATE_WINDOW * last.count if not key.startswith(("-", "@")) else GROUP_WINDOW
            if last.done is not None and last.done < now - window - 1.0:
                del logs[key]  # answered long enough ago: it bounds nothing any more
        chats: dict[str, list[float]] = state["c"]
        for key, times in list(chats.items()):
            keep = PRIVATE_INTERVAL if not key.startswith(("-", "@")) else GROUP_WINDOW
            if times[-1] <= now - keep:
                del chats[key]  # nothing recent: the chat has its full budget again
            elif times[0] <= now - keep or times[-1] > horizon:
                kept = [t for t in times if now - keep < t <= horizon]
                if kept:
                    chats[key] = kept
                else:
                    del chats[key]

    # ---- the calendar's memory -----------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, bot_id: int) -> Iterator[dict[str, Any]]:
        with self._local:
            state = self._states.get(bot_id)
            if state is None:
                # g: the bot's booked slots, c: each chat's; d: the bot's last departures,
                # dc: each chat's (the gate's facts)
                state = self._states[bot_id] = {"g": [], "c": {}, "d": [], "dc": {}}
            yield state


def _bound(log: list[Departure], position: int, window: float, now: float, within: float) -> float:
    """Seconds until the departure holding the ``position``-th most recent message of ``log``
    was answered ``window`` ago (<= 0: already; fewer messages than that: no bound)."""
    seen = 0
    for departure in reversed(log):
        seen += departure.count
        if seen >= position:
            return _after(departure, window, now, within)
    return -1.0


def _after(departure: Departure, window: float, now: float, within: float) -> float:
    """Seconds until ``window`` has passed since ``departure`` was answered (a call still in
    flight: look again shortly, or, unanswered for ``within`` seconds, count it answered)."""
    done = departure.done
    if done is None:
        if now - departure.left < within:
            return GATE_POLL
        done = departure.left + within
    return done + window + GATE_EPSILON - now


def _chat_ready(chat: Chat, times: list[float], slot: float, now: float) -> float:
    """The earliest a message booked at ``slot`` may leave for ``chat``, given the chat's
    other bookings that are due by ``now`` (sent, or leaving now)."""
    others = list(times)
    _remove(others, slot)
    due = others[: bisect.bisect_right(others, now)]
    if not due:
        return slot
    if chat.private:
        return max(slot, due[-1] + PRIVATE_INTERVAL)
    if len(due) >= GROUP_LIMIT:
        return max(slot, due[-GROUP_LIMIT] + GROUP_WINDOW)
    return slot


def _free_slot(booked: list[float], earliest: float, spacing: float) -> float:
    """The earliest time >= ``earliest`` at least ``spacing`` away from every booked time
    (``booked`` is sorted)."""
    slot = earliest
    index = bisect.bisect_right(booked, slot - spacing + 1e-9)
    while index < len(booked) and booked[index] < slot + spacing - 1e-9:
        slot = booked[index] + spacing
        index += 1
    return slot


def _remove(times: list[float], value: float) -> None:
    index = bisect.bisect_left(times, value - 1e-9)
    if index < len(times) and abs(times[index] - value) < 1e-6:
        del times[index]
