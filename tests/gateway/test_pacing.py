"""The pacing calendar of a bot's owner: Telegram's three limits, shared by the greenlets of the
owning worker, max-wait refusal."""

from __future__ import annotations

import itertools
import random
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from telegram_gateway.errors import RateLimited
from telegram_gateway.pacing import (
    BOT_RATE,
    GROUP_LIMIT,
    GROUP_WINDOW,
    PRIVATE_INTERVAL,
    Chat,
    Pacer,
)

pytestmark = pytest.mark.unit

EPS = 1e-6


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def pacer(tmp_path: Path, clock: FakeClock, max_wait: float = 1000.0) -> Pacer:
    del tmp_path  # the calendar lives in memory
    return Pacer(max_wait, clock=clock, sleep=clock.sleep)


def assert_bot_rate(slots: list[float]) -> None:
    """Evenly spaced: at least 1/30 s apart, so at most 30 in any 1 s window."""
    ordered = sorted(slots)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert min(gaps, default=1.0) >= 1.0 / BOT_RATE - EPS
    for index, start in enumerate(ordered):
        in_window = [t for t in ordered[index:] if t < start + 1.0]
        assert len(in_window) <= 30


def test_chat_kinds_follow_telegrams_id_convention():
    assert Chat.of(12345) == Chat("12345", True)
    assert Chat.of(-4100001) == Chat("-4100001", False)
    assert Chat.of(-1001500000001) == Chat("-1001500000001", False)
    assert Chat.of("@SomeChannel") == Chat("@somechannel", False)
    assert Chat.of("777") == Chat("777", True)
    assert Chat.of(None) is None
    assert Chat.of(True) is None
    assert Chat.of("not a chat") is None


def test_first_message_goes_at_once(tmp_path):
    clock = FakeClock()
    assert pacer(tmp_path, clock).reserve(1, Chat.of(5)) == [clock.now]


