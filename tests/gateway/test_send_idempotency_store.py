"""The Idempotency-Key store against a real nats-server and a real Bus: once per key across
threads, workers (two Bus connections) and restarts; replay, 422, waiting, release, abandoned
claims, the bucket's TTL and size bound, NATS down."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.nats import NatsServer
from harness.procs import wait_until
from harness.tokens import fake_token
from telegram_gateway.bus import Bus
from telegram_gateway.config import load_settings
from telegram_gateway.errors import IdempotencyUnavailable
from telegram_gateway.idempotency import (
    IDEMPOTENCY_BUCKET,
    IdempotencyStore,
    Outcome,
    entry_key,
    fingerprint,
    valid_key,
)

pytestmark = pytest.mark.integration

MiB = 1024**2
Opener = Callable[..., tuple[IdempotencyStore, Bus]]


class Counter:
    def __init__(self, outcome: Outcome | None = None, delay: float = 0.0) -> None:
        self.calls = 0
        self.outcome = outcome or Outcome(200, {"ok": True, "result": [{"message_id": 1}]})
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self) -> Outcome:
        with self.lock:
            self.calls += 1
        time.sleep(self.delay)  # a slow Bot API call: a duration, not a wait
        return self.outcome


class Blocked:
    """A send that lasts until the test lets it finish."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.finish = threading.Event()
        self.calls = 0

    def __call__(self) -> Outcome:
        self.calls += 1
        self.started.set()
        assert self.finish.wait(20), "the test never let the send finish"
        return Outcome(200, {"ok": True, "result": [{"message_id": 7}]}, {"X-First": "yes"})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats_server = NatsServer(tmp_path / "nats").start()
    yield nats_server
    nats_server.stop()


@pytest.fixture
def open_store(server: NatsServer, tmp_path: Path) -> Iterator[Opener]:
    """``open_store(ttl=60, max_bytes=1 MiB, clock=time.time, sleep=time.sleep)``: a new Bus
    (one gateway worker) with its store, connected and the bucket ready."""
    buses: list[Bus] = []

    def open_(
        ttl: float = 60,
        max_bytes: int = MiB,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> tuple[IdempotencyStore, Bus]:
        settings = load_settings(
            {
                "TELEGRAM_BOT_TOKENS": fake_token(1),
                "GATEWAY_API_TOKEN": "b" * 20,
                "NATS_URL": server.url,
                "GATEWAY_STATE_DIR": str(tmp_path / "state"),
                "GATEWAY_PUBLISH_TIMEOUT": "1",
            }
        )
        bus = Bus(settings)
        store = IdempotencyStore(bus, ttl, max_bytes, clock=clock, sleep=sleep)
        bus.start()
        buses.append(bus)
        wait_until(lambda: bus.bucket_ready(IDEMPOTENCY_BUCKET), 15, "the idempotency bucket")
        return store, bus

    yield open_
    for bus in buses:
        bus.stop()


def test_keys():
    assert valid_key("a")
    assert valid_key("order-42:retry")
    assert valid_key("x" * 255)
    assert not valid_key("")
    assert not valid_key(" leading-space")
    assert not valid_key("x" * 256)
    assert not valid_key("ключ")
    assert not valid_key("a\nb")


def test_entry_keys_are_valid_kv_keys_for_any_idempotency_key():
    names = {entry_key(k) for k in ("a b", "a*", "a.>", "a.b", "A.B", "x" * 255, "~!@#$%^&()")}
    assert len(names) == 7
    assert all(re.fullmatch(r"k\.[0-9a-f]{64}", name) for name in names)


def test_one_fingerprint_recipe_ignores_key_order_at_every_depth():
    a = {
        "bot": 1,
        "method": "sendMessage",
        "params": {"chat_id": 5, "text": "é", "x": {"b": 1, "a": 2}},
    }
    b = {
        "params": {"x": {"a": 2, "b": 1}, "text": "é", "chat_id": 5},
        "method": "sendMessage",
        "bot": 1,
    }
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "params": {**a["params"], "text": "e"}})
    assert len(fingerprint(a)) == 64


def test_the_bucket_is_declared_with_its_bounds(open_store: Opener):
    store, bus = open_store(ttl=120, max_bytes=3 * MiB)
    config = bus._buckets[IDEMPOTENCY_BUCKET]
    assert (config.ttl, config.max_bytes, config.history) == (120, 3 * MiB, 1)
    assert store.run("k", "fp", Counter(), lease=10)[0].status == 200


