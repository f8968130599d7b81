"""The poller against an in-memory Bot API and bus (unit); the real thing is in
test_inbound_*.py."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness.procs import wait_until
from harness.tokens import fake_token
from telegram_gateway import poller as poller_module
from telegram_gateway.bus import Ack, Outgoing
from telegram_gateway.config import BotConfig, load_settings
from telegram_gateway.errors import BotApiUnavailable, BusUnavailable, PublishFailed, TelegramError
from telegram_gateway.poller import (
    CONFLICT,
    POLLING,
    STOPPED,
    WAITING_FOR_NATS,
    Poller,
    PollerRecord,
    evaluate,
)
from telegram_gateway.routing import Router, parse_routes

pytestmark = pytest.mark.unit

BOT_ID = 5151


class FakeBotApi:
    """getUpdates with offset confirmation, like the Bot API; errors can be queued."""

    def __init__(self, bot: BotConfig, count: int = 0, webhook: str = "") -> None:
        self.bot = bot
        self.updates = [
            {"update_id": 1000 + i, "message": {"chat": {"id": 1}, "text": f"m{i}"}}
            for i in range(count)
        ]
        self.confirmed = 0  # update ids below this are gone
        self.offsets: list[int | None] = []
        self.errors: list[Exception] = []
        self.webhook = webhook
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            start = self.updates[-1]["update_id"] + 1 if self.updates else 1000
            self.updates += [
                {"update_id": start + i, "message": {"chat": {"id": 1}, "text": "x"}}
                for i in range(count)
            ]

    def call(self, method: str, params: dict[str, Any] | None = None, **_: Any) -> Any:
        self.calls.append(method)
        if method == "getWebhookInfo":
            return {"url": self.webhook, "pending_update_count": 0}
        if method == "deleteWebhook":
            self.webhook = ""
            return True
        raise AssertionError(method)

    def get_updates_raw(self, offset, limit, poll_timeout, allowed_updates=None):
        self.calls.append("getUpdates")
        self.offsets.append(offset)
        assert allowed_updates and "chat_member" in allowed_updates
        if self.errors:
            raise self.errors.pop(0)
        with self.lock:
            if offset is not None:
                self.confirmed = max(self.confirmed, offset)
            ready = [u for u in self.updates if u["update_id"] >= self.confirmed][:limit]
        if not ready:
            time.sleep(0.01)  # a (very short) long poll that found nothing
        return [(json.loads(json.dumps(u)), json.dumps(u).encode()) for u in ready]


class FakeBus:
    """JetStream stand-in; ``dedupe=False`` plays a duplicate window that has expired."""

    def __init__(self, dedupe: bool = True) -> None:
        self.connected = True
        self.lost = False
        self.dedupe = dedupe
        self.stored: list[Outgoing] = []
        self.ids: set[str] = set()
        self.attempts: dict[str, int] = {}
        self.core: list[Outgoing] = []
        self.fail_after: int | None = None  # ack only this many, then fail the rest, once

    def publish_each(self, messages):
        if not self.connected or self.lost:
            raise BusUnavailable("NATS connection lost while publishing")
        results: list[Any] = []
        for index, message in enumerate(messages):
            msg_id = message.headers["Nats-Msg-Id"]
            self.attempts[msg_id] = self.attempts.get(msg_id, 0) + 1
            if self.fail_after is not None and index >= self.fail_after:
                results.append(PublishFailed("no acknowledgement"))
                continue
            duplicate = self.dedupe and msg_id in self.ids
            if not duplicate:
                self.ids.add(msg_id)
                self.stored.append(message)
            results.append(Ack("TELEGRAM", len(self.stored), duplicate))
        self.fail_after = None
        return results

    def publish_core(self, messages):
        if not self.connected:
            raise BusUnavailable("not connected to NATS")
        self.core.extend(messages)


class FakeLeases:
    """The ownership of one bot, in memory: the first poller that asks owns it until it lets
    go or the test revokes the lease (as an expiry would)."""

    def __init__(self) -> None:
        self.owner: str | None = None
        self.names = iter(f"host-{n}" for n in range(100))
        self.reporters: dict[str, Any] = {}
        self.revoked: set[str] = set()
        self.lock = threading.Lock()
        self.refresh = 5.0  # what Ownership.refresh is: progress written this often at most
        self.idle_refresh = 5.0  # the same for a long poll that returned nothing
        self.changes: list[float] = []  # when a poller asked for its record to be written

    def view(self) -> FakeLeaseView:
        return FakeLeaseView(self, next(self.names))


class FakeLeaseView:
    """One worker's side of :class:`FakeLeases` (what a Poller uses of Ownership)."""

    def __init__(self, leases: FakeLeases, name: str) -> None:
        self.leases = leases
        self.name = name

    def reporter(self, bot_id: int, snapshot: Any) -> None:
        self.leases.reporters[self.name] = snapshot

    def holds(self, bot_id: int) -> bool:
        return self.leases.owner == self.name and self.name not in self.leases.revoked

    keeps = holds

    def wait(self, bot_id: int, timeout: float) -> bool:
        with self.leases.lock:
            if self.leases.owner is None and self.name not in self.leases.revoked:
                self.leases.owner = self.name
        if not self.holds(bot_id):
            time.sleep(min(timeout, 0.02))
        return self.holds(bot_id)

    @property
    def refresh(self) -> float:
        return self.leases.refresh

    @property
    def idle_refresh(self) -> float:
        return self.leases.idle_refresh

    def changed(self, bot_id: int) -> None:
        """Written at once (the real one writes within POKE_SPACING): takes the snapshot."""
        self.leases.changes.append(time.monotonic())
        self.leases.reporters[self.name]()

    def wake(self, bot_id: int) -> None:
        pass

    def release(self, bot_id: int) -> None:
        with self.leases.lock:
            if self.leases.owner == self.name:
                self.leases.owner = None

    def record(self, bot_id: int) -> tuple[dict[str, Any] | None, float]:
        owner = self.leases.owner
        if owner is None:
            return None, 0.0
        return self.leases.reporters[owner](), 0.0


