"""Counters, and the ``--http-stat-port`` page."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botapi_emulator.constants import API_VERSION, EMULATOR_VERSION

if TYPE_CHECKING:
    from botapi_emulator.emulator import Emulator


@dataclass
class Stats:
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    responses: collections.Counter[str] = field(default_factory=collections.Counter)
    conflicts_409: int = 0
    flood_429: int = 0
    # which limit each flood 429 hit: bot, private_chat, group
    flood_by_limit: collections.Counter[str] = field(default_factory=collections.Counter)

    def count_response(self, status: int) -> None:
        self.responses[str(status)] += 1
        if status == 409:
            self.conflicts_409 += 1
        elif status == 429:
            self.flood_429 += 1


def stats_page(emu: Emulator, active_requests: int) -> str:
    """The -s/--http-stat-port page: tab-separated, like the real one (no tokens)."""
    now = time.time()
    lines = [
        f"uptime\t{now - emu.started:.3f}",
        f"bot_count\t{len(emu.bots)}",
        f"active_bot_count\t{sum(1 for b in emu.bots.values() if b.sent or b.history)}",
        f"rss\t{_rss_text()}",
        f"active_requests\t{active_requests}",
        f"emulator\t{EMULATOR_VERSION} (Bot API {API_VERSION})",
    ]
    for bot in emu.bots.values():
        lines += [
            "",
            f"id\t{bot.id}",
            f"username\t{bot.username}",
            f"head_update_id\t{bot.first_pending_id()}",
        ]
        if bot.webhook:
            lines.append(f"webhook\t{bot.webhook['url']}")
        if bot.pending_count:
            lines.append(f"tail_update_id\t{bot.next_update_id - 1}")
            lines.append(f"pending_update_count\t{bot.pending_count}")
    return "\n".join(lines) + "\n"


def _rss_text() -> str:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