def test_second_request_gets_the_first_result(open_store: Opener):
    store, _ = open_store()
    compute = Counter(Outcome(200, {"ok": True, "result": [1], "text": "é"}, {"X-A": "b"}))
    first = store.run("k", "fp", compute, lease=10)
    second = store.run("k", "fp", compute, lease=10)
    assert compute.calls == 1
    assert first == (compute.outcome, False)
    assert second[1] is True
    assert (second[0].status, second[0].body, second[0].headers) == (
        200,
        {"ok": True, "result": [1], "text": "é"},
        {"X-A": "b"},
    )


@pytest.mark.parametrize("key", ["with space", "star*", "tail.>", "dots.in.key", "a.*.>"])
def test_any_printable_key_works(open_store: Opener, key: str):
    store, _ = open_store()
    compute = Counter()
    assert store.run(key, "fp", compute, lease=10)[1] is False
    assert store.run(key, "fp", compute, lease=10)[1] is True
    # the same characters around it are another key
    assert store.run(key + "x", "fp", compute, lease=10)[1] is False
    assert compute.calls == 2


def test_survives_a_restart_of_the_gateway_and_of_nats(open_store: Opener, server: NatsServer):
    compute = Counter()
    first, first_bus = open_store()
    first.run("k", "fp", compute, lease=10)
    first.close()
    first_bus.stop()
    again = open_store()[0].run("k", "fp", compute, lease=10)  # a new worker, same NATS
    assert compute.calls == 1 and again[1] is True
    server.stop()
    server.start()  # file storage: the outcome is still there
    after = open_store()[0].run("k", "fp", compute, lease=10)
    assert compute.calls == 1 and after[1] is True


def test_a_different_request_with_the_same_key_is_refused(open_store: Opener):
    store, _ = open_store()
    store.run("k", "fp-1", Counter(), lease=10)
    other = Counter()
    outcome, replayed = store.run("k", "fp-2", other, lease=10)
    assert (outcome.status, replayed, other.calls) == (422, False, 0)
    assert "different request" in outcome.body["error"]


def test_nothing_sent_releases_the_key(open_store: Opener):
    store, _ = open_store()
    refused = Counter(Outcome(429, {"ok": False, "error": "later"}, store=False))
    assert store.run("k", "fp", refused, lease=10)[0].status == 429
    sent = Counter()
    assert store.run("k", "fp", sent, lease=10) == (sent.outcome, False)
    assert sent.calls == 1
    # released: even another request may now use the key
    store.run("k2", "fp", refused, lease=10)
    assert store.run("k2", "fp-other", Counter(), lease=10)[0].status == 200


def test_an_exception_releases_the_key(open_store: Opener):
    store, _ = open_store()

    def broken() -> Outcome:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        store.run("k", "fp", broken, lease=10)
    compute = Counter()
    assert store.run("k", "fp", compute, lease=10)[1] is False
    assert compute.calls == 1


def test_keys_expire_after_the_ttl(open_store: Opener):
    store, bus = open_store(ttl=2)
    compute = Counter()
    store.run("k", "fp", compute, lease=10)
    assert store.run("k", "fp", compute, lease=10)[1] is True
    wait_until(
        lambda: bus.kv_get(IDEMPOTENCY_BUCKET, entry_key("k")) is None, 15, "the key to expire"
    )
    assert store.run("k", "fp", compute, lease=10)[1] is False
    assert compute.calls == 2


def test_concurrent_duplicates_wait_for_the_first(open_store: Opener):
    store, _ = open_store()
    compute = Counter(delay=0.3)
    results: list[tuple[Outcome, bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.run("k", "fp", compute, lease=10)))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert compute.calls == 1
    assert sorted(replayed for _, replayed in results) == [False, True, True, True, True]
    assert all(outcome.status == 200 for outcome, _ in results)


def test_workers_share_the_store(open_store: Opener):
    """Four workers (each its own NATS connection), two requests each, one key: one send."""
    stores = [open_store()[0] for _ in range(4)]
    compute = Counter(delay=0.2)
    results: list[tuple[Outcome, bool]] = []
    lock = threading.Lock()

    def request(store: IdempotencyStore) -> None:
        result = store.run("shared", "fp", compute, lease=10)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=request, args=(s,)) for s in stores for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert compute.calls == 1
    assert sorted(replayed for _, replayed in results) == [False] + [True] * 7


