"""Bot leases in the TELEGRAM_OWNERS bucket against a real nats-server: several
:class:`Ownership` objects, each on its own NATS connection, play the workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.nats import NatsServer
from harness.procs import wait_until
from harness.tokens import fake_token
from telegram_gateway.bus import Bus
from telegram_gateway.config import load_settings
from telegram_gateway.ownership import IDLE_MARGIN, OWNERS_BUCKET, Ownership, idle_refresh

pytestmark = pytest.mark.integration

BOTS = [101, 102, 103, 104]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats_server = NatsServer(tmp_path / "nats").start()
    yield nats_server
    nats_server.stop()


class Worker:
    """An Ownership on its own Bus, plus what a poller does with it: a bot being handed over
    is let go at once."""

    def __init__(
        self, server: NatsServer, tmp_path: Path, name: str, *, polls: bool = True
    ) -> None:
        settings = load_settings(
            {
                "TELEGRAM_BOT_TOKENS": ",".join(fake_token(bot) for bot in BOTS),
                "GATEWAY_API_TOKEN": "b" * 20,
                "NATS_URL": server.url,
                "GATEWAY_STATE_DIR": str(tmp_path),
                "GATEWAY_LEASE_TTL": "3",
            }
        )
        self.bus = Bus(settings)
        self.ownership = Ownership(settings, self.bus, BOTS, name=name)
        self.ownership.reporter(BOTS[0], lambda: {"state": "polling", "pid": 1})
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._polite if polls else self._standing_by, daemon=True
        )

    def start(self) -> Worker:
        self.bus.start()
        self.ownership.start()
        self._thread.start()
        return self

    def _polite(self) -> None:
        while not self._stop.wait(0.05):
            for bot in BOTS:
                if self.ownership.holds(bot) and not self.ownership.keeps(bot):
                    self.ownership.release(bot)

    def _standing_by(self) -> None:
        """Pollers that never start on their bots: each only waits, as a standby does."""
        while not self._stop.is_set():
            for bot in BOTS:
                self.ownership.wait(bot, 0.01)

    def owned(self) -> set[int]:
        return {bot for bot in BOTS if self.ownership.holds(bot)}

    def stop(self) -> None:
        self._stop.set()
        self.ownership.stop()
        self.bus.stop()

    def crash(self) -> None:
        """Stop renewing without letting go (what kill -9 leaves behind)."""
        self._stop.set()
        self.ownership._stopping = True
        self.bus.stop()


def exclusive(workers: list[Worker]) -> bool:
    owned = [worker.owned() for worker in workers]
    return all(a.isdisjoint(b) for i, a in enumerate(owned) for b in owned[i + 1 :])


@pytest.mark.parametrize(
    "stall_after,poll_timeout", [(90, 50), (60, 25), (60, 50), (60, 0), (11, 1), (300, 25)]
)
def test_an_idle_record_is_written_before_healthz_could_call_it_stalled(stall_after, poll_timeout):
    """The longest a written last getUpdates can age before the next write: the idle interval,
    then one more long poll. It must stay under the stall limit with the margin to spare."""
    interval = idle_refresh(stall_after, poll_timeout)
    assert interval > 0
    assert interval <= min(5, stall_after / 4) or (
        interval + poll_timeout + IDLE_MARGIN <= stall_after
    )
    if stall_after - poll_timeout - IDLE_MARGIN > 5:  # long enough to skip some polls
        assert interval > 5


def test_two_workers_split_the_bots_and_never_share_one(server, tmp_path):
    workers = [Worker(server, tmp_path, f"w{n}").start() for n in range(2)]
    try:
        wait_until(
            lambda: [len(w.owned()) for w in workers] == [2, 2], 15, "each worker owns two bots"
        )
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # a window of renewals: still two each, disjoint
            assert exclusive(workers)
            assert [len(w.owned()) for w in workers] == [2, 2]
            time.sleep(0.05)
        # every worker sees who owns what, and the owner's record
        for worker in workers:
            owners = {worker.ownership.owner(bot) for bot in BOTS}
            assert owners == {"w0", "w1"}
        record, age = workers[1].ownership.record(BOTS[0])
        assert record is not None and age < 3
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.parametrize("polls", [True, False], ids=["polling", "never-started-pollers"])
def test_a_worker_joining_later_gets_its_share_handed_over(server, tmp_path, polls):
    """With ``polls=False`` the first worker's pollers never start on their bots: it takes them
    and, in the same round, is asked to hand some over (another worker appeared), so only
    their standby wait can let them go. CI once saw such a lease renewed for ever and the bot
    polled by nobody."""
    first = Worker(server, tmp_path, "early", polls=polls).start()
    second = None
    try:
        wait_until(lambda: len(first.owned()) == 4, 15, "the only worker owns all bots")
        second = Worker(server, tmp_path, "late").start()
        wait_until(
            lambda: len(first.owned()) == 2 and len(second.owned()) == 2, 20, "two bots each"
        )
        assert exclusive([first, second])
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_crashed_owner_is_replaced_within_the_lease_time(server, tmp_path):
    workers = [Worker(server, tmp_path, f"w{n}").start() for n in range(2)]
    try:
        wait_until(lambda: [len(w.owned()) for w in workers] == [2, 2], 15, "two each")
        victim, survivor = workers
        orphans = victim.owned()
        victim.crash()
        crashed = time.monotonic()
        wait_until(lambda: orphans <= survivor.owned(), 10, "the survivor owns every bot")
        took = time.monotonic() - crashed
        assert took < 5, f"takeover took {took:.1f} s"
        # nobody owned a bot twice: the crashed worker's own view has run out as well
        assert victim.owned() == set()
    finally:
        workers[1].stop()


def blind(worker: Worker) -> None:
    """Stop the worker's watch without telling nats-py (as when the consumer behind it lived on
    a cluster node that died and could not be re-created): nothing more reaches the worker."""

    async def unsubscribe() -> None:
        await worker.bus._watches[OWNERS_BUCKET].unsubscribe()

    worker.bus.run(unsubscribe(), 5)


def test_a_blind_watch_is_started_again_and_a_crashed_owner_still_replaced(
    server, tmp_path, caplog
):
    """A survivor whose watch went blind sees no lease expire: its own renewals that do not
    come back make it watch the bucket again, and a lease it has not seen renewed is read
    from the bucket before its bots are taken."""
    workers = [Worker(server, tmp_path, f"w{n}").start() for n in range(2)]
    try:
        wait_until(lambda: [len(w.owned()) for w in workers] == [2, 2], 15, "two each")
        victim, survivor = workers
        orphans = victim.owned()
        blind(survivor)
        victim.crash()
        crashed = time.monotonic()
        with caplog.at_level("WARNING", logger="telegram_gateway.ownership"):
            wait_until(lambda: orphans <= survivor.owned(), 15, "the survivor owns every bot")
        took = time.monotonic() - crashed
        assert "watching the bucket again" in caplog.text
        assert took < 3 + 2 + 1 + 1, f"takeover took {took:.1f} s"  # lease, lag, round, slack
        # the watch delivers again: another worker's lease is seen
        newcomer = Worker(server, tmp_path, "w2").start()
        workers.append(newcomer)
        wait_until(lambda: survivor.ownership.alive("w2"), 10, "the survivor sees w2")
    finally:
        for worker in workers[1:]:
            worker.stop()


def test_a_lease_that_cannot_be_renewed_runs_out_for_its_owner(server, tmp_path):
    worker = Worker(server, tmp_path, "alone").start()
    try:
        wait_until(lambda: len(worker.owned()) == 4, 15, "owns every bot")
        server.stop()
        stopped = time.monotonic()
        wait_until(lambda: worker.owned() == set(), 10, "the leases run out for the owner too")
        # before the server could have expired them (3 s after the last renewal)
        assert time.monotonic() - stopped < 3.0
        server.start()
        wait_until(lambda: len(worker.owned()) == 4, 20, "owns them again after NATS is back")
        assert worker.bus.bucket_ready(OWNERS_BUCKET)
    finally:
        worker.stop()


def test_a_stalled_owner_loses_its_bots_and_rejoins_as_a_new_worker(server, tmp_path):
    """The owner's NATS loop is blocked past its lease (what SIGSTOP does to a worker): the
    other worker takes its bots, the stalled one never counts them as its own meanwhile, and
    once it runs again its renewal fails, it drops them and gets its share back as a newcomer.
    """
    workers = [Worker(server, tmp_path, f"w{n}").start() for n in range(2)]
    stalled, other = workers
    try:
        wait_until(lambda: [len(w.owned()) for w in workers] == [2, 2], 15, "two each")
        taken = stalled.owned()
        stalled.bus.call_soon(lambda: time.sleep(5))  # blocks its loop: no renewal, no watch
        overlaps = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not taken <= other.owned():
            overlaps += not exclusive(workers)
            time.sleep(0.01)
        assert taken <= other.owned(), "the other worker took the stalled worker's bots"
        assert stalled.owned() == set()
        wait_until(lambda: [len(w.owned()) for w in workers] == [2, 2], 30, "two each again")
        assert overlaps == 0
        assert exclusive(workers)
    finally:
        for worker in workers:
            worker.stop()
