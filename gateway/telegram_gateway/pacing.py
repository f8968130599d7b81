"""Telegram's flood limits, enforced before sending, shared by every worker on the host.

Telegram answers 429 (``retry_after``) when a bot sends more than 30 messages per second
overall, more than 1 message per second to one private chat, or more than 20 messages per
minute to one group, supergroup or channel, each measured as a sliding window when a request
arrives, with no tolerance. The gateway never gets there: each message first *reserves a time
slot* that satisfies all three limits with a margin, then sleeps until its slot and sends.

Why a file: gunicorn runs several worker processes and each can send for the same bot, so the
budget lives in a small state file per bot, ``<GATEWAY_STATE_DIR>/pacing/<bot_id>.slots``,
shared by every worker on the host. A reservation takes the file's ``fcntl.flock`` with
``LOCK_NB`` (retried with a short cooperative sleep: a blocking flock would block the whole
gevent hub), reads the calendar, picks the earliest slot, writes it back and unlocks, all in
well under a millisecond. Greenlets of one process first take an in-process lock (flock is
per open file, so it does not exclude greenlets sharing the descriptor).

The calendar (times are ``time.time()``, comparable across processes):

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

Slots are handed out in the order reservations arrive, and a chat's new slot is always later
than its previous ones, so messages to one chat leave in the order they were accepted; a long
text reserves consecutive slots for all its parts at once. When the earliest slot is more than
``max_wait`` seconds away nothing is reserved and :class:`RateLimited` tells the caller when
to retry (``/send`` answers 429 with ``Retry-After``) instead of keeping it waiting.

A state file that cannot be parsed (a crash in the middle of a write) is started afresh;
entries implausibly far in the future (a clock that jumped back) are dropped.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import fcntl
import itertools
import logging
import math
import os
import struct
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
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
LOCK_POLL = 0.0005  # first sleep between two LOCK_NB attempts; doubles up to LOCK_POLL_MAX
LOCK_POLL_MAX = 0.01
LOCK_TIMEOUT = 10.0  # a lock nobody releases for this long is a bug: fail loudly


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
    """Reserves send slots for bots; one per worker process, shared by its greenlets."""

    def __init__(
        self,
        directory: Path,
        max_wait: float,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.directory = directory
        self.max_wait = max_wait
        self.enabled = enabled
        self.clock = clock
        self.sleep = sleep
        self._fds: dict[int, int] = {}
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
        with self._locked(bot_id) as (fd, state):
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
            self._write(fd, state)
        return slots

    def cancel(self, bot_id: int, chat: Chat | None, slots: list[float]) -> None:
        """Give back slots that will not be used (a later part failed, or a retry re-reserves)."""
        if not self.enabled or not slots:
            return
        with self._locked(bot_id) as (fd, state):
            for slot in slots:
                _remove(state["g"], slot)
                if chat is not None and chat.key in state["c"]:
                    _remove(state["c"][chat.key], slot)
            self._write(fd, state)

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
        with self._locked(bot_id) as (fd, state):
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
            self._write(fd, state)
        logger.debug(
            "bot %s: at %.0f ms past its slot, moved to a slot %.0f ms from now",
            bot_id,
            (now - slot) * 1000,
            (moved - now) * 1000,
        )
        return moved

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

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

    # ---- the state file ------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, bot_id: int) -> Iterator[tuple[int, dict[str, Any]]]:
        with self._local:
            fd = self._fd(bot_id)
            self._flock(fd)
            try:
                yield fd, self._read(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _fd(self, bot_id: int) -> int:
        fd = self._fds.get(bot_id)
        if fd is None:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.directory / f"{bot_id}.slots"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fds[bot_id] = fd
        return fd

    def _flock(self, fd: int) -> None:
        """Take the exclusive lock without ever blocking the process (LOCK_NB + sleep)."""
        delay = LOCK_POLL
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the pacing lock in {self.directory} was held for more than "
                    f"{LOCK_TIMEOUT:g} s; is another process stuck?"
                )
            self.sleep(delay)
            delay = min(delay * 2, LOCK_POLL_MAX)

    def _read(self, fd: int) -> dict[str, Any]:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, size, 0) if size else b""
        if raw:
            try:
                return _decode(raw)
            except (ValueError, struct.error, UnicodeDecodeError):
                logger.warning("pacing state in %s was unreadable; starting afresh", self.directory)
        return {"g": [], "c": {}}

    def _write(self, fd: int, state: dict[str, Any]) -> None:
        data = _encode(state)
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))


# ---- the state file's format (little endian) ----------------------------------------------
#   MAGIC, u32 n, n x f64        the reserved bot-wide slot times (sorted)
#   u32 m, u32 b, b bytes        m chat keys, NUL separated (UTF-8)
#   m x u32, sum x f64           how many times each chat has, then all of them (sorted per chat)
MAGIC = b"GWP2"
_U32 = struct.Struct("<I")
_U32x2 = struct.Struct("<II")


def _encode(state: dict[str, Any]) -> bytes:
    chats: dict[str, list[float]] = state["c"]
    keys = "\x00".join(chats).encode()
    counts = array("I", [len(times) for times in chats.values()])
    flat = array("d", itertools.chain.from_iterable(chats.values()))
    return b"".join(
        (
            MAGIC,
            _U32.pack(len(state["g"])),
            array("d", state["g"]).tobytes(),
            _U32x2.pack(len(chats), len(keys)),
            keys,
            counts.tobytes(),
            flat.tobytes(),
        )
    )


def _decode(raw: bytes) -> dict[str, Any]:
    if raw[:4] != MAGIC:
        raise ValueError("not a pacing state file")
    view = memoryview(raw)
    (count,) = _U32.unpack_from(view, 4)
    offset = 8 + 8 * count
    bot_wide = _doubles(view[8:offset], count)
    chat_count, key_bytes = _U32x2.unpack_from(view, offset)
    offset += 8
    keys = bytes(view[offset : offset + key_bytes]).decode().split("\x00") if chat_count else []
    offset += key_bytes
    counts = array("I")
    counts.frombytes(view[offset : offset + 4 * chat_count])
    offset += 4 * chat_count
    flat = _doubles(view[offset:], sum(counts))
    if len(keys) != chat_count or len(counts) != chat_count:
        raise ValueError("inconsistent chat table")
    chats: dict[str, list[float]] = {}
    position = 0
    for key, number in zip(keys, counts, strict=True):
        chats[key] = flat[position : position + number]
        position += number
    return {"g": bot_wide, "c": chats}


def _doubles(view: memoryview, count: int) -> list[float]:
    if len(view) != 8 * count:
        raise ValueError("truncated pacing state")
    values = array("d")
    values.frombytes(view)
    return values.tolist()


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
