"""The Idempotency-Key store: once per key, across threads, processes and restarts."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from telegram_gateway.idempotency import IdempotencyStore, Outcome, fingerprint, valid_key

pytestmark = pytest.mark.unit


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


def test_keys():
    assert valid_key("a")
    assert valid_key("order-42:retry")
    assert valid_key("x" * 255)
    assert not valid_key("")
    assert not valid_key(" leading-space")
    assert not valid_key("x" * 256)
    assert not valid_key("ключ")
    assert not valid_key("a\nb")


def test_second_request_gets_the_first_result(tmp_path):
    store = IdempotencyStore(tmp_path / "i.sqlite3", ttl=60)
    compute = Counter(Outcome(200, {"ok": True, "result": [1]}, {"X-A": "b"}))
    first = store.run("k", "fp", compute, lease=10)
    second = store.run("k", "fp", compute, lease=10)
    assert compute.calls == 1
    assert first == (compute.outcome, False)
    assert second[1] is True
    assert (second[0].status, second[0].body, second[0].headers) == (
        200,
        {"ok": True, "result": [1]},
        {"X-A": "b"},
    )


def test_survives_a_restart(tmp_path):
    path = tmp_path / "i.sqlite3"
    compute = Counter()
    IdempotencyStore(path, ttl=60).run("k", "fp", compute, lease=10)
    again = IdempotencyStore(path, ttl=60).run("k", "fp", compute, lease=10)
    assert compute.calls == 1 and again[1] is True


def test_a_different_request_with_the_same_key_is_refused(tmp_path):
    store = IdempotencyStore(tmp_path / "i.sqlite3", ttl=60)
    store.run("k", "fp-1", Counter(), lease=10)
    outcome, replayed = store.run("k", "fp-2", Counter(), lease=10)
    assert (outcome.status, replayed) == (422, False)
    assert "different request" in outcome.body["error"]


def test_nothing_sent_releases_the_key(tmp_path):
    store = IdempotencyStore(tmp_path / "i.sqlite3", ttl=60)
    refused = Counter(Outcome(429, {"ok": False, "error": "later"}, store=False))
    assert store.run("k", "fp", refused, lease=10)[0].status == 429
    sent = Counter()
    assert store.run("k", "fp", sent, lease=10)[0].status == 200
    assert sent.calls == 1


def test_an_exception_releases_the_key(tmp_path):
    store = IdempotencyStore(tmp_path / "i.sqlite3", ttl=60)

    def broken() -> Outcome:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        store.run("k", "fp", broken, lease=10)
    assert store.run("k", "fp", Counter(), lease=10)[1] is False


def test_keys_expire_after_the_ttl(tmp_path):
    now = [1000.0]
    store = IdempotencyStore(tmp_path / "i.sqlite3", ttl=60, clock=lambda: now[0])
    compute = Counter()
    store.run("k", "fp", compute, lease=10)
    now[0] += 61
    assert store.run("k", "fp", compute, lease=10)[1] is False
    assert compute.calls == 2


def test_concurrent_duplicates_wait_for_the_first(tmp_path):
    store = IdempotencyStore(tmp_path / "i.sqlite3", ttl=60)
    compute = Counter(delay=0.3)
    results: list[tuple[Outcome, bool]] = []
    threads = [
        threading.Thread(target=lambda: results.append(store.run("k", "fp", compute, lease=10)))
        for _ in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert compute.calls == 1
    assert sorted(replayed for _, replayed in results) == [False, True, True, True, True]
    assert all(outcome.status == 200 for outcome, _ in results)


def _in_process(path: str, queue: multiprocessing.Queue) -> None:
    store = IdempotencyStore(Path(path), ttl=60)
    calls = []

    def compute() -> Outcome:
        calls.append(1)
        time.sleep(0.2)  # a slow Bot API call: a duration, not a wait
        return Outcome(200, {"ok": True})

    _, replayed = store.run("shared", "fp", compute, lease=10)
    queue.put((len(calls), replayed))


def test_worker_processes_share_the_store(tmp_path):
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [
        context.Process(target=_in_process, args=(str(tmp_path / "i.sqlite3"), queue))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=20) for _ in workers]
    for worker in workers:
        worker.join(5)
    assert sum(calls for calls, _ in results) == 1
    assert sorted(replayed for _, replayed in results) == [False, True, True, True]


def test_an_interrupted_request_is_not_sent_again(tmp_path):
    now = [1000.0]
    path = tmp_path / "i.sqlite3"
    store = IdempotencyStore(path, ttl=3600, clock=lambda: now[0])
    # a worker claimed the key and died before finishing
    assert store._claim("k", "fp", lease=30) == "new"
    now[0] += 31
    compute = Counter()
    outcome, _ = store.run("k", "fp", compute, lease=30)
    assert compute.calls == 0
    assert outcome.status == 409 and "unknown" in outcome.body["error"]


def test_in_flight_too_long_is_a_409(tmp_path):
    store = IdempotencyStore(tmp_path / "i.sqlite3", ttl=3600)
    assert store._claim("k", "fp", lease=30) == "new"
    outcome, _ = store.run("k", "fp", Counter(), lease=0.2)
    assert outcome.status == 409 and "in flight" in outcome.body["error"]


def test_a_locked_database_is_waited_for_cooperatively(tmp_path):
    path = tmp_path / "i.sqlite3"
    store = IdempotencyStore(path, ttl=60)
    store.run("warm-up", "fp", Counter(), lease=10)
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: blocker.execute("COMMIT")).start()
    started = time.monotonic()
    assert store.run("k", "fp", Counter(), lease=10)[0].status == 200
    assert time.monotonic() - started >= 0.25
    blocker.close()


def test_expired_keys_are_purged(tmp_path):
    now = [1000.0]
    path = tmp_path / "i.sqlite3"
    store = IdempotencyStore(path, ttl=10, clock=lambda: now[0])
    for index in range(5):
        store.run(f"k{index}", "fp", Counter(), lease=5)
    now[0] += 100
    store.run("fresh", "fp", Counter(), lease=5)
    count = sqlite3.connect(path).execute("SELECT count(*) FROM idempotency").fetchone()[0]
    assert count == 1


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