def settings_for(tmp_path: Path, **overrides: Any):
    env = {
        "TELEGRAM_BOT_TOKENS": fake_token(BOT_ID),
        "GATEWAY_API_TOKEN": "t" * 20,
        "GATEWAY_STATE_DIR": str(tmp_path),
        "GATEWAY_POLL_TIMEOUT": "0",
        "GATEWAY_POLL_LIMIT": "10",
        "GATEWAY_HOST_NAME": "host-a",
    }
    return load_settings(env, overrides)


@pytest.fixture
def make(tmp_path: Path):
    pollers: list[Poller] = []

    leases = FakeLeases()

    def build(api=None, bus=None, router=None, **overrides) -> tuple[Poller, FakeBotApi, FakeBus]:
        settings = settings_for(tmp_path, **overrides)
        api = api or FakeBotApi(settings.bots[0])
        bus = bus or FakeBus()
        poller = Poller(settings, api, bus, router, ownership=leases.view())  # type: ignore[arg-type]
        poller.leases = leases  # type: ignore[attr-defined]
        pollers.append(poller)
        return poller, api, bus

    yield build
    for poller in pollers:
        poller.stop(timeout=1)


def stored_ids(bus: FakeBus) -> list[int]:
    return [int(m.headers["Telegram-Update-Id"]) for m in bus.stored]


def test_publishes_each_update_once_then_confirms(make):
    poller, api, bus = make()
    api.add(35)
    poller.start()
    wait_until(lambda: len(bus.stored) == 35 and api.confirmed == 1035, 5, "35 updates")
    assert stored_ids(bus) == list(range(1000, 1035))
    first = bus.stored[0]
    assert first.subject == f"telegram.in.{BOT_ID}.message"
    assert first.headers["Nats-Msg-Id"] == f"{BOT_ID}:1000@host-a"
    assert json.loads(first.payload) == api.updates[0]
    # offsets: None first, then last update_id + 1 of each batch of 10
    assert api.offsets[:5] == [None, 1010, 1020, 1030, 1035]
    assert poller.checks()[f"poller:{BOT_ID}"].ok


def test_nothing_is_confirmed_while_nats_is_down(make):
    poller, api, bus = make()
    bus.connected = False
    api.add(5)
    poller.start()
    wait_until(lambda: poller.record.state == WAITING_FOR_NATS, 5, "waiting for NATS")
    time.sleep(0.3)  # a window in which nothing may happen
    assert api.offsets == []  # no getUpdates = nothing confirmed
    check = poller.checks()[f"poller:{BOT_ID}"]
    assert not check.ok and "not polling: NATS disconnected" in check.reason
    bus.connected = True
    wait_until(lambda: len(bus.stored) == 5, 5, "the batch after NATS is back")
    # the connection breaks while a batch is published: it is kept, and not confirmed
    bus.lost = True
    api.add(3)
    wait_until(lambda: poller.record.state == WAITING_FOR_NATS, 5, "waiting for NATS")
    check = poller.checks()[f"poller:{BOT_ID}"]
    assert not check.ok and "3 update(s) wait for JetStream" in check.reason
    time.sleep(0.3)  # a window in which nothing may be confirmed
    assert api.confirmed == 1005
    bus.lost = False
    wait_until(lambda: api.confirmed == 1008, 5, "confirmation after NATS is back")
    assert stored_ids(bus) == list(range(1000, 1008))
    wait_until(lambda: poller.checks()[f"poller:{BOT_ID}"].ok, 5, "healthy again")


