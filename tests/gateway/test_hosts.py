"""Two hosts sharing one NATS: each with its own Bot API server (an emulator) and its own
gateway (GATEWAY_HOST_NAME host-a / host-b). The test plays Telegram: it delivers a bot's
updates to a server where the bot's instance runs.

- Bots spread over both hosts; each bot's instance runs only on its owner's host; updates
  land once with their host in the Nats-Msg-Id; /send on either host goes out through the
  owner's server.
- A host dies (its gateway killed -9, its server stopped) while updates wait in its server's
  queue: the other host polls the bot within 10 s; when the host comes back, its gateway drains
  what its server kept into the stream and closes the instance: every update injected on either
  server is in the stream exactly once.
- A bot moved by rebalancing (a second host joins) is closed on the first host's server; while
  the server refuses close (10-minute rule) the instance is drained, so an update Telegram
  still delivers there is not lost.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.emulator import EmulatorProcess, private_message
from harness.gateway import GatewayProcess
from harness.procs import wait_until
from harness.stack import Stack

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BOTS = (810000001, 810000002, 810000003, 810000004)
CHAT = 424242
FAST = {"GATEWAY_POLL_TIMEOUT": "2", "GATEWAY_LEASE_TTL": "3"}


def host_of(worker: str) -> str:
    return worker.rpartition("-")[0]


@dataclass
class Hosts:
    stack: Stack
    emu_b: EmulatorProcess

    @property
    def emulators(self) -> dict[str, EmulatorProcess]:
        return {"host-a": self.stack.emulator, "host-b": self.emu_b}

    def gateway(self, host: str, start: bool = True) -> GatewayProcess:
        env = dict(FAST, GATEWAY_HOST_NAME=host)
        if host == "host-b":
            env["TELEGRAM_API_URL"] = self.emu_b.api_url
        return self.stack.add_gateway(workers=1, start=start, **env)

    def owners(self) -> dict[int, str]:
        """bot -> the host of its owner (bots nobody owns are left out)."""
        return {
            bot: host_of(str(record.get("worker", "")))
            for bot, record in self.stack.leases().items()
            if record.get("state") == "polling"
        }

    def launched(self, host: str) -> set[int]:
        """The bots whose instance runs on the host's server."""
        return {b["id"] for b in self.emulators[host].bots() if b.get("launched")}

    def inject(self, host: str, bot: int, count: int, tag: str) -> list[int]:
        result = self.emulators[host].inject(
            bot, [private_message(CHAT, f"{tag}-{i}", i + 1) for i in range(count)]
        )
        return list(range(result["first_update_id"], result["last_update_id"] + 1))

    def stored(self) -> Counter[str]:
        """Nats-Msg-Id -> how often the stream holds it."""
        return Counter(m.headers["Nats-Msg-Id"] for m in self.stack.read_stream())


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    with Stack(tmp_path, BOTS, gateway=False, chats=[{"id": CHAT, "type": "private"}]) as stack:
        emu_b = EmulatorProcess(tmp_path / "emulator-b", bots=list(stack.tokens.values()))
        emu_b.start()
        try:
            for bot in BOTS:
                emu_b.add_chats(bot, [{"id": CHAT, "type": "private"}])
            yield Hosts(stack, emu_b)
        finally:
            emu_b.stop()


