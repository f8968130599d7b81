"""Inbound benchmark: Bot API emulator -> gateway (gunicorn + gevent) -> JetStream.

    .venv/bin/python tests/benchmarks/inbound_bench.py [--updates 50000] [--workers 2]

1. The emulator is preloaded with N generated updates for one bot; the gateway starts and
   polls them into JetStream. Throughput = N / (time of the last stored message - time of
   the first), both read from the stream (server clock); wall time from the gateway's start
   is printed as well.
2. A bare nats-py loop publishes the same payloads with the same headers into a stream with
   the same settings, the way the poller does (batches of the poll limit, publish_async, wait
   for every ack), without HTTP: the ceiling the gateway is compared with.
3. While the gateway runs: the polling worker's peak RSS (VmHWM) and /healthz latency
   (sampled every 20 ms from a separate thread, a new connection each time).

Targets: >= 10,000 updates/s, >= 0.5 x the bare loop, RSS <= 80 MB, /healthz < 50 ms.
Prints figures; exits 1 when a target is missed. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "gateway")]

import nats  # noqa: E402
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig  # noqa: E402

from harness.procs import wait_until  # noqa: E402
from harness.stack import HOST, NATS_USER, Stack  # noqa: E402

BOT_ID = 900000001
KINDS = ["message", "edited_message", "callback_query", "my_chat_member", "message_reaction"]
BATCH = 100


def stream_config(name: str, subjects: list[str]) -> StreamConfig:
    """What the gateway's bus creates (defaults: 7 days, 600 s duplicate window)."""
    return StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=7 * 86400,
        duplicate_window=600,
        num_replicas=1,
    )


async def stream_span(url: str, password: str, stream: str) -> tuple[int, float]:
    """(messages, seconds between the first and the last stored message)."""
    nc = await nats.connect(url, user=NATS_USER, password=password)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        if state.messages == 0:
            return 0, 0.0
        first = await js.get_msg(stream, state.first_seq)
        last = await js.get_msg(stream, state.last_seq)
        assert first.time is not None and last.time is not None
        return state.messages, (last.time - first.time).total_seconds()
    finally:
        await nc.close()


async def stream_count(url: str, password: str, stream: str) -> int:
    nc = await nats.connect(url, user=NATS_USER, password=password)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def bare_loop(url: str, password: str, updates: list[dict[str, Any]]) -> tuple[float, float]:
    """Same payloads and headers, batches of BATCH, publish_async + wait for every ack.
    Returns (wall seconds, seconds between first and last stored)."""
    nc = await nats.connect(url, user=NATS_USER, password=password)
    js = nc.jetstream()
    name = "BARE"
    await js.add_stream(stream_config(name, ["bare.in.>"]))
    messages = []
    for update in updates:
        kind = next(k for k in update if k != "update_id")
        headers = {
            "Nats-Msg-Id": f"{BOT_ID}:{update['update_id']}@{HOST}",
            "Telegram-Bot-Id": str(BOT_ID),
            "Telegram-Update-Id": str(update["update_id"]),
            "Telegram-Update-Type": kind,
            "Telegram-Bot-Api-Server": HOST,
        }
        payload = json.dumps(update, ensure_ascii=False, separators=(",", ":")).encode()
        messages.append((f"bare.in.{BOT_ID}.{kind}", payload, headers))
    started = time.perf_counter()
    for start in range(0, len(messages), BATCH):
        futures = [
            await js.publish_async(subject, payload, headers=headers)
            for subject, payload, headers in messages[start : start + BATCH]
        ]
        await asyncio.gather(*futures)
    wall = time.perf_counter() - started
    await nc.close()
    count, span = await stream_span(url, password, name)
    assert count == len(updates), count
    return wall, span


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=50_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    n = args.updates

    root = Path(tempfile.mkdtemp(prefix="inbound-bench-"))
    try:
        # the health probe at the gateway's default interval, not the tests' short one
        settings = {"GATEWAY_POLL_TIMEOUT": "5", "GATEWAY_HEALTH_PROBE_INTERVAL": "5"}
        with Stack(root, (BOT_ID,), gateway=False, env=settings, emulator_verbosity=1) as stack:
            return run(stack, n, args.workers)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept {root}")


