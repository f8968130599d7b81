"""1,000 messages to 100 private chats and 2 groups, through ``/send`` and NATS at once, with
two gunicorn workers: the emulator (enforcing Telegram's limits) never answers 429, every
message arrives exactly once and in order per chat, and the whole burst takes close to the
minimum Telegram allows (1,000 messages at 30 per second: 33.3 s)."""

from __future__ import annotations

import pytest
from outbound_fixtures import BOT, Burst, burst_plan, outbound_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    with outbound_stack(tmp_path_factory.mktemp("burst"), workers=2) as stack:
        yield stack


def test_a_thousand_messages_paced_across_two_workers(out):
    assert len(out.gateway.worker_pids()) == 2
    burst = Burst(out, burst_plan(1000))
    took = burst.run()
    assert burst.failures == [], burst.failures[:5]
    assert burst.check_delivery() == []
    assert out.emulator.stats()["flood_429"] == 0
    assert out.metric("telegram_gateway_botapi_429_total") == 0
    assert out.metric("telegram_gateway_sends_total", bot=str(BOT), status="ok") == 1000
    minimum = burst.total / 30
    print(f"\n1000 messages in {took:.1f} s; minimum {minimum:.1f} s; ratio {took / minimum:.3f}")
    assert took < minimum * 1.15
