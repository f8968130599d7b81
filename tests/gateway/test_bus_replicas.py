"""GATEWAY_NATS_REPLICAS against real nats-servers: on a 3-node cluster the stream, the object
store and every Key-Value bucket get 3 replicas, an existing single-replica stream is changed
to 3 with its messages, and it keeps serving with a node gone; on a single server 3 replicas
are refused with a reason that names the setting."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from harness.nats import NatsCluster, NatsServer
from harness.procs import wait_until
from harness.tokens import fake_token
from telegram_gateway.bus import FILES_BUCKET, Bus, Outgoing
from telegram_gateway.config import load_settings

pytestmark = pytest.mark.integration

BUCKET = "TEST_REPLICAS"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    nodes = NatsCluster(tmp_path / "cluster").start()
    yield nodes
    nodes.stop()


def started_bus(url: str, tmp_path: Path, replicas: int, ready: bool = True) -> Bus:
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKENS": fake_token(1),
            "GATEWAY_API_TOKEN": "b" * 20,
            "NATS_URL": url,
            "GATEWAY_STATE_DIR": str(tmp_path),
            "GATEWAY_PUBLISH_TIMEOUT": "2",
            "GATEWAY_NATS_REPLICAS": str(replicas),
        }
    )
    bus = Bus(settings)
    bus.declare_bucket(KeyValueConfig(bucket=BUCKET, history=1, storage=StorageType.FILE, ttl=0))
    bus.start()
    if ready:
        try:
            wait_until(
                lambda: (
                    bus.connected
                    and all(bus.status()[key] for key in ("stream_ready", "files_bucket_ready"))
                    and bus.bucket_ready(BUCKET)
                ),
                30,
                f"bus ready with {replicas} replica(s)",
            )
        except AssertionError as exc:
            status = bus.status()
            bus.stop()  # (a bus left running would log its reconnections into later tests)
            raise AssertionError(f"{exc}; bus status: {status}") from None
    return bus


def stream_facts(url: str) -> dict[str, Any]:
    """Replicas (configured, and the peers that are current) and message count per stream."""

    async def main() -> dict[str, Any]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            facts = {}
            for name in ("TELEGRAM", f"OBJ_{FILES_BUCKET}", f"KV_{BUCKET}"):
                info = await js.stream_info(name)
                # the leader and the replicas that have caught up with it
                replicas = (info.cluster.replicas or []) if info.cluster else []
                peers = 1 + sum(1 for peer in replicas if peer.current)
                facts[name] = (info.config.num_replicas, peers, info.state.messages)
            return facts
        finally:
            await nc.close()

    return asyncio.run(main())


def updates(count: int) -> list[Outgoing]:
    return [
        Outgoing("telegram.in.1.message", b'{"update_id":%d}' % i, {"Nats-Msg-Id": f"1:{i}"})
        for i in range(count)
    ]


def test_a_single_replica_stream_moves_to_three_and_survives_a_node(
    cluster: NatsCluster, tmp_path: Path
) -> None:
    first = cluster.nodes[0]
    bus = started_bus(first.url, tmp_path, replicas=1)
    try:
        assert len(bus.publish_each(updates(50))) == 50
        facts = stream_facts(first.url)
        assert {name: fact[:2] for name, fact in facts.items()} == {
            "TELEGRAM": (1, 1),
            f"OBJ_{FILES_BUCKET}": (1, 1),
            f"KV_{BUCKET}": (1, 1),
        }
    finally:
        bus.stop()

    bus = started_bus(first.url, tmp_path, replicas=3)  # the role's value on 3 hosts
    try:
        wait_until(
            lambda: all(fact[:2] == (3, 3) for fact in stream_facts(first.url).values()),
            30,
            "every stream with 3 current replicas",
        )
        assert stream_facts(first.url)["TELEGRAM"][2] == 50  # nothing lost on the way
    finally:
        bus.stop()

    # one node gone: the other two still store and serve (a majority of 3)
    cluster.nodes[2].stop()
    bus = started_bus(cluster.nodes[1].url, tmp_path, replicas=3)
    try:
        acks = bus.publish_each(updates(60))
        assert [getattr(ack, "duplicate", None) for ack in acks] == [True] * 50 + [False] * 10
        assert stream_facts(cluster.nodes[1].url)["TELEGRAM"][2] == 60
    finally:
        bus.stop()


def test_three_replicas_on_a_single_server_are_refused_by_name(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    bus = started_bus(server.url, tmp_path, replicas=3, ready=False)
    try:
        wait_until(lambda: bus.status()["last_error"], 10, "an error noted")
        status = bus.status()
        assert status["connected"] and not status["stream_ready"]
        assert "GATEWAY_NATS_REPLICAS=3 needs a NATS cluster" in status["last_error"]
    finally:
        bus.stop()
        server.stop()