def run(stack: Stack, n: int, workers: int) -> int:
    """Preload ``n`` updates, start a gateway with ``workers`` workers, measure; exit code."""
    emulator, nats_url, password = stack.emulator, stack.nats.url, stack.nats_password
    assert password is not None
    for _ in range(n // 10_000):
        emulator.generate(BOT_ID, 10_000, kinds=KINDS, unknown_field_ratio=0.1)
    if n % 10_000:
        emulator.generate(BOT_ID, n % 10_000, kinds=KINDS, unknown_field_ratio=0.1)
    served = emulator.updates(BOT_ID)["updates"]
    assert len(served) == n
    size = sum(len(json.dumps(u)) for u in served) / n
    print(f"preloaded {n:,} updates (mean {size:.0f} bytes of JSON)")

    gateway = stack.add_gateway(workers=workers, start=False)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status, _ = gateway.get("/healthz", timeout=5)
            except OSError:
                status = 0
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            stop.wait(0.02)

    started = time.perf_counter()
    gateway.start(wait_healthy=False, timeout=30)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def all_stored() -> bool:
        return asyncio.run(stream_count(nats_url, password, "TELEGRAM")) >= n

    # coarse polling (a new NATS connection each time costs CPU the gateway needs); the
    # rate comes from the stream's own timestamps, so this adds nothing to it
    wait_until(all_stored, 600, f"{n} updates in JetStream", interval=0.25)
    wall = time.perf_counter() - started
    stop.set()
    sampler.join(5)
    count, span = asyncio.run(stream_span(nats_url, password, "TELEGRAM"))
    assert count == n, count
    holder = stack.holder(gateway, BOT_ID)["pid"]  # the owner's record in its lease
    rss_mib = vm_hwm_kib(holder) / 1024
    others = [vm_hwm_kib(pid) / 1024 for pid in gateway.worker_pids() if pid != holder]
    # the owner's CPU minus a standby's (start-up, leases, /healthz): the cost of
    # the updates themselves, independent of what else runs on the machine
    standby = [cpu_seconds(pid) for pid in gateway.worker_pids() if pid != holder]
    cpu = cpu_seconds(holder) - (min(standby) if standby else 0.0)
    gateway_rate = n / span

    bare_wall, bare_span = asyncio.run(bare_loop(nats_url, password, served))
    bare_rate = n / bare_span
    ratio = gateway_rate / bare_rate

    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000
    worst = latencies[-1] * 1000

    print(
        f"gateway ({workers} gevent workers): {gateway_rate:,.0f} updates/s "
        f"(first to last stored {span:.2f} s; {wall:.2f} s wall incl. gunicorn start-up)"
    )
    print(f"bare nats-py loop:         {bare_rate:,.0f} updates/s ({bare_wall:.2f} s wall)")
    print(f"ratio gateway / bare:      {ratio:.2f}")
    print(
        f"polling worker CPU:        {cpu / n * 1e6:.0f} us per update "
        f"(one free core would carry about {n / cpu:,.0f} updates/s)"
    )
    print(
        f"polling worker peak RSS:   {rss_mib:.1f} MiB"
        + (f" (other workers {', '.join(f'{o:.1f}' for o in others)} MiB)" if others else "")
    )
    print(
        f"/healthz during the run:   n={len(latencies)} p50={p50:.1f} ms p99={p99:.1f} ms "
        f"max={worst:.1f} ms; statuses {statuses}"
    )
    missed = []
    if gateway_rate < 10_000:
        missed.append("throughput < 10,000 updates/s")
    if ratio < 0.5:
        missed.append("ratio < 0.5")
    if rss_mib > 80:
        missed.append("RSS > 80 MB")
    if p99 >= 50:
        missed.append("/healthz p99 >= 50 ms")
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
