#!/usr/bin/env python3
"""Benchmark of the Bot API emulator (a script that prints figures, not a test).

Two figures, each against a fresh emulator process on loopback:

* sendMessage calls/s: several keep-alive connections, flood limits disabled through the
  control API, clients in separate processes (raw asyncio HTTP/1.1, no library overhead);
* updates/s through getUpdates: preload N updates (control API ``generate``), then drain
  them like a poller does: ``limit=100`` and ``offset`` = last update_id + 1.

Targets on a 2-core machine: >= 3,000 sendMessage/s and >= 20,000 updates/s.

    .venv/bin/python tests/benchmarks/emulator_bench.py [--duration 5] [--connections 8]
        [--client-procs 2] [--updates 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.emulator import BotHandle, EmulatorProcess

SEND_TARGET = 3_000
UPDATES_TARGET = 20_000


class KeepAlive:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> KeepAlive:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        start = head.find(b"Content-Length: ") + 16
        length = int(head[start : head.find(b"\r\n", start)])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def post(path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def send_loop(port: int, token: str, chats: list[int], seconds: float) -> tuple[int, int]:
    client = await KeepAlive.open(port)
    requests = [
        post(f"/bot{token}/sendMessage", json.dumps({"chat_id": c, "text": f"bench {c}"}).encode())
        for c in chats
    ]
    ok = failed = 0
    deadline = time.monotonic() + seconds
    index = 0
    while time.monotonic() < deadline:
        status, _ = await client.request(requests[index % len(requests)])
        index += 1
        if status == 200:
            ok += 1
        else:
            failed += 1
    client.close()
    return ok, failed


def send_client_process(
    port: int, token: str, chats: list[int], connections: int, seconds: float, queue: object
) -> None:
    async def run() -> tuple[int, int]:
        results = await asyncio.gather(
            *(send_loop(port, token, chats[i::connections], seconds) for i in range(connections))
        )
        return sum(r[0] for r in results), sum(r[1] for r in results)

    queue.put(asyncio.run(run()))  # type: ignore[attr-defined]


def bench_send(emu: EmulatorProcess, seconds: float, connections: int, procs: int) -> float:
    bot = BotHandle.register(emu)
    chats = list(range(1_000_000, 1_000_512))
    emu.add_chats(bot.id, [{"id": c, "first_name": "Bench"} for c in chats])
    emu.set_limits(enabled=False)
    queue: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(
            target=send_client_process,
            args=(emu.port, bot.token, chats[i::procs], connections, seconds, queue),
        )
        for i in range(procs)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    totals = [queue.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - started
    ok = sum(t[0] for t in totals)
    failed = sum(t[1] for t in totals)
    recorded = len(emu.sent(bot.id))
    rate = ok / seconds
    print(
        f"sendMessage: {ok} ok, {failed} failed in {seconds:.1f} s "
        f"({procs} client processes x {connections} keep-alive connections) "
        f"-> {rate:,.0f} calls/s (wall {elapsed:.1f} s; {recorded} recorded)"
    )
    return rate


async def drain(port: int, token: str, expected: int) -> tuple[int, float, int]:
    client = await KeepAlive.open(port)
    offset = 0
    received = requests = 0
    started = time.monotonic()
    while received < expected:
        body = json.dumps({"offset": offset, "limit": 100, "timeout": 0}).encode()
        status, data = await client.request(post(f"/bot{token}/getUpdates", body))
        requests += 1
        updates = json.loads(data)["result"]
        if status != 200 or not updates:
            break
        received += len(updates)
        offset = updates[-1]["update_id"] + 1
    elapsed = time.monotonic() - started
    await client.request(post(f"/bot{token}/getUpdates", json.dumps({"offset": offset}).encode()))
    client.close()
    return received, elapsed, requests


def bench_updates(emu: EmulatorProcess, count: int) -> float:
    bot = BotHandle.register(emu)
    started = time.monotonic()
    generated = 0
    while generated < count:
        batch = min(50_000, count - generated)
        emu.generate(bot.id, batch, kinds=["message", "callback_query"], seed=generated)
        generated += batch
    injected = time.monotonic() - started
    received, elapsed, requests = asyncio.run(drain(emu.port, bot.token, count))
    pending = emu.stats()["pending"][str(bot.id)]
    rate = received / elapsed
    print(
        f"getUpdates: preloaded {count:,} updates in {injected:.2f} s "
        f"({count / injected:,.0f}/s injected); drained {received:,} in {elapsed:.2f} s "
        f"with {requests} calls of limit=100 -> {rate:,.0f} updates/s ({pending} pending after)"
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="sendMessage seconds")
    parser.add_argument("--connections", type=int, default=8, help="per client process")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--updates", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with EmulatorProcess(Path(tmp) / "send", verbosity=1) as emu:
            send_rate = bench_send(emu, args.duration, args.connections, args.client_procs)
        with EmulatorProcess(Path(tmp) / "updates", verbosity=1) as emu:
            update_rate = bench_updates(emu, args.updates)
    verdict_send = "OK" if send_rate >= SEND_TARGET else "BELOW TARGET"
    verdict_updates = "OK" if update_rate >= UPDATES_TARGET else "BELOW TARGET"
    print(f"target sendMessage >= {SEND_TARGET:,}/s: {verdict_send}")
    print(f"target getUpdates >= {UPDATES_TARGET:,} updates/s: {verdict_updates}")
    return 0 if verdict_send == verdict_updates == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