def kill9(gateway: GatewayProcess) -> None:
    """kill -9 of the arbiter and its workers (a host that dies)."""
    assert gateway.proc is not None
    pids = [gateway.proc.pid, *gateway.worker_pids()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    gateway.proc.wait(10)
    gateway.proc = None
    time.sleep(0.2)


def ids(expected: dict[str, list[int]], bot: int) -> set[str]:
    return {f"{bot}:{uid}@{host}" for host, uids in expected.items() for uid in uids}


def test_bots_spread_over_hosts_each_polled_and_sent_through_its_owner(hosts: Hosts) -> None:
    hosts.gateway("host-a")
    hosts.gateway("host-b")
    wait_until(
        lambda: (
            len(hosts.owners()) == len(BOTS)
            and set(hosts.owners().values())
            == {
                "host-a",
                "host-b",
            }
        ),
        30,
        "every bot polled, on both hosts",
    )
    owners = hosts.owners()
    # a bot's instance runs on its owner's server only (the probe and the other host leave it)
    time.sleep(2)  # two probe intervals: no probe may launch one elsewhere
    for host in ("host-a", "host-b"):
        assert hosts.launched(host) == {b for b, h in owners.items() if h == host}, host
    expected = {bot: {owners[bot]: hosts.inject(owners[bot], bot, 3, "m")} for bot in BOTS}
    want = set().union(*(ids(expected[bot], bot) for bot in BOTS))
    wait_until(lambda: set(hosts.stored()) >= want, 20, "every update in the stream")
    assert hosts.stored() == Counter(dict.fromkeys(want, 1))
    # /send on either host goes out through the owner's server
    for gateway in hosts.stack.gateways:
        for bot in BOTS:
            status, answer, _ = gateway.request(
                "POST",
                "/send",
                {"bot": bot, "chat_id": CHAT, "text": f"via {gateway.url}"},
                headers={"Authorization": f"Bearer {hosts.stack.api_token}"},
                timeout=30,
            )
            assert status == 200, answer
    # ... and so do NATS requests, whichever host's worker the queue group hands them to
    for bot in BOTS:
        for i in range(3):
            params = {"chat_id": CHAT, "text": f"nats {i}"}
            reply = hosts.stack.request(f"telegram.out.{bot}.sendMessage", params, timeout=30)
            assert reply.get("ok") is True, reply
    for bot in BOTS:
        for host, emulator in hosts.emulators.items():
            texts = [r["result"].get("text") for r in emulator.sent(bot, chat_id=CHAT)]
            assert len(texts) == (2 + 3 if host == owners[bot] else 0), (bot, host, texts)


def test_a_host_that_dies_is_replaced_and_its_server_drained_when_it_returns(
    hosts: Hosts,
) -> None:
    gateway_a = hosts.gateway("host-a")
    wait_until(lambda: len(hosts.owners()) == len(BOTS), 30, "host-a polls every bot")
    hosts.gateway("host-b")
    wait_until(
        lambda: set(hosts.owners().values()) == {"host-a", "host-b"}, 60, "bots on both hosts"
    )
    bot = next(b for b, h in hosts.owners().items() if h == "host-a")
    expected: dict[str, list[int]] = {"host-a": hosts.inject("host-a", bot, 20, "before")}
    wait_until(lambda: set(hosts.stored()) >= ids(expected, bot), 20, "the first 20 stored")
    # the host dies; its server had accepted 10 more updates that its gateway never fetched
    died = time.monotonic()
    kill9(gateway_a)
    expected["host-a"] += hosts.inject("host-a", bot, 10, "queued")
    hosts.stack.emulator.stop()
    wait_until(lambda: hosts.owners().get(bot) == "host-b", 15, "host-b polls the bot")
    took = time.monotonic() - died
    print(f"\nHOST DIED: host-b polls bot {bot} {took:.1f} s after host-a died")
    assert took <= 10
    expected["host-b"] = hosts.inject("host-b", bot, 10, "after")  # Telegram's live instance
    wait_until(lambda: set(hosts.stored()) >= ids(expected, bot) - queued(expected, bot), 20, "B")
    assert not queued(expected, bot) & set(hosts.stored())  # still in host-a's server only
    # the host comes back with the queue its server kept: drained into the stream, and the
    # instance closed wherever the bot is not polled
    hosts.stack.emulator.start()
    gateway_a.start(timeout=30)
    wait_until(lambda: set(hosts.stored()) >= ids(expected, bot), 30, "host-a's queue drained")
    wait_until(lambda: only_where_polled(hosts, bot), 30, "one instance, the owner's")
    mine = {msg_id: n for msg_id, n in hosts.stored().items() if msg_id.startswith(f"{bot}:")}
    assert mine == dict.fromkeys(ids(expected, bot), 1)  # 0 lost, 0 doubled


def queued(expected: dict[str, list[int]], bot: int) -> set[str]:
    return ids({"host-a": expected["host-a"][20:]}, bot)


def only_where_polled(hosts: Hosts, bot: int) -> bool:
    """The bot's instance runs on its owner's host only, and only that host has its key."""
    owner = hosts.owners().get(bot)
    if owner is None:
        return False
    running = {host for host in hosts.emulators if bot in hosts.launched(host)}
    keys = {k for k in hosts.stack.kv_keys("TELEGRAM_OWNERS") if k.startswith(f"instances.{bot}.")}
    return running == {owner} and keys == {f"instances.{bot}.{owner}"}


def test_a_bot_moved_to_a_new_host_is_drained_while_close_is_refused(hosts: Hosts) -> None:
    hosts.stack.emulator.control("POST", "/uptime", {"seconds": 3600})  # close: 429 for 10 min
    hosts.gateway("host-a")
    wait_until(lambda: len(hosts.owners()) == len(BOTS), 30, "host-a polls every bot")
    expected: dict[int, dict[str, list[int]]] = {
        bot: {"host-a": hosts.inject("host-a", bot, 2, "a")} for bot in BOTS
    }
    hosts.gateway("host-b")  # joins: half the bots move to it
    wait_until(
        lambda: (
            sorted(Counter(hosts.owners().values()).values()) == [2, 2]
            and len(hosts.owners()) == len(BOTS)
        ),
        60,
        "two bots moved to host-b",
    )
    moved = [b for b, h in hosts.owners().items() if h == "host-b"]
    time.sleep(1)
    # Telegram still delivers some updates to host-a's instance (it cannot be closed yet)...
    for bot in moved:
        assert bot in hosts.launched("host-a")
        expected[bot]["host-a"] += hosts.inject("host-a", bot, 3, "late")
        expected[bot]["host-b"] = hosts.inject("host-b", bot, 3, "b")
    want = set().union(*(ids(expected[bot], bot) for bot in BOTS))
    wait_until(lambda: set(hosts.stored()) >= want, 30, "every update, the late ones drained")
    assert hosts.stored() == Counter(dict.fromkeys(want, 1))
    # ... and once the server allows it, the instance is closed and its key deleted
    hosts.stack.emulator.control("POST", "/uptime", {"seconds": 0})
    for bot in BOTS:
        wait_until(lambda bot=bot: only_where_polled(hosts, bot), 20, f"bot {bot}: one instance")


def test_workers_of_one_host_do_not_rewrite_each_others_instance_keys(hosts: Hosts) -> None:
    """Both workers of a host probe every bot polled on it; only a bot's owner names itself
    in the host's key, so an idle host writes no instance key again and again."""
    hosts.stack.add_gateway(workers=2, **dict(FAST, GATEWAY_HOST_NAME="host-a"))
    wait_until(lambda: len(hosts.owners()) == len(BOTS), 30, "every bot polled")
    time.sleep(3)  # the leases settle, every worker probes every bot (1 s interval)
    keys = {k: v for k, v in hosts.stack.kv_keys("TELEGRAM_OWNERS").items() if "instances" in k}
    assert set(keys) == {f"instances.{bot}.host-a" for bot in BOTS}
    time.sleep(4)  # four probe rounds
    after = {k: v for k, v in hosts.stack.kv_keys("TELEGRAM_OWNERS").items() if "instances" in k}
    assert after == keys