def test_acked_updates_are_not_published_again_even_without_dedupe(make):
    """A NATS outage longer than the duplicate window: the batch's memory prevents doubles."""
    poller, api, bus = make(bus=FakeBus(dedupe=False))
    bus.fail_after = 4
    api.add(10)
    poller.start()
    wait_until(lambda: api.confirmed == 1010, 5, "batch confirmed")
    assert sorted(stored_ids(bus)) == list(range(1000, 1010))
    assert all(count == (1 if i < 4 else 2) for i, count in enumerate(bus.attempts.values()))


def test_routing_copies_after_the_ack(make):
    rules = [{"name": "ask", "match": {"command": "/ask"}, "subjects": ["agents.helper.inbox"]}]
    settings = settings_for(Path("/nonexistent"))
    router = Router(parse_routes({"routes": rules}, settings.bots))
    poller, api, bus = make(router=router)
    api.updates = [
        {"update_id": 1, "message": {"chat": {"id": 1}, "text": "/ask one"}},
        {"update_id": 2, "message": {"chat": {"id": 1}, "text": "no"}},
    ]
    poller.start()
    wait_until(lambda: api.confirmed == 3, 5, "confirmed")
    assert [m.subject for m in bus.core] == ["agents.helper.inbox"]
    assert bus.core[0].headers["Nats-Msg-Id"] == f"{BOT_ID}:1@host-a"
    assert json.loads(bus.core[0].payload)["message"]["text"] == "/ask one"


def test_webhook_is_deleted_before_polling(make, caplog):
    caplog.set_level(logging.WARNING)
    settings = settings_for(Path("/nonexistent"))
    api = FakeBotApi(settings.bots[0], webhook="https://example.org/hook/secret-path")
    poller, api, _ = make(api=api)
    poller.start()
    wait_until(lambda: "getUpdates" in api.calls, 5, "polling")
    assert api.calls[:3] == ["getWebhookInfo", "deleteWebhook", "getUpdates"]
    assert "webhook (host example.org)" in caplog.text
    assert "secret-path" not in caplog.text


def test_conflict_is_a_health_failure_logged_once(make, caplog, monkeypatch):
    monkeypatch.setattr(poller_module, "BACKOFF_FIRST", 0.05)
    monkeypatch.setattr(poller_module, "BACKOFF_MAX", 0.2)
    caplog.set_level(logging.INFO, logger="telegram_gateway.poller")
    poller, api, _ = make()
    conflict = TelegramError(
        "getUpdates",
        {"ok": False, "error_code": 409, "description": "Conflict: terminated by other getUpdates"},
    )
    api.errors = [conflict] * 3 + [BotApiUnavailable("getUpdates", "refused")] * 2
    poller.start()
    wait_until(lambda: poller.record.state == CONFLICT, 5, "conflict state")
    check = poller.checks()[f"poller:{BOT_ID}"]
    assert not check.ok and "409 Conflict" in check.reason
    wait_until(lambda: poller.record.state == POLLING, 20, "polling again")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one for the 409s, one for the connection errors
    assert "getUpdates works again after 5 failed attempt(s)" in caplog.text


def test_one_poller_per_bot_and_takeover(make):
    first, api, bus = make()
    second, _, _ = make(api=api, bus=bus)
    api.add(5)
    first.start()
    wait_until(lambda: first.owning, 5, "first owns the bot")
    second.start()
    wait_until(lambda: api.confirmed == 1005, 5, "first delivered")
    time.sleep(0.2)  # a window in which the standby must not take the bot
    assert not second.owning
    # the standby reports the owner's state from its lease
    assert second.checks()[f"poller:{BOT_ID}"].ok
    assert f"worker {first.ownership.name}" in second.checks()[f"poller:{BOT_ID}"].reason
    first.stop(timeout=1)
    wait_until(lambda: second.owning, 5, "second takes over")
    api.add(5)
    wait_until(lambda: api.confirmed == 1010, 5, "second delivered")
    assert stored_ids(bus) == list(range(1000, 1010))


