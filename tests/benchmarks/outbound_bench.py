"""Outbound benchmarks: prints figures, asserts nothing.

    .venv/bin/python tests/benchmarks/outbound_bench.py            # both parts
    .venv/bin/python tests/benchmarks/outbound_bench.py pacing     # the 1,000-message burst
    .venv/bin/python tests/benchmarks/outbound_bench.py overhead   # /send vs the Bot API

1. Pacing efficiency: 1,000 messages to 100 private chats and 2 groups through ``/send`` and
   NATS at once (one lane per chat, each lane waiting for its answers, alternating the two
   paths), two gunicorn workers, the emulator enforcing Telegram's limits. Figures: total
   time, the theoretical minimum (1,000 messages at Telegram's 30 per second), their ratio
   (target <= 1.05) and how many 429s the emulator answered (target 0).

2. Overhead: pacing off in the gateway (``GATEWAY_SEND_PACING=false``) and the emulator's
   limits off (its control API), one asyncio HTTP/1.1 keep-alive client calling (a) the
   emulator's ``sendMessage`` directly and (b) the gateway's ``POST /send`` -- same client,
   same run. Figures: requests per second at a given concurrency and p50/p99 latency of one
   request at a time, for both; the gateway's p50 overhead over the direct call (target
   <= 2 ms) and its throughput as a ratio of the direct Bot API's in the same run (target
   >= 0.12; 0.18-0.20 with the hand-written HTTP server and client this replaced). Telegram
   lets a bot send about 30 messages a second, so an absolute req/s is no target: the ratio
   guards against the gateway becoming much slower relative to the Bot API on the same host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "gateway"), str(HERE.parent), str(HERE.parents[1] / "gateway")]

from outbound_fixtures import BOT, PRIVATE, Burst, burst_plan, outbound_stack  # noqa: E402


# ---- part 1 -----------------------------------------------------------------------------------
def pacing(root: Path, workers: int) -> None:
    print(f"== pacing efficiency: 1,000 messages, 100 private chats + 2 groups, {workers} workers")
    with outbound_stack(root / "pacing", workers=workers) as stack:
        burst = Burst(stack, burst_plan(1000))
        took = burst.run()
        minimum = burst.total / 30
        problems = burst.check_delivery()
        latencies = sorted(burst.latencies)
        print(f"total time                 {took:8.2f} s")
        print(f"theoretical minimum        {minimum:8.2f} s   (1,000 messages at 30/s)")
        print(f"ratio                      {took / minimum:8.3f}     (target <= 1.05)")
        stats = stack.emulator.stats()
        print(
            f"429 from the emulator      {stats['flood_429']:8d}     (target 0; by limit: "
            f"{stats['flood_429_by_limit'] or '-'})"
        )
        print(f"failed requests            {len(burst.failures):8d}")
        print(f"delivery problems          {len(problems):8d}     (exactly once, per-chat order)")
        print(
            f"per-message latency        p50 {_q(latencies, 0.5) * 1000:.0f} ms, "
            f"p99 {_q(latencies, 0.99) * 1000:.0f} ms (includes waiting for the chat's turn)"
        )


# ---- part 2 -----------------------------------------------------------------------------------
class Client:
    """A minimal HTTP/1.1 client: ``connections`` keep-alive connections, each sending one
    POST after the other; per-request latency recorded."""

    def __init__(self, host: str, port: int, connections: int) -> None:
        self.host, self.port, self.connections = host, port, connections

    async def run(self, requests: list[bytes]) -> tuple[float, list[float], int]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for request in requests:
            queue.put_nowait(request)
        latencies: list[float] = []
        errors = 0

        async def worker() -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection(self.host, self.port)
            try:
                while True:
                    try:
                        request = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    began = time.perf_counter()
                    writer.write(request)
                    status = await _read_response(reader)
                    latencies.append(time.perf_counter() - began)
                    if status != 200:
                        errors += 1
            finally:
                writer.close()

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(self.connections)))
        return time.perf_counter() - began, latencies, errors


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def _post(host: str, port: int, path: str, body: dict, headers: dict[str, str]) -> bytes:
    data = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(data)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def overhead(root: Path, workers: int, count: int, concurrency: int, sequential: int) -> None:
    print(
        f"== overhead: pacing off, emulator limits off, {workers} gateway workers, "
        f"{os.cpu_count()} CPUs (client, emulator and gateway share them)"
    )
    with outbound_stack(root / "overhead", workers=workers, pacing=False) as stack:
        stack.emulator.set_limits(enabled=False)
        token = stack.tokens[BOT]
        targets = {
            "Bot API directly": (
                stack.emulator.port,
                lambda i: _post(
                    "127.0.0.1",
                    stack.emulator.port,
                    f"/bot{token}/sendMessage",
                    {"chat_id": PRIVATE[i % 100], "text": f"bench {i}"},
                    {},
                ),
            ),
            "gateway POST /send": (
                stack.gateway.port,
                lambda i: _post(
                    "127.0.0.1",
                    stack.gateway.port,
                    "/send",
                    {"bot": BOT, "chat_id": PRIVATE[i % 100], "text": f"bench {i}"},
                    {"Authorization": f"Bearer {stack.api_token}"},
                ),
            ),
        }
        figures: dict[str, dict[str, float]] = {}
        processes = {
            "gateway workers": stack.gateway.worker_pids(),
            "emulator": [stack.emulator.pid],
            "client": [os.getpid()],
        }
        for name, (port, make) in targets.items():
            client = Client("127.0.0.1", port, concurrency)
            asyncio.run(client.run([make(i) for i in range(500)]))  # warm-up
            requests = [make(i) for i in range(count)]
            cpu_before = {k: _cpu_seconds(v) for k, v in processes.items()}
            took, _, errors = asyncio.run(client.run(requests))
            cpu = {
                k: (_cpu_seconds(v) - cpu_before[k]) / count * 1000 for k, v in processes.items()
            }
            print(
                f"{name:22} CPU per request: "
                + ", ".join(f"{k} {v:.2f} ms" for k, v in cpu.items() if v > 0.005)
            )
            single = Client("127.0.0.1", port, 1)
            _, latencies, errors_1 = asyncio.run(single.run([make(i) for i in range(sequential)]))
            latencies.sort()
            figures[name] = {
                "rps": count / took,
                "p50": _q(latencies, 0.5) * 1000,
                "p99": _q(latencies, 0.99) * 1000,
                "mean": statistics.fmean(latencies) * 1000,
                "errors": errors + errors_1,
            }
        print(
            f"{'':22} {'req/s @' + str(concurrency):>12} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'mean ms':>8} {'errors':>7}"
        )
        for name, f in figures.items():
            print(
                f"{name:22} {f['rps']:12.0f} {f['p50']:8.2f} {f['p99']:8.2f} "
                f"{f['mean']:8.2f} {f['errors']:7.0f}"
            )
        direct, gateway = figures["Bot API directly"], figures["gateway POST /send"]
        overhead_p50 = gateway["p50"] - direct["p50"]
        ratio = gateway["rps"] / direct["rps"]
        print(
            f"/send p50 overhead         +{overhead_p50:.2f} ms (p99 "
            f"+{gateway['p99'] - direct['p99']:.2f} ms; one request at a time)   "
            f"target <= 2 ms: {'met' if overhead_p50 <= 2 else 'MISSED'}"
        )
        print(
            f"/send throughput ratio     {ratio:.3f} ({gateway['rps']:.0f} / "
            f"{direct['rps']:.0f} req/s @{concurrency})   "
            f"target >= 0.12: {'met' if ratio >= 0.12 else 'MISSED'}"
        )


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (Linux /proc)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", nargs="?", choices=("pacing", "overhead", "all"), default="all")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--requests", type=int, default=10000, help="overhead: requests")
    parser.add_argument("--concurrency", type=int, default=64, help="overhead: connections")
    parser.add_argument("--sequential", type=int, default=2000, help="latency sample size")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outbound-bench-") as tmp:
        root = Path(tmp)
        if args.part in ("pacing", "all"):
            pacing(root, args.workers)
        if args.part in ("overhead", "all"):
            overhead(root, args.workers, args.requests, args.concurrency, args.sequential)


if __name__ == "__main__":
    main()
