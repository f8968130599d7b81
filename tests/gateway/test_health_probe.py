"""The Bot API probe behind /healthz's telegram_api:<bot> checks: every bot, spread over the
period, at most PROBES_PER_SECOND getMe calls per second per worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from telegram_gateway.errors import BotApiUnreachable
from telegram_gateway.health import PROBES_PER_SECOND, BotApiProbe, Check

pytestmark = pytest.mark.unit


@dataclass
class FakeBot:
    bot_id: int
    label: str


class FakeClient:
    def __init__(self, bot_id: int, calls: list[int], failing: bool = False) -> None:
        self.bot = FakeBot(bot_id, str(bot_id))
        self.calls = calls
        self.failing = failing

    def get_me(self, timeout: float) -> dict[str, Any]:
        self.calls.append(self.bot.bot_id)
        if self.failing:
            raise BotApiUnreachable("getMe", "connection refused")
        return {"username": f"bot{self.bot.bot_id}"}


class CountingStop:
    """Stands in for the probe's stop event: records each pause, stops after ``limit``."""

    def __init__(self, limit: int) -> None:
        self.pauses: list[float] = []
        self.limit = limit

    def wait(self, seconds: float) -> bool:
        self.pauses.append(seconds)
        return len(self.pauses) > self.limit

    def set(self) -> None:
        pass


def test_few_bots_are_each_probed_every_interval():
    calls: list[int] = []
    probe = BotApiProbe([FakeClient(i, calls) for i in range(4)], interval=5.0, timeout=1.0)
    assert probe.period == 5.0
    stop = CountingStop(8)
    probe._stop = stop  # type: ignore[assignment]
    probe._run()
    assert stop.pauses[:8] == [1.25] * 8  # 4 bots over 5 s
    assert calls == [0, 1, 2, 3] * 2


def test_many_bots_are_probed_at_a_bounded_rate():
    calls: list[int] = []
    clients = [FakeClient(i, calls) for i in range(1000)]
    probe = BotApiProbe(clients, interval=5.0, timeout=1.0)
    assert probe.period == 1000 / PROBES_PER_SECOND
    stop = CountingStop(50)
    probe._stop = stop  # type: ignore[assignment]
    probe._run()
    assert set(stop.pauses) == {1 / PROBES_PER_SECOND}
    assert calls == list(range(50))


def test_a_failing_bot_is_reported_with_its_reason():
    calls: list[int] = []
    probe = BotApiProbe(
        [FakeClient(1, calls), FakeClient(2, calls, failing=True)], interval=5.0, timeout=1.0
    )
    assert probe.checks()["telegram_api:1"].reason == "not probed yet"
    probe.probe_once()
    checks = probe.checks()
    assert checks["telegram_api:1"].ok and "@bot1" in checks["telegram_api:1"].reason
    assert not checks["telegram_api:2"].ok
    assert "connection refused" in checks["telegram_api:2"].reason
    assert not probe.ok


def test_only_bots_polled_on_this_host_are_probed_and_a_new_one_at_once():
    """A request launches the Bot API server's instance of a bot: the probe asks its own
    host's server only for bots polled there, reports the owner's outcome for the others,
    and probes a bot that becomes polled here at once, not a whole period later."""
    calls: list[int] = []
    local = {1}
    remote = {2: Check(True, "getMe ok as @bot2 (on host b)")}
    probe = BotApiProbe(
        [FakeClient(i, calls) for i in (1, 2, 3)],
        interval=300.0,
        timeout=1.0,
        local=lambda bot: bot in local,
        remote=remote.get,
    )
    probe.probe_once()
    assert calls == [1]
    checks = probe.checks()
    assert checks["telegram_api:1"].ok
    assert checks["telegram_api:2"].reason == "getMe ok as @bot2 (on host b)"
    assert not checks["telegram_api:3"].ok and "not probed yet" in checks["telegram_api:3"].reason
    stop = CountingStop(2)
    probe._stop = stop  # type: ignore[assignment]
    local.add(3)  # bot 3 moves to this host while the probe waits out its long pause
    probe._skipped.add(3)
    probe._run()
    assert calls[:3] == [1, 3, 1]  # bot 3 first, without waiting 100 s
    assert probe.checks()["telegram_api:3"].ok


def test_a_worker_that_has_not_probed_a_bot_yet_shows_the_owners_outcome():
    """Another worker of the owner's host starts probing a bot a moment later than its
    owner: until then its /healthz shows the owner's result instead of "not probed yet"."""
    calls: list[int] = []
    owner = {1: Check(True, "getMe ok as @bot1 (on host a)")}
    probe = BotApiProbe(
        [FakeClient(1, calls)], interval=5.0, timeout=1.0, local=lambda bot: True, remote=owner.get
    )
    assert probe.checks()["telegram_api:1"].reason == "getMe ok as @bot1 (on host a)"
    probe.probe_once()
    assert probe.checks()["telegram_api:1"].reason.startswith("getMe ok as @bot1 in ")
