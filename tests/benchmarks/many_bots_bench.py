"""Many bots on one host: N bots in the emulator (most idle, a few busy) behind one gateway.

    .venv/bin/python tests/benchmarks/many_bots_bench.py [--bots 1000] [--busy 5] [--workers 2]

1. Start nats-server, the emulator with N bots and the gateway (default settings; the poll
   timeout is the default 50 s unless ``--poll-timeout`` says otherwise: let ``--idle`` span
   a few poll timeouts, since every bot's long poll restarts after the injected update).
2. Every bot polled: one update injected for every bot; each must reach JetStream. The time
   from the injection to its arrival on ``telegram.in.<bot>.>`` (a core subscription sees a
   JetStream message when the stream stores it) gives the latency figures (target: every
   update within 1 s).
3. Idle: no traffic for ``--idle`` seconds; the CPU of the gateway (arbiter + workers) over
   that time as a share of one core (target <= 5 %); then ``/healthz`` 100 times, 100 ms
   apart (target < 100 ms), and each worker's RSS (target <= 150 MB).
4. Busy: ``--busy`` bots get ``--rate`` updates/s each for ``--idle`` seconds; the gateway's
   CPU and the latency of every update again.

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

from harness.emulator import private_message  # noqa: E402
from harness.procs import wait_until  # noqa: E402
from harness.stack import NATS_USER, Stack  # noqa: E402

FIRST_BOT = 930000001


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Arrivals:
    """A core subscription on telegram.in.> in a thread: arrival time per (bot, text)."""

    def __init__(self, url: str, password: str | None) -> None:
        self.url, self.password = url, password
        self.seen: dict[tuple[int, str], float] = {}
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self.main()), daemon=True)

    async def main(self) -> None:
        nc = await nats.connect(self.url, user=NATS_USER, password=self.password)

        async def on_message(msg: Any) -> None:
            now = time.time()
            update = json.loads(msg.data)
            text = update.get("message", {}).get("text", "")
            self.seen.setdefault((int(msg.subject.split(".")[2]), text), now)

        await nc.subscribe("telegram.in.>", cb=on_message)
        await nc.flush()
        self.ready.set()
        while not self.stop.is_set():
            await asyncio.sleep(0.1)
        await nc.close()

    def __enter__(self) -> Arrivals:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[max(int(len(ordered) * 0.99) - 1, 0)]
    return (
        f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {ordered[-1] * 1000:.0f} ms"
    )


def gateway_pids(gateway: Any) -> list[int]:
    assert gateway.proc is not None
    return [gateway.proc.pid, *gateway.worker_pids()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--busy", type=int, default=5)
    parser.add_argument("--rate", type=float, default=10.0, help="updates/s per busy bot")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of each phase")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--poll-timeout",
        type=int,
        default=50,
        help="GATEWAY_POLL_TIMEOUT (default 50, the gateway's default and the maximum)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="many-bots-bench-"))
    bots = [FIRST_BOT + i for i in range(args.bots)]
    settings = {
        "GATEWAY_HEALTH_PROBE_INTERVAL": "5",
        "GATEWAY_POLL_TIMEOUT": str(args.poll_timeout),
    }
    try:
        with Stack(root, bots, gateway=False, env=settings, emulator_verbosity=1) as stack:
            return run(stack, bots, args)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def inject_all(stack: Stack, bots: list[int], text: str) -> dict[int, float]:
    sent: dict[int, float] = {}
    for bot in bots:
        sent[bot] = time.time()
        stack.emulator.inject(bot, [private_message(100 + bot % 1000, text)])
    return sent


def run(stack: Stack, bots: list[int], args: argparse.Namespace) -> int:
    missed: list[str] = []
    started = time.monotonic()
    gateway = stack.add_gateway(workers=args.workers, start=False)
    gateway.start(wait_healthy=False, timeout=60)
    with Arrivals(stack.nats.url, stack.nats_password) as arrivals:
        # 2. every bot polled: one update each
        sent = inject_all(stack, bots, "hello")
        wait_until(
            lambda: all((bot, "hello") in arrivals.seen for bot in bots),
            180,
            "an update of every bot in JetStream",
            interval=0.5,
        )
        print(
            f"{len(bots)} bots, {args.workers} workers: every bot polled "
            f"{time.monotonic() - started:.1f} s after the gateway's start"
        )
        leases = stack.leases()
        owners: dict[str, int] = {}
        for record in leases.values():
            owners[str(record.get("worker"))] = owners.get(str(record.get("worker")), 0) + 1
        polling = sum(1 for record in leases.values() if record.get("state") == "polling")
        print(
            f"leases in TELEGRAM_OWNERS: {len(leases)} of {len(bots)} bots owned, {polling} "
            f"polling; bots per worker: {sorted(owners.values())}"
        )
        if len(leases) != len(bots) or polling != len(bots):
            missed.append("not every bot owned and polling")
        # the first injection includes start-up: measure the steady state with a second round
        sent = inject_all(stack, bots, "again")
        wait_until(lambda: all((b, "again") in arrivals.seen for b in bots), 60, "round 2")
        delays = [arrivals.seen[(bot, "again")] - sent[bot] for bot in bots]
        late = sum(1 for delay in delays if delay > 1.0)
        print(f"update -> JetStream, one per bot: {percentiles(delays)}; over 1 s: {late}")
        if late:
            missed.append(f"{late} updates took more than 1 s")

        # 3. idle: nothing at all, then /healthz sampled (its own cost is not idle CPU)
        time.sleep(2)
        pids = gateway_pids(gateway)
        cpu0, t0 = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (sum(cpu_seconds(pid) for pid in pids) - cpu0) / (time.monotonic() - t0)
        health: list[float] = []
        statuses: dict[int, int] = {}
        for _ in range(100):
            begin = time.perf_counter()
            status, _ = gateway.get("/healthz", timeout=5)
            health.append(time.perf_counter() - begin)
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(0.1)
        rss = [rss_mib(pid) for pid in gateway.worker_pids()]
        print(f"idle: gateway CPU {idle_cpu * 100:.1f} % of one core (arbiter + workers)")
        print(f"worker RSS: {', '.join(f'{value:.0f}' for value in rss)} MiB")
        print(f"/healthz (idle host): {percentiles(health)}; statuses {statuses}")
        if idle_cpu > 0.05:
            missed.append("idle CPU > 5 %")
        if max(rss) > 150:
            missed.append("RSS > 150 MB")
        if max(health) >= 0.1:
            missed.append("/healthz >= 100 ms")

        # 4. busy bots
        busy = bots[: args.busy]
        stamps: dict[tuple[int, str], float] = {}
        cpu0, t0 = sum(cpu_seconds(pid) for pid in pids), time.monotonic()
        tick = 0
        while time.monotonic() - t0 < args.idle:
            for bot in busy:
                text = f"busy {tick}"
                stamps[(bot, text)] = time.time()
                stack.emulator.inject(bot, [private_message(200 + bot % 1000, text)])
            tick += 1
            time.sleep(max(0.0, t0 + tick / args.rate - time.monotonic()))
        busy_cpu = (sum(cpu_seconds(pid) for pid in pids) - cpu0) / (time.monotonic() - t0)
        wait_until(lambda: all(key in arrivals.seen for key in stamps), 30, "busy updates")
        delays = [arrivals.seen[key] - at for key, at in stamps.items()]
        late = sum(1 for delay in delays if delay > 1.0)
        print(
            f"busy: {len(busy)} bots x {args.rate:g} updates/s: gateway CPU "
            f"{busy_cpu * 100:.1f} % of one core; update -> JetStream {percentiles(delays)}; "
            f"over 1 s: {late} of {len(delays)}"
        )
        if late:
            missed.append(f"{late} busy updates took more than 1 s")
    print("targets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
