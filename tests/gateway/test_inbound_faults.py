"""Inbound under failure: kill -9 of the polling worker, a NATS outage, a failing Bot API.
Every time: nothing lost, nothing doubled."""

from __future__ import annotations

import functools
import os
import signal
import time
from datetime import datetime

import pytest

from harness.procs import alive, kill9, wait_until

pytestmark = pytest.mark.faults


def poller_unhealthy(gateway, bot_id: int, seen: list[tuple[int, dict]]) -> bool:
    """Whether /healthz is 503 with the bot's poller check failing (each answer into ``seen``)."""
    status, body = gateway.get("/healthz")
    seen.append((status, body))
    return status == 503 and not body["checks"][f"poller:{bot_id}"]["ok"]


def test_kill_9_of_the_polling_worker_mid_stream(stack):
    bot_id = stack.bot_ids[0]
    gateway = stack.add_gateway(workers=2, bots=(bot_id,))
    wait_until(lambda: stack.holder(gateway, bot_id).get("state") == "polling", 10, "a holder")
    victim = stack.holder(gateway, bot_id)["pid"]
    assert victim in gateway.worker_pids()
    stack.emulator.generate(bot_id, 20_000, kinds=stack.kinds, seed=11)
    wait_until(lambda: stack.stream_count() >= 2000, 30, "2,000 updates stored", interval=0.02)
    kill9(victim)
    killed_at = time.monotonic()
    assert stack.emulator.stats()["pending"][str(bot_id)] > 0, "killed too late to matter"

    def taken_over() -> bool:
        record = stack.holder(gateway, bot_id)
        pid = record.get("pid")
        return pid not in (None, victim) and alive(pid) and record.get("state") == "polling"

    wait_until(taken_over, 10, "another worker to take over")
    takeover = time.monotonic() - killed_at
    new_holder = stack.holder(gateway, bot_id)["pid"]
    stack.wait_confirmed(bot_id, 90)
    stored = stack.read_stream()
    assert len(stored) == 20_000
    stack.check_exactly_once(stored, (bot_id,))
    assert takeover < 5, f"takeover took {takeover:.1f} s"
    assert new_holder in gateway.worker_pids()
    gateway.wait_healthy(15)
    stack.assert_no_secrets_logged(gateway)


def test_an_owner_stalled_past_its_lease_does_not_carry_on_when_it_wakes(stack):
    """SIGSTOP the owning worker for longer than its lease: another worker takes over; when
    the stalled one resumes it sees its lease may have expired before it polls again, so it
    neither polls nor confirms beside the new owner: 0 lost, 0 doubled."""
    bot_id = stack.bot_ids[0]
    gateway = stack.add_gateway(workers=2, bots=(bot_id,))
    wait_until(lambda: stack.holder(gateway, bot_id).get("state") == "polling", 10, "an owner")
    victim = stack.holder(gateway, bot_id)["pid"]
    stack.emulator.generate(bot_id, 20_000, kinds=stack.kinds, seed=12)
    wait_until(lambda: stack.stream_count() >= 2000, 30, "2,000 updates stored", interval=0.02)
    os.kill(victim, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()

        def taken_over() -> bool:
            pid = stack.holder(gateway, bot_id).get("pid")
            return pid not in (None, victim) and stack.holder(gateway, bot_id)["state"] == "polling"

        wait_until(taken_over, 10, "another worker to take over")
        takeover = time.monotonic() - stopped_at
        time.sleep(1.0)  # the new owner polls for a while (a window, not a wait for something)
    finally:
        resumed = datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:23]  # logging's asctime
        os.kill(victim, signal.SIGCONT)
    stack.wait_confirmed(bot_id, 90)
    stored = stack.read_stream()
    assert len(stored) == 20_000
    stack.check_exactly_once(stored, (bot_id,))
    assert takeover < 5, f"takeover took {takeover:.1f} s"
    assert alive(victim) and victim in gateway.worker_pids()
    # once resumed, the stalled worker stopped before polling again: the answer of a poll it
    # sent before the stop may arrive (it is neither published nor confirmed: the lease is
    # checked first), but no poll follows it
    lines = [
        line
        for line in gateway.log_path.read_text().splitlines()
        if f"[{victim}]" in line and line[:23] >= resumed
    ]
    stops = [i for i, line in enumerate(lines) if "stopped polling (lease lost)" in line]
    assert stops, lines[-5:]
    polled = [i for i, line in enumerate(lines) if "getUpdates offset" in line]
    assert len(polled) <= 1 and all(i < stops[0] for i in polled), [lines[i] for i in polled]
    published = [line for line in lines if "JetStream acknowledged" in line]
    assert published == []
    assert stack.holder(gateway, bot_id)["pid"] != victim
    gateway.wait_healthy(15)


