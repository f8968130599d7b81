"""Flood control as Telegram applies it: sliding windows per bot, per chat, per group.

Strict by default, as Telegram is: every limit is a sliding window measured when a request
arrives, with no tolerance -- 30 per second per bot, 1 per second per private chat, 20 per 60 s
per group, supergroup or channel. ``tolerance`` (seconds, control API only) shortens every
window by that much, for experiments with clients that pace by their own clock; the gateway's
tests never set it. A private chat is a window of one message per 1 / ``private_chat_per_second``
seconds, kept as the time its next message is due (the generic cell rate algorithm: each
message, each item of an album too, moves it by one interval); ``private_chat_burst`` > 1 lets
that many go at once; 1, the default, is the strict window.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from botapi_emulator.chats import ChatState
from botapi_emulator.errors import ControlError


@dataclass
class Limits:
    """Telegram's flood limits; 0 disables one limit, ``enabled`` all of them."""

    enabled: bool = True
    per_bot_per_second: float = 30
    private_chat_per_second: float = 1
    private_chat_burst: float = 1
    group_per_minute: float = 20
    tolerance: float = 0.0  # seconds every window is shortened by; 0 is Telegram

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "per_bot_per_second": self.per_bot_per_second,
            "private_chat_per_second": self.private_chat_per_second,
            "private_chat_burst": self.private_chat_burst,
            "group_per_minute": self.group_per_minute,
            "tolerance": self.tolerance,
        }

    def update(self, spec: dict[str, Any]) -> None:
        for key, value in spec.items():
            if key == "enabled":
                self.enabled = bool(value)
            elif key in self.to_dict():
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ControlError(f"limit {key} must be a number >= 0")
                if key == "tolerance" and value >= 1:
                    raise ControlError("limit tolerance must be below 1 second")
                setattr(self, key, value)
            else:
                raise ControlError(f"unknown limit {key!r}")


def _window_wait(
    times: collections.deque[float], limit: float, window: float, now: float, needed: int = 1
) -> float:
    """Seconds until ``needed`` more events fit ``limit`` events per sliding ``window``."""
    while times and times[0] <= now - window:
        times.popleft()
    count = int(limit)
    if count <= 0:
        return 0.0
    excess = len(times) + min(needed, count) - count
    if excess <= 0:
        return 0.0
    return times[excess - 1] + window - now


class FloodState:
    """One bot's flood-control windows (per bot, per private chat, per group)."""

    def __init__(self) -> None:
        self.bot_times: collections.deque[float] = collections.deque()
        self.private: dict[int, float] = {}  # chat -> when its next message is due (GCRA)
        self.groups: dict[int, collections.deque[float]] = {}

    def wait(self, limits: Limits, chat: ChatState, now: float, count: int = 1) -> float:
        """0 when ``count`` messages (an album: one per item) may go now, else the seconds to
        wait. An album needs room for all its items in the bot's window and in a group's; in
        a private chat, one message's turn, and each item then costs a turn of its own."""
        return self.check(limits, chat, now, count)[0]

    def check(
        self, limits: Limits, chat: ChatState, now: float, count: int = 1
    ) -> tuple[float, str]:
        """:meth:`wait`, and which limit it is: ``bot``, ``private_chat`` or ``group``."""
        waits = [
            (
                _window_wait(
                    self.bot_times, limits.per_bot_per_second, 1.0 - limits.tolerance, now, count
                ),
                "bot",
            )
        ]
        if chat.type == "private":
            rate = limits.private_chat_per_second
            if rate > 0:
                burst = max(int(limits.private_chat_burst), 1)
                due = self.private.get(chat.id, now) - (burst - 1) / rate - limits.tolerance
                waits.append((due - now, "private_chat"))
        else:
            times = self.groups.setdefault(chat.id, collections.deque())
            window = _window_wait(
                times, limits.group_per_minute, 60.0 - limits.tolerance, now, count
            )
            waits.append((window, "group"))
        wait, which = max(waits)
        return max(0.0, wait), which

    def commit(self, limits: Limits, chat: ChatState, now: float, count: int = 1) -> None:
        self.bot_times.extend([now] * count)
        if chat.type == "private":
            rate = limits.private_chat_per_second
            if rate > 0:
                self.private[chat.id] = max(self.private.get(chat.id, now), now) + count / rate
        else:
            self.groups.setdefault(chat.id, collections.deque()).extend([now] * count)
