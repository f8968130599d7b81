"""Flood control as Telegram applies it: sliding windows per bot, per chat, per group."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from botapi_emulator.chats import ChatState
from botapi_emulator.constants import FLOOD_TOLERANCE
from botapi_emulator.errors import ControlError


@dataclass
class Limits:
    """Telegram's flood limits; 0 disables one limit, ``enabled`` all of them."""

    enabled: bool = True
    per_bot_per_second: float = 30
    private_chat_per_second: float = 1
    private_chat_burst: float = 3
    group_per_minute: float = 20

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "per_bot_per_second": self.per_bot_per_second,
            "private_chat_per_second": self.private_chat_per_second,
            "private_chat_burst": self.private_chat_burst,
            "group_per_minute": self.group_per_minute,
        }

    def update(self, spec: dict[str, Any]) -> None:
        for key, value in spec.items():
            if key == "enabled":
                self.enabled = bool(value)
            elif key in self.to_dict():
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ControlError(f"limit {key} must be a number >= 0")
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
        self.private: dict[int, list[float]] = {}  # chat -> [tokens, time]
        self.groups: dict[int, collections.deque[float]] = {}

    def wait(self, limits: Limits, chat: ChatState, now: float, count: int = 1) -> float:
        """0 when ``count`` messages (an album: one per item) may go now, else the seconds to
        wait. A private chat's bucket needs one token; an album may take it below zero."""
        waits = [
            _window_wait(
                self.bot_times, limits.per_bot_per_second, 1.0 - FLOOD_TOLERANCE, now, count
            )
        ]
        if chat.type == "private":
            rate = limits.private_chat_per_second
            if rate > 0:
                tokens = self._tokens(limits, chat.id, now)
                if tokens < 1.0 - FLOOD_TOLERANCE * rate:
                    waits.append((1.0 - tokens) / rate)
        else:
            times = self.groups.setdefault(chat.id, collections.deque())
            waits.append(
                _window_wait(times, limits.group_per_minute, 60.0 - FLOOD_TOLERANCE, now, count)
            )
        return max(waits)

    def _tokens(self, limits: Limits, chat_id: int, now: float) -> float:
        burst = max(limits.private_chat_burst, 1.0)
        state = self.private.get(chat_id)
        if state is None:
            state = self.private[chat_id] = [burst, now]
        state[0] = min(burst, state[0] + (now - state[1]) * limits.private_chat_per_second)
        state[1] = now
        return state[0]

    def commit(self, limits: Limits, chat: ChatState, now: float, count: int = 1) -> None:
        self.bot_times.extend([now] * count)
        if chat.type == "private":
            if limits.private_chat_per_second > 0:
                self._tokens(limits, chat.id, now)
                self.private[chat.id][0] -= count
        else:
            self.groups.setdefault(chat.id, collections.deque()).extend([now] * count)