def test_a_duplicate_waits_for_the_answer_of_the_one_in_flight(open_store: Opener):
    first_store, _ = open_store()
    polls: list[float] = []
    second_store, _ = open_store(sleep=lambda s: (polls.append(s), time.sleep(s)))
    send = Blocked()
    answers: dict[str, tuple[Outcome, bool]] = {}
    first = threading.Thread(
        target=lambda: answers.update(first=first_store.run("k", "fp", send, lease=30))
    )
    first.start()
    assert send.started.wait(10)
    duplicate_send = Counter()
    second = threading.Thread(
        target=lambda: answers.update(second=second_store.run("k", "fp", duplicate_send, lease=30))
    )
    second.start()
    wait_until(lambda: len(polls) >= 3, 10, "the duplicate to poll the key")
    assert "second" not in answers  # still waiting for the first one's answer
    send.finish.set()
    first.join(10)
    second.join(10)
    assert answers["first"][1] is False
    outcome, replayed = answers["second"]
    assert replayed is True and duplicate_send.calls == 0 and send.calls == 1
    assert (outcome.body["result"], outcome.headers) == ([{"message_id": 7}], {"X-First": "yes"})


def test_in_flight_too_long_is_a_409(open_store: Opener):
    store, _ = open_store()
    send = Blocked()
    first = threading.Thread(target=lambda: store.run("k", "fp", send, lease=30))
    first.start()
    try:
        assert send.started.wait(10)
        duplicate = Counter()
        outcome, replayed = store.run("k", "fp", duplicate, lease=0.3)
        assert (outcome.status, replayed, duplicate.calls) == (409, False, 0)
        assert "in flight" in outcome.body["error"]
    finally:
        send.finish.set()
        first.join(10)
    assert store.run("k", "fp", Counter(), lease=10)[1] is True


def test_an_interrupted_request_is_not_sent_again(open_store: Opener, caplog):
    now = [1000.0]
    dying_store, dying_bus = open_store(clock=lambda: now[0])
    store, _ = open_store(clock=lambda: now[0])

    def lose_nats_mid_send() -> Outcome:  # the worker dies (its connection with it)
        dying_bus.stop()
        raise SystemExit("worker killed")

    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit):
        dying_store.run("k", "fp", lose_nats_mid_send, lease=30)
    assert "could not release an Idempotency-Key" in caplog.text
    compute = Counter()
    # within the lease: still in flight as far as anyone knows
    assert store.run("k", "fp", compute, lease=0.2)[0].status == 409
    now[0] += 31  # the lease ran out: the worker died mid-request
    outcome, replayed = store.run("k", "fp", compute, lease=30)
    assert compute.calls == 0 and replayed is False
    assert outcome.status == 409 and "unknown" in outcome.body["error"]
    assert outcome.store is False


def test_nats_down_is_unavailable_at_once(open_store: Opener, server: NatsServer):
    store, bus = open_store()
    store.run("before", "fp", Counter(), lease=10)
    server.stop()
    compute = Counter()
    for key in ("new", "before"):
        started = time.monotonic()
        with pytest.raises(IdempotencyUnavailable) as error:
            store.run(key, "fp", compute, lease=30)
        assert time.monotonic() - started < 4, "the store hung while NATS was down"
        assert "NATS" in str(error.value) and IDEMPOTENCY_BUCKET in str(error.value)
    assert compute.calls == 0
    server.start()  # same port: the Bus reconnects and the store works again
    wait_until(lambda: bus.bucket_ready(IDEMPOTENCY_BUCKET), 20, "the bus to reconnect")
    assert store.run("before", "fp", compute, lease=10)[1] is True
    assert store.run("new", "fp", compute, lease=10)[1] is False
    assert compute.calls == 1


def test_a_full_bucket_refuses_new_keys_and_still_replays_old_ones(open_store: Opener, caplog):
    caplog.set_level(logging.ERROR, "telegram_gateway.idempotency")
    store, _ = open_store(max_bytes=MiB)
    big = Counter(Outcome(200, {"ok": True, "result": "x" * 8192}))
    first = store.run("fill-0", "fp", big, lease=10)
    assert first[1] is False
    refused: IdempotencyUnavailable | None = None
    for index in range(1, 1000):  # 1 MiB holds ~128 of these, then only claims fit
        try:
            store.run(f"fill-{index}", "fp", big, lease=10)
        except IdempotencyUnavailable as exc:
            refused = exc
            break
    assert refused is not None, "the bucket never filled up"
    assert "is full (GATEWAY_IDEMPOTENCY_MAX_BYTES = 1048576 bytes)" in str(refused)
    # before the claims, the outcomes stopped fitting: logged, not raised
    assert "could not store the outcome" in caplog.text
    calls = big.calls
    with pytest.raises(IdempotencyUnavailable):
        store.run("brand-new", "fp", big, lease=10)
    assert big.calls == calls  # refused before sending
    outcome, replayed = store.run("fill-0", "fp", big, lease=10)
    assert replayed is True and outcome.body == first[0].body
    assert big.calls == calls
