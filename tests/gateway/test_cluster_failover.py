"""A host that dies together with its NATS node, on a 3-node JetStream cluster: two hosts (each a
gateway connected to its own node, each with its own Bot API server) and a third node that only
stores (the test reads through it).

Which node leads the TELEGRAM_OWNERS bucket decides how long the other host waits:

- a surviving node leads it: the dead worker's lease expires (GATEWAY_LEASE_TTL) and the other
  host takes its bots; the watch whose consumer lived on the dead node is started again;
- the dead node led it: no lease can be written anywhere until NATS has elected another leader
  (nats-server waits 4-9 s for a lost leader, ``minElectionTimeoutDefault`` and
  ``maxElectionTimeoutDefault`` in server/raft.go, then campaigns for up to 0.8 s), and the
  survivors' own leases lapse meanwhile: they take the bots again once it has.

Either way an update Telegram delivers to the new owner's server afterwards lands exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from harness.emulator import EmulatorProcess, private_message
from harness.gateway import GatewayProcess
from harness.nats import NatsCluster
from harness.procs import wait_until
from harness.stack import Stack
from telegram_gateway.ownership import OWNERS_BUCKET

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BOTS = (820000001, 820000002, 820000003, 820000004)
CHAT = 434343
LEASE_TTL = 3.0
FAST = {
    "GATEWAY_POLL_TIMEOUT": "2",
    "GATEWAY_LEASE_TTL": f"{LEASE_TTL:g}",
    "GATEWAY_NATS_REPLICAS": "3",
}
#: the longest a Raft group of nats-server waits before it elects a new leader: the election
#: timeout (at most 9 s) and the campaign (at most 0.8 s)
NATS_ELECTION_MAX = 9.8
#: the issue's bound for a host that dies (its bots polled by another host within it)
FAILOVER_BOUND = 10.0


def host_of(worker: str) -> str:
    return worker.rpartition("-")[0]


async def _lead(url: str, stream: str, node: str) -> str:
    """Ask the stream's leader to step down in favour of ``node``; the leader then."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for _ in range(20):
            info = await js.stream_info(stream)
            if info.cluster and info.cluster.leader == node:
                break
            body = json.dumps({"placement": {"preferred": node}}).encode()
            with contextlib.suppress(Exception):
                await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
            await asyncio.sleep(1)
        info = await js.stream_info(stream)
        return str(info.cluster.leader if info.cluster else "")
    finally:
        await nc.close()


@pytest.fixture
def cluster_hosts(tmp_path: Path) -> Iterator[tuple[NatsCluster, Stack, EmulatorProcess]]:
    cluster = NatsCluster(tmp_path / "cluster").start()
    try:
        chats = [{"id": CHAT, "type": "private"}]
        with Stack(tmp_path, BOTS, gateway=False, chats=chats, nats=cluster.nodes[2]) as stack:
            emu_b = EmulatorProcess(tmp_path / "emulator-b", bots=list(stack.tokens.values()))
            emu_b.start()
            try:
                for bot in BOTS:
                    emu_b.add_chats(bot, chats)
                yield cluster, stack, emu_b
            finally:
                emu_b.stop()
    finally:
        cluster.stop()


def owners(stack: Stack) -> dict[int, str]:
    """bot -> the host of the worker polling it."""
    return {
        bot: host_of(str(record.get("worker", "")))
        for bot, record in stack.leases().items()
        if record.get("state") == "polling"
    }


def kill9(gateway: GatewayProcess) -> None:
    assert gateway.proc is not None
    for pid in [gateway.proc.pid, *gateway.worker_pids()]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    gateway.proc.wait(10)
    gateway.proc = None


@pytest.mark.parametrize("leader", ["dead", "surviving"])
def test_a_host_dies_with_its_nats_node(cluster_hosts, leader: str) -> None:
    cluster, stack, emu_b = cluster_hosts
    node_a, node_b = cluster.nodes[0], cluster.nodes[1]
    gateway_a = stack.add_gateway(
        workers=1, GATEWAY_HOST_NAME="host-a", NATS_URL=node_a.url, **FAST
    )
    wait_until(lambda: len(owners(stack)) == len(BOTS), 30, "host-a polls every bot")
    gateway_b = stack.add_gateway(
        workers=1,
        GATEWAY_HOST_NAME="host-b",
        NATS_URL=node_b.url,
        TELEGRAM_API_URL=emu_b.api_url,
        **FAST,
    )
    wanted = node_a if leader == "dead" else node_b
    for stream in (f"KV_{OWNERS_BUCKET}", "TELEGRAM"):
        got = asyncio.run(_lead(cluster.nodes[2].url, stream, wanted.name))
        assert got == wanted.name, f"{stream} led by {got}, not {wanted.name}"
    wait_until(lambda: set(owners(stack).values()) == {"host-a", "host-b"}, 60, "both hosts")
    bot = min(b for b, h in owners(stack).items() if h == "host-a")
    before = stack.emulator.inject(
        bot, [private_message(CHAT, f"before-{i}", i + 1) for i in range(5)]
    )
    want = {
        f"{bot}:{u}@host-a" for u in range(before["first_update_id"], before["last_update_id"] + 1)
    }
    wait_until(lambda: want <= set(stored(stack, bot)), 20, "host-a's updates stored")

    mark = len(gateway_b.log())
    died, died_at = time.monotonic(), time.time()
    kill9(gateway_a)
    assert node_a.proc is not None
    node_a.proc.kill()
    node_a.proc.wait(5)
    node_a.proc = None
    polls = re.compile(rf"bot {bot}: worker host-b-\d+ polls getUpdates")
    wait_until(lambda: polls.search(gateway_b.log()[mark:]) is not None, 30, "host-b polls it")
    took = time.monotonic() - died
    # Telegram now delivers to host-b's server (the bot polls there): exactly once in the stream
    after = emu_b.inject(bot, [private_message(CHAT, f"after-{i}", i + 1) for i in range(5)])
    want |= {
        f"{bot}:{u}@host-b" for u in range(after["first_update_id"], after["last_update_id"] + 1)
    }
    wait_until(lambda: want <= set(stored(stack, bot)), 30, "host-b's updates stored")
    # when the stream stored the last of them (the reading here may wait for NATS longer)
    in_stream = max(m.at for m in stack.read_stream() if m.headers["Nats-Msg-Id"] in want) - died_at
    rewatched = "watching the bucket again" in gateway_b.log()[mark:]
    print(
        f"\nHOST AND NODE DIED (the owners' bucket and the stream led by the {leader} node): "
        f"host-b polls bot {bot} {took:.2f} s later, its updates are in the stream "
        f"{in_stream:.2f} s after the death; watch started again: {rewatched}"
    )
    assert stored(stack, bot) == Counter(dict.fromkeys(want, 1))
    bound = FAILOVER_BOUND if leader == "surviving" else NATS_ELECTION_MAX + LEASE_TTL
    assert took < bound, (took, bound)
    assert in_stream < bound, (in_stream, bound)


def stored(stack: Stack, bot: int) -> Counter[str]:
    return Counter(
        m.headers["Nats-Msg-Id"]
        for m in stack.read_stream()
        if m.headers["Nats-Msg-Id"].startswith(f"{bot}:")
    )