def test_bot_wide_limit_spaces_messages_evenly(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    slots = [p.reserve(1, Chat.of(100 + i))[0] for i in range(90)]
    assert_bot_rate(slots)
    assert slots[-1] - slots[0] == pytest.approx(89 / BOT_RATE, abs=1e-3)


def test_private_chat_one_message_per_second(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    slots = [p.reserve(1, Chat.of(42))[0] for _ in range(4)]
    assert [round(b - a, 6) for a, b in itertools.pairwise(slots)] == [PRIVATE_INTERVAL] * 3


def test_group_limit_20_per_window(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    slots = [p.reserve(1, Chat.of(-77))[0] for _ in range(GROUP_LIMIT + 3)]
    first_window = slots[:GROUP_LIMIT]
    assert first_window[-1] - first_window[0] < 1.0  # 20 go out right away
    for index in range(GROUP_LIMIT, len(slots)):
        assert slots[index] >= slots[index - GROUP_LIMIT] + GROUP_WINDOW - EPS
    assert slots == sorted(slots)


def test_a_waiting_chat_does_not_hold_up_other_chats(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    p.reserve(1, Chat.of(1))
    later = p.reserve(1, Chat.of(1))[0]  # one second away
    other = p.reserve(1, Chat.of(2))[0]
    assert later == pytest.approx(clock.now + 1.0)
    assert other == pytest.approx(clock.now + 1 / BOT_RATE)


def test_consecutive_parts_stay_in_order_and_nobody_gets_between(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    parts = p.reserve(1, Chat.of(9), count=3)
    after = p.reserve(1, Chat.of(9))[0]
    assert parts == sorted(parts)
    assert after >= parts[-1] + PRIVATE_INTERVAL - EPS


def test_refuses_beyond_max_wait_without_reserving(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock, max_wait=2.5)
    for _ in range(3):
        p.reserve(1, Chat.of(7))  # now, +1 s, +2 s
    with pytest.raises(RateLimited) as info:
        p.reserve(1, Chat.of(7))  # +3 s is more than 2.5 s away
    assert info.value.retry_after == 1
    clock.now += 1.0
    # the refusal reserved nothing: the next slot is still 3 s after the start
    assert p.reserve(1, Chat.of(7))[0] == pytest.approx(clock.now + 2.0)


def test_cancel_gives_slots_back(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    parts = p.reserve(1, Chat.of(3), count=3)
    p.cancel(1, Chat.of(3), parts[1:])
    assert p.reserve(1, Chat.of(3))[0] == pytest.approx(parts[1])


def test_disabled_pacing_never_waits(tmp_path):
    clock = FakeClock()
    p = Pacer(0, enabled=False, clock=clock, sleep=clock.sleep)
    assert p.reserve(1, Chat.of(1), count=5) == [clock.now] * 5
    assert p._states == {}


def test_bots_have_separate_budgets(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    assert p.reserve(1, Chat.of(5))[0] == p.reserve(2, Chat.of(5))[0] == clock.now


def test_state_is_pruned(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    for chat in range(50):
        p.reserve(1, Chat.of(chat + 1))
    p.reserve(1, Chat.of(-5))
    clock.now += GROUP_WINDOW + 5
    p.reserve(1, Chat.of(1))
    state = p._states[1]
    assert state["g"] == [clock.now]
    assert list(state["c"]) == ["1"]


def test_clock_jump_back_does_not_block_for_long(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock, max_wait=10)
    for _ in range(5):
        p.reserve(1, Chat.of(1))
    clock.now -= 3600  # the wall clock stepped back an hour
    assert p.reserve(1, Chat.of(1)) == [clock.now]


def test_concurrent_greenlets_of_the_owner_together_respect_every_limit():
    rng = random.Random(7)
    chats = [rng.choice([11, 12, 13, -21, -22]) for _ in range(4 * 30)]
    p = Pacer(max_wait=1000)
    results: list[list[tuple[int, float]]] = [[] for _ in range(4)]

    def reserve(index: int) -> None:
        for chat in chats[index::4]:
            results[index].append((chat, p.reserve(1, Chat.of(chat))[0]))

    threads = [threading.Thread(target=reserve, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    everything = [item for result in results for item in result]
    assert len(everything) == len(chats)
    assert_bot_rate([slot for _, slot in everything])
    per_chat: dict[int, list[float]] = defaultdict(list)
    for chat, slot in everything:
        per_chat[chat].append(slot)
    for chat, slots in per_chat.items():
        slots.sort()
        if chat > 0:
            gaps = [b - a for a, b in itertools.pairwise(slots)]
            assert min(gaps) >= PRIVATE_INTERVAL - EPS
        else:
            for index in range(GROUP_LIMIT, len(slots)):
                assert slots[index] >= slots[index - GROUP_LIMIT] + GROUP_WINDOW - EPS


def test_a_late_sender_takes_a_new_slot_instead_of_bunching(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    first, second, third = (p.reserve(1, Chat.of(100 + i))[0] for i in range(3))
    assert p.wait_turn(1, Chat.of(100), first) == first  # on time: unchanged
    clock.now = third + 0.2  # the process did not run for a while: all three are late
    moved = [p.wait_turn(1, Chat.of(101 + i), slot) for i, slot in enumerate((second, third))]
    assert moved[0] >= third + 0.2 - EPS
    assert moved[1] - moved[0] >= 1 / BOT_RATE - EPS
    assert_bot_rate([first, *moved, *(p.reserve(1, Chat.of(200))[0] for _ in range(1))])
    # the chat's own record moved along: its next message keeps a second's distance
    assert p.reserve(1, Chat.of(101))[0] >= moved[0] + PRIVATE_INTERVAL - EPS


def test_every_limit_keeps_a_margin_over_telegrams():
    """Telegram measures on arrival with no tolerance: send times keep a margin."""
    assert BOT_RATE < 30 and PRIVATE_INTERVAL > 1.0 and GROUP_WINDOW > 60.0


def test_a_message_keeps_its_distance_from_an_earlier_one_to_the_chat_that_left_late(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    chat = Chat.of(300)
    a, b = p.reserve(1, chat, 2)
    assert b - a == pytest.approx(PRIVATE_INTERVAL)
    clock.now = a + 0.5  # the first one's sender did not run for half a second
    left_a = p.wait_turn(1, chat, a)
    assert left_a >= a + 0.5 - EPS
    left_b = p.wait_turn(1, chat, b)  # on its own slot it would follow 0.54 s later
    assert left_b >= left_a + PRIVATE_INTERVAL - EPS
    assert clock.now >= left_b - EPS


def test_a_group_message_keeps_the_window_when_earlier_ones_left_late(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    group = Chat.of(-4100002)
    slots = p.reserve(1, group, GROUP_LIMIT + 1)
    assert slots[GROUP_LIMIT] >= slots[0] + GROUP_WINDOW - EPS
    clock.now = slots[0] + 2.0  # the first one left 2 s late
    first = p.wait_turn(1, group, slots[0])
    left = [first] + [p.wait_turn(1, group, slot) for slot in slots[1:]]
    assert left[GROUP_LIMIT] >= first + GROUP_WINDOW - EPS


# ---- the gate: calls leave by the facts of earlier answers -------------------------------------


def test_the_31st_call_leaves_a_second_after_the_first_one_was_answered(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    start = clock.now
    first_30 = [p.depart(1, None) for _ in range(30)]  # no history: all leave at once
    assert {d.left for d in first_30} == {start}
    clock.now += 0.2  # a slow server: every answer is back 200 ms later
    for departure in first_30:
        p.answered(departure)
    the_31st = p.depart(1, None)
    # it may have arrived right after the first 30 were answered: one second later at least
    assert the_31st.left >= first_30[0].done + 1.0
    assert the_31st.left == pytest.approx(start + 1.2, abs=0.01)
    assert p.depart(2, None).left == the_31st.left  # another bot is not held back


def test_a_call_in_flight_holds_the_gate_until_its_answer_or_the_timeout(tmp_path):
    clock = FakeClock()
    p = Pacer(1000, clock=clock, sleep=clock.sleep, answer_within=5.0)
    start = clock.now
    for _ in range(30):
        p.depart(1, None)  # never answered (the answer was lost)
    late = p.depart(1, None)
    assert late.left == pytest.approx(start + 5.0 + 1.0, abs=0.01)


def test_an_album_counts_each_item_at_the_gate(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    start = clock.now
    for _ in range(21):
        p.answered(p.depart(1, None))
    album = p.depart(1, None, count=10)  # 31 messages in one second: not before the first + 1 s
    assert album.left >= start + 1.0


def test_the_gate_keeps_a_private_chat_and_a_group_to_their_windows(tmp_path):
    clock = FakeClock()
    p = pacer(tmp_path, clock)
    user = Chat.of(5)
    first = p.depart(1, user)
    clock.now += 0.3
    p.answered(first)
    other_user = p.depart(1, Chat.of(6))
    assert other_user.left == clock.now  # only that chat waits
    p.answered(other_user)
    second = p.depart(1, user)
    assert second.left >= first.done + 1.0
    group = Chat.of(-100123)
    sent = []
    for _ in range(20):
        departure = p.depart(1, group)
        clock.now += 0.05
        p.answered(departure)
        sent.append(departure)
    the_21st = p.depart(1, group)
    assert the_21st.left >= sent[0].done + 60.0


def test_with_any_delays_no_window_holds_more_than_telegram_allows():
    """A simulated server: each call arrives at a random moment between leaving and its
    answer (latencies up to 400 ms, as on a starved host). Whatever the moments, the gate
    alone keeps 30 per second per bot, 1 per second per private chat, 20 per minute per group.
    """
    rng = random.Random(11)
    clock = FakeClock()
    p = pacer(Path("."), clock)
    chats = [Chat.of(7), Chat.of(8), Chat.of(-1009), None]
    arrivals: dict[Chat | None, list[float]] = defaultdict(list)
    everything: list[float] = []
    for _ in range(1500):
        chat = rng.choice(chats)
        departure = p.depart(1, chat)
        departure.done = departure.left + rng.uniform(0.0, 0.4)  # its answer, known ahead
        arrival = rng.uniform(departure.left, departure.done)
        arrivals[chat].append(arrival)
        everything.append(arrival)
        clock.now += rng.uniform(0.0, 0.01)

    def most_in_a_window(times: list[float], window: float) -> int:
        ordered = sorted(times)
        return max(
            sum(1 for t in ordered[i:] if t - start < window) for i, start in enumerate(ordered)
        )

    assert most_in_a_window(everything, 1.0) <= 30
    assert most_in_a_window(arrivals[Chat.of(7)], 1.0) <= 1
    assert most_in_a_window(arrivals[Chat.of(8)], 1.0) <= 1
    assert most_in_a_window(arrivals[Chat.of(-1009)], 60.0) <= 20


def test_disabled_pacing_has_no_gate(tmp_path):
    clock = FakeClock()
    p = Pacer(0, enabled=False, clock=clock, sleep=clock.sleep)
    start = clock.now
    for _ in range(100):
        p.depart(1, Chat.of(5))
    assert clock.now == start