def test_a_lost_lease_stops_polling_before_the_next_getupdates(make):
    """The lease is checked before every getUpdates (which confirms the previous batch): once
    it may have expired, the worker neither polls nor confirms, and another one takes over
    from the last confirmed offset."""
    first, api, bus = make()
    api.add(5)
    first.start()
    wait_until(lambda: api.confirmed == 1005, 5, "first delivered")
    leases = first.leases  # type: ignore[attr-defined]
    leases.revoked.add(first.ownership.name)  # as if its lease had run out
    wait_until(lambda: not first.owning, 5, "first stops")
    calls = api.calls.count("getUpdates")
    api.add(5)
    time.sleep(0.3)  # a window in which the stalled owner must not poll
    assert api.calls.count("getUpdates") == calls
    assert api.confirmed == 1005
    second, _, _ = make(api=api, bus=bus)
    second.start()
    wait_until(lambda: api.confirmed == 1010, 5, "second delivered")
    assert api.calls.count("getUpdates") > calls
    assert stored_ids(bus) == list(range(1000, 1010))


def test_evaluate_names_each_failure():
    now = 1_000_000.0
    base = dict(bot_id=1, pid=42, since=now - 100, last_ok=now - 1, offset=7, updated=now - 0.5)
    assert evaluate(PollerRecord(state=POLLING, **base), now, 60).ok
    assert not evaluate(None, now, 60).ok
    stale = evaluate(PollerRecord(state=POLLING, **{**base, "updated": now - 30}), now, 60)
    assert not stale.ok and "last record 30 s ago from worker 42" in stale.reason
    stalled = evaluate(PollerRecord(state=POLLING, **{**base, "last_ok": now - 90}), now, 60)
    assert not stalled.ok and "stalled" in stalled.reason
    fresh = evaluate(
        PollerRecord(state=POLLING, **{**base, "last_ok": None, "since": now}), now, 60
    )
    assert fresh.ok  # just started: the first long poll may take a while
    assert not evaluate(PollerRecord(state=STOPPED, **base), now, 60).ok
    conflict = evaluate(PollerRecord(state=CONFLICT, reason="409 x", **base), now, 60)
    assert not conflict.ok and "409" in conflict.reason
    waiting = PollerRecord(state=WAITING_FOR_NATS, reason="NATS disconnected", **base)
    waiting.unconfirmed = 12
    assert "12 update(s) wait for JetStream" in evaluate(waiting, now, 60).reason
    record = PollerRecord(state=POLLING, **base)
    assert PollerRecord.from_json(record.to_json()) == record


def test_progress_alone_is_written_every_refresh_interval_not_every_poll(make):
    """The record (what other workers read for /healthz) is written when the state changes
    and, while only the last getUpdates moves on, once per refresh interval: with many idle
    bots, a write per long poll would be most of the gateway's idle work."""
    poller, api, _bus = make()
    poller.leases.refresh = poller.leases.idle_refresh = 1000.0  # type: ignore[attr-defined]
    poller.start()
    wait_until(lambda: poller.record.state == "polling", 5, "polling")
    time.sleep(0.3)
    polls = len(api.offsets)
    quiet = len(poller.leases.changes)  # type: ignore[attr-defined]
    assert polls > 10 and quiet <= 3  # the state changes only (starting, polling)
    poller.leases.refresh = poller.leases.idle_refresh = 0.05  # type: ignore[attr-defined]
    time.sleep(0.5)
    written = len(poller.leases.changes) - quiet  # type: ignore[attr-defined]
    assert 3 <= written <= 0.5 / 0.05 + 2


def test_an_idle_bot_is_written_less_often_than_a_busy_one(make):
    """Empty long polls use the idle interval; polls that bring updates the busy one."""
    poller, api, _bus = make()
    poller.leases.refresh, poller.leases.idle_refresh = 0.05, 1000.0  # type: ignore[attr-defined]
    poller.start()
    wait_until(lambda: poller.record.state == "polling", 5, "polling")
    time.sleep(0.3)
    quiet = len(poller.leases.changes)  # type: ignore[attr-defined]
    assert len(api.offsets) > 10 and quiet <= 3  # idle: the state changes only
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # busy: a batch every 10 ms
        api.add(1)
        time.sleep(0.01)
    written = len(poller.leases.changes) - quiet  # type: ignore[attr-defined]
    assert 3 <= written <= 0.5 / 0.05 + 2