def test_nats_down_for_20_s_then_back(stack):
    bot_id = stack.bot_ids[0]
    gateway = stack.add_gateway(workers=2, bots=(bot_id,))
    stack.emulator.generate(bot_id, 10_000, kinds=stack.kinds, seed=21)
    wait_until(lambda: stack.stream_count() >= 1000, 30, "1,000 updates stored", interval=0.02)
    stack.nats.stop()
    down_at = time.monotonic()
    stack.emulator.generate(bot_id, 5000, kinds=stack.kinds, seed=22)  # more keep coming

    def degraded() -> bool:
        return gateway.get("/healthz")[0] == 503

    wait_until(degraded, 5, "/healthz 503 while NATS is down", interval=0.1)
    confirmed = stack.emulator.stats()["confirmed_offset"][str(bot_id)]
    samples: list[tuple[int, dict]] = []
    # a window, not a wait: for the whole outage /healthz stays 503 and nothing is confirmed
    while time.monotonic() - down_at < 20:
        samples.append(gateway.get("/healthz"))
        time.sleep(0.5)  # one sample every 0.5 s
    assert samples and all(status == 503 for status, _ in samples)
    last = samples[-1][1]
    assert last["nats"] == "disconnected" and not last["checks"]["nats"]["ok"]
    assert not last["checks"][f"poller:{bot_id}"]["ok"]
    assert "confirmed to the Bot API" in last["checks"][f"poller:{bot_id}"]["reason"]
    stats = stack.emulator.stats()
    assert stats["confirmed_offset"][str(bot_id)] == confirmed, "confirmed while NATS was down"
    assert stats["pending"][str(bot_id)] > 0

    stack.nats.start()
    back_at = time.monotonic()
    gateway.wait_healthy(15)
    recovered = time.monotonic() - back_at
    stack.wait_confirmed(bot_id, 60)
    stored = stack.read_stream()
    assert len(stored) == 15_000
    stack.check_exactly_once(stored, (bot_id,))
    assert recovered < 15
    stack.assert_no_secrets_logged(gateway)


def test_bot_api_errors_drops_and_downtime_back_off_and_recover(stack):
    bot_id = stack.bot_ids[0]
    gateway = stack.add_gateway(workers=2, bots=(bot_id,), GATEWAY_POLL_TIMEOUT="1")
    emulator = stack.emulator
    seed = 30
    for fault in (
        {"mode": "error", "status": 500, "methods": ["getUpdates"]},
        {"mode": "drop", "methods": ["getUpdates"]},
        {"mode": "down"},
    ):
        seed += 1
        emulator.generate(bot_id, 1000, kinds=stack.kinds, seed=seed)
        before = emulator.stats()
        emulator.fault(**fault, duration=3)
        emulator.generate(bot_id, 1000, kinds=stack.kinds, seed=seed + 100)
        seen: list[tuple[int, dict]] = []
        try:  # while the fault lasts
            wait_until(
                functools.partial(poller_unhealthy, gateway, bot_id, seen),
                3,
                f"/healthz 503 naming the poller ({fault})",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last /healthz: {seen[-1:]}") from None
        wait_until(lambda: not emulator.faults(), 10, "the fault to expire")
        stack.wait_confirmed(bot_id, 30)
        gateway.wait_healthy(15)
        after = emulator.stats()
        if fault["mode"] == "error":
            errors = after["responses"].get("500", 0) - before["responses"].get("500", 0)
            # backing off: a handful of attempts in 3 s, not a tight loop
            assert 1 <= errors <= 8, errors
    stored = stack.read_stream()
    assert len(stored) == 6000
    stack.check_exactly_once(stored, (bot_id,))
    _, text, _ = gateway.request("GET", "/metrics")
    assert f'telegram_gateway_getupdates_errors_total{{bot="{bot_id}",code="500"}}' in text
    assert f'telegram_gateway_getupdates_errors_total{{bot="{bot_id}",code="unavailable"}}' in text
    # one warning per failure episode, not one per attempt
    warnings = [line for line in gateway.log().splitlines() if "retrying with backoff" in line]
    assert 3 <= len(warnings) <= 6, warnings
    stack.assert_no_secrets_logged(gateway)


def test_a_second_poller_elsewhere_is_a_409_health_failure_not_a_log_storm(stack):
    bot_id = stack.bot_ids[0]
    token = stack.tokens[bot_id]
    gateway = stack.add_gateway(workers=2, bots=(bot_id,))
    # someone else polls the same token (another host, a forgotten script): the Bot API
    # answers 409 to whichever request is older. A window, not a wait: 2.5 s of conflicts
    # must make one warning, not one per conflict
    conflicted: dict | None = None
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        stack.emulator.call(token, "getUpdates")  # ends the gateway's long poll with a 409
        status, body = gateway.get("/healthz")
        time.sleep(0.1)  # the other poller's pace
        if status == 503 and "409" in body["checks"][f"poller:{bot_id}"]["reason"]:
            conflicted = body
    assert conflicted is not None, "409 never showed in /healthz"
    assert conflicted["checks"][f"poller:{bot_id}"]["ok"] is False
    assert stack.emulator.stats()["conflicts_409"] >= 2
    gateway.wait_healthy(20)
    stack.emulator.generate(bot_id, 500, seed=41)
    stack.wait_confirmed(bot_id, 20)
    assert stack.stream_count() == 500
    # one warning when the conflict starts, one line when it ends; attempts only at DEBUG
    lines = [line for line in gateway.log().splitlines() if "telegram_gateway.poller" in line]
    warnings = [line for line in lines if " WARNING " in line and "409" in line]
    assert len(warnings) == 1, warnings
    assert sum(" DEBUG " in line and "409" in line for line in lines) >= 1
    assert any("getUpdates works again" in line for line in lines)
