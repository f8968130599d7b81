"""Send slots from the bot's owner against a real nats-server: two workers (an Ownership,
a Pacer and Slots each, on their own NATS connections), one calendar per bot."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_ownership import BOTS, Worker

from harness.nats import NatsServer
from harness.procs import wait_until
from telegram_gateway.errors import PacingUnavailable, RateLimited
from telegram_gateway.pacing import BOT_RATE, PRIVATE_INTERVAL, Chat, Pacer
from telegram_gateway.slots import Slots

pytestmark = pytest.mark.integration

EPS = 1e-6


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats_server = NatsServer(tmp_path / "nats").start()
    yield nats_server
    nats_server.stop()


class SlotWorker(Worker):
    def __init__(self, server: NatsServer, tmp_path: Path, name: str) -> None:
        super().__init__(server, tmp_path, name)
        self.pacer = Pacer(max_wait=30)
        self.slots = Slots(self.bus.settings, self.bus, self.ownership, self.pacer)

    def start(self) -> SlotWorker:
        super().start()
        self.slots.start()
        return self


@pytest.fixture
def pair(server: NatsServer, tmp_path: Path) -> Iterator[list[SlotWorker]]:
    workers = [SlotWorker(server, tmp_path, f"w{n}").start() for n in range(2)]
    wait_until(lambda: [len(w.owned()) for w in workers] == [2, 2], 15, "two bots each")
    yield workers
    for worker in workers:
        worker.stop()


def owner_and_other(pair: list[SlotWorker], bot: int) -> tuple[SlotWorker, SlotWorker]:
    a, b = pair
    return (a, b) if a.ownership.holds(bot) else (b, a)


def test_a_worker_that_does_not_own_the_bot_gets_its_slots_from_the_owners_calendar(pair):
    bot = BOTS[0]
    owner, other = owner_and_other(pair, bot)
    chat = Chat.of(555)
    slots: list[float] = []
    for index in range(4):  # both workers reserve for one private chat, alternating
        worker = owner if index % 2 else other
        slots += worker.slots.reserve(bot, chat)
    assert all(b - a >= PRIVATE_INTERVAL - EPS for a, b in itertools.pairwise(slots))
    # the calendar is the owner's: the other worker's Pacer knows nothing of the bot
    assert bot in owner.pacer._states and bot not in other.pacer._states
    # bot-wide spacing across both workers' reservations, for many chats
    many = [
        slot
        for index in range(40)
        for slot in (owner if index % 2 else other).slots.reserve(bot, Chat.of(1000 + index))
    ]
    ordered = sorted(many)
    assert min(b - a for a, b in itertools.pairwise(ordered)) >= 1 / BOT_RATE - EPS


def test_the_owner_answers_a_turn_when_the_slot_is_due(pair):
    bot = BOTS[1]
    _, other = owner_and_other(pair, bot)
    chat = Chat.of(556)
    first, second = other.slots.reserve(bot, chat, 2)
    assert other.slots.wait_turn(bot, chat, first) == pytest.approx(first, abs=0.05)
    left = other.slots.wait_turn(bot, chat, second)
    now = time.time()
    assert left >= first + PRIVATE_INTERVAL - EPS
    assert now >= left - 0.01  # it did not come back before the slot


def test_too_far_away_is_rate_limited_from_the_owner_too(pair):
    bot = BOTS[0]
    _, other = owner_and_other(pair, bot)
    chat = Chat.of(-4100007)  # a group: 20 per 61 s
    other.slots.reserve(bot, chat, 20, max_wait=100)
    with pytest.raises(RateLimited) as refused:
        other.slots.reserve(bot, chat, 1, max_wait=5)
    assert refused.value.retry_after >= 50


def test_without_an_owner_a_send_gives_up_after_the_lease_time(pair):
    bot = BOTS[0]
    owner, other = owner_and_other(pair, bot)
    owner.crash()  # its lease stays until it expires; then the survivor takes the bot over
    started = time.monotonic()
    # meanwhile the survivor waits for the bot to have an owner again, then it is its own
    slots = other.slots.reserve(bot, Chat.of(557))
    assert other.ownership.holds(bot)
    assert time.monotonic() - started < other.bus.settings.lease_ttl + 2
    assert slots


def test_nats_down_means_no_slot_at_once(pair, server):
    bot = BOTS[0]
    _, other = owner_and_other(pair, bot)
    server.stop()
    wait_until(lambda: not other.bus.connected, 10, "disconnected")
    started = time.monotonic()
    with pytest.raises(PacingUnavailable) as refused:
        other.slots.reserve(bot, Chat.of(558))
    assert time.monotonic() - started < 0.5
    assert "NATS" in str(refused.value)


def test_with_pacing_off_nothing_is_asked_of_anyone(pair, server):
    bot = BOTS[0]
    _, other = owner_and_other(pair, bot)
    unpaced = Slots(other.bus.settings, other.bus, other.ownership, Pacer(30, enabled=False))
    server.stop()
    wait_until(lambda: not other.bus.connected, 10, "disconnected")
    assert len(unpaced.reserve(bot, Chat.of(559), 3)) == 3  # no owner, no NATS: no matter


def test_the_gate_is_the_owners_for_calls_made_by_another_worker(pair):
    """An upload sent by a worker that does not own the bot departs through the owner's gate
    and tells it when its answer is back: the owner's own 31st call waits for that answer."""
    bot = BOTS[0]
    owner, other = owner_and_other(pair, bot)
    remote = [other.slots.depart(bot, None) for _ in range(30)]
    assert all(d.remote is not None for d in remote)
    time.sleep(0.3)  # the 30 calls are in flight
    answering = time.time()
    for departure in remote:
        other.slots.answered(departure)
    held = owner.slots.depart(bot, None)  # the owner's own call
    assert held.left >= answering + 1.0  # a second after the first answer, at least
    assert not owner.slots._remote  # every remote call was reported answered
