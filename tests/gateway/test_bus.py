"""The NATS bus against a real nats-server (no gateway process): batch publishing with
per-message acknowledgements, duplicates, a lost stream, an outage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest

from harness.nats import NatsServer
from harness.procs import wait_until
from harness.tokens import fake_token
from telegram_gateway.bus import Ack, Bus, Outgoing
from telegram_gateway.config import Settings, load_settings
from telegram_gateway.errors import BusUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path):
    nats_server = NatsServer(tmp_path / "nats").start()
    yield nats_server
    nats_server.stop()


def bus_settings(server: NatsServer, tmp_path: Path, **extra: str) -> Settings:
    """A one-bot gateway's settings against `server`."""
    return load_settings(
        {
            "TELEGRAM_BOT_TOKENS": fake_token(1),
            "GATEWAY_API_TOKEN": "b" * 20,
            "NATS_URL": server.url,
            "GATEWAY_STATE_DIR": str(tmp_path),
            **extra,
        }
    )


@pytest.fixture
def bus(server: NatsServer, tmp_path: Path):
    the_bus = Bus(bus_settings(server, tmp_path, GATEWAY_PUBLISH_TIMEOUT="1"))
    the_bus.start()
    wait_until(lambda: the_bus.connected and the_bus.status()["stream_ready"], 10, "bus connected")
    yield the_bus
    the_bus.stop()


def messages(count: int, start: int = 0) -> list[Outgoing]:
    return [
        Outgoing(
            f"telegram.in.1.{'message' if i % 2 else 'poll'}",
            b'{"update_id":%d}' % i,
            {"Nats-Msg-Id": f"1:{i}", "Telegram-Update-Id": str(i)},
        )
        for i in range(start, start + count)
    ]


async def _stream(url: str, action: str = "count") -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        if action == "delete":
            await js.delete_stream("TELEGRAM")
            return 0
        return int((await js.stream_info("TELEGRAM")).state.messages)
    finally:
        await nc.close()


def test_batch_acks_in_order_and_duplicates_flagged(bus: Bus, server: NatsServer):
    results = bus.publish_each(messages(250))
    assert all(isinstance(r, Ack) and not r.duplicate for r in results)
    assert [r.seq for r in results] == list(range(1, 251))  # type: ignore[union-attr]
    again = bus.publish_each(messages(10, start=245))
    assert [a.duplicate for a in again] == [True] * 5 + [False] * 5
    assert asyncio.run(_stream(server.url)) == 255
    assert bus.publish_each([]) == []


def test_a_deleted_stream_is_created_again(bus: Bus, server: NatsServer):
    asyncio.run(_stream(server.url, "delete"))
    results = bus.publish_each(messages(20))
    assert all(isinstance(r, Ack) for r in results)
    assert asyncio.run(_stream(server.url)) == 20


def test_outage_raises_bus_unavailable_then_reconnects(bus: Bus, server: NatsServer):
    server.stop()
    wait_until(lambda: not bus.connected, 10, "bus notices the outage")
    with pytest.raises(BusUnavailable):
        bus.publish_each(messages(3))
    assert bus.status()["disconnected_for_s"] is not None
    server.start()
    wait_until(lambda: bus.connected and bus.status()["stream_ready"], 15, "bus reconnects")
    assert all(isinstance(r, Ack) for r in bus.publish_each(messages(3)))


def test_a_key_with_its_own_ttl_expires_and_reads_as_absent(server: NatsServer, tmp_path: Path):
    """Per-key TTL (the workers' leases): the key goes that long after its last write, is
    absent to a read even while the server's expiry marker stands, cannot be updated at its
    old revision, and can be created again."""
    from nats.js.api import KeyValueConfig, StorageType

    from telegram_gateway.errors import RevisionMismatch

    the_bus = Bus(bus_settings(server, tmp_path))
    the_bus.declare_bucket(
        KeyValueConfig(bucket="TTL_TEST", history=1, storage=StorageType.FILE, limit_marker_ttl=1)
    )
    the_bus.start()
    try:
        wait_until(lambda: the_bus.bucket_ready("TTL_TEST"), 10, "bucket ready")
        first = the_bus.run(the_bus.kv_create_async("TTL_TEST", "lease", b"x", ttl=1), 5)
        kept = the_bus.run(the_bus.kv_update_async("TTL_TEST", "lease", b"y", first, ttl=1), 5)
        the_bus.kv_create("TTL_TEST", "claim", b"no ttl")
        assert the_bus.kv_get("TTL_TEST", "lease") is not None

        def marker() -> int | None:
            return the_bus.run(the_bus._expiry_marker("TTL_TEST", "lease"), 5)

        wait_until(lambda: marker() is not None, 5, "the server's expiry marker")
        assert the_bus.kv_get("TTL_TEST", "lease") is None  # the marker is no value
        assert the_bus.kv_get("TTL_TEST", "claim") is not None  # no TTL: it stays
        with pytest.raises(RevisionMismatch):
            the_bus.run(the_bus.kv_update_async("TTL_TEST", "lease", b"z", kept, ttl=1), 5)
        assert the_bus.run(the_bus.kv_create_async("TTL_TEST", "lease", b"new", ttl=1), 5) > kept
    finally:
        the_bus.stop()


def test_what_failed_at_connect_is_created_later_without_a_reconnect(
    server: NatsServer, tmp_path: Path
):
    """A stream that cannot be created when the bus connects (here another stream holds its
    subjects; on a cluster, a leader election) is tried again until it exists."""

    async def block(action: str) -> None:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            if action == "add":
                await js.add_stream(name="BLOCKER", subjects=["telegram.in.>"])
            else:
                await js.delete_stream("BLOCKER")
        finally:
            await nc.close()

    asyncio.run(block("add"))
    the_bus = Bus(bus_settings(server, tmp_path))
    the_bus.start()
    try:
        wait_until(lambda: the_bus.status()["last_error"], 10, "the stream refused")
        assert not the_bus.status()["stream_ready"]
        asyncio.run(block("delete"))
        wait_until(lambda: the_bus.status()["stream_ready"], 20, "the stream created later")
        assert the_bus.status()["reconnects"] == 0
    finally:
        the_bus.stop()
