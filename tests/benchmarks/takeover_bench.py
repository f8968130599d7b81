"""Takeover after kill -9: prints figures, asserts nothing.

    .venv/bin/python tests/benchmarks/takeover_bench.py [--rounds 5] [--workers 2]

One bot, a gateway with two gevent workers, updates flowing (the emulator generates them).
Each round kills the worker that owns the bot (its lease in TELEGRAM_OWNERS) with SIGKILL and
measures how long until another worker's record says it polls, and how long until every
update of the round (2,000 before the kill, 100 right after it) is in JetStream. gunicorn
starts a replacement worker, so every round has two workers again. At the end: every update
stored exactly once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "gateway")]

from harness.procs import alive, kill9, wait_until  # noqa: E402
from harness.stack import Stack  # noqa: E402

BOT_ID = 940000001


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="takeover-bench-"))
    with Stack(root, (BOT_ID,), gateway=False, env={}, emulator_verbosity=1) as stack:
        gateway = stack.add_gateway(workers=args.workers)
        gateway.wait_healthy(30)
        polled, delivered = [], []
        total = 0
        for round_ in range(args.rounds):
            wait_until(
                lambda: (
                    stack.holder(gateway, BOT_ID).get("state") == "polling"
                    and len(gateway.worker_pids()) == args.workers
                ),
                30,
                "an owner polling and every worker up",
            )
            victim = stack.holder(gateway, BOT_ID)["pid"]
            stack.emulator.generate(BOT_ID, 2000, kinds=stack.kinds, seed=round_)
            total += 2000
            time.sleep(0.5)  # updates flowing when the owner dies
            kill9(victim)
            killed = time.monotonic()
            stack.emulator.generate(BOT_ID, 100, kinds=stack.kinds, seed=1000 + round_)
            total += 100

            def taken_over(victim: int = victim) -> bool:
                record = stack.holder(gateway, BOT_ID)
                pid = record.get("pid")
                return pid not in (None, victim) and alive(pid) and record["state"] == "polling"

            wait_until(taken_over, 30, "another worker polls", interval=0.02)
            polled.append(time.monotonic() - killed)
            wait_until(
                lambda total=total: stack.stream_count() >= total, 60, "the round's updates", 0.05
            )
            delivered.append(time.monotonic() - killed)
            print(
                f"round {round_ + 1}: killed worker {victim}; another polls after "
                f"{polled[-1]:.2f} s, every update of the round stored after {delivered[-1]:.2f} s"
            )
        stack.wait_confirmed(BOT_ID, 120)
        stored = stack.read_stream()
        stack.check_exactly_once(stored, (BOT_ID,))
        print(
            f"takeover after kill -9 (GATEWAY_LEASE_TTL 3 s), {args.rounds} rounds: polling again "
            f"median {statistics.median(polled):.2f} s, max {max(polled):.2f} s; the round's "
            f"updates stored median {statistics.median(delivered):.2f} s, "
            f"max {max(delivered):.2f} s"
        )
        print(f"stream: {len(stored)} of {total} updates, each exactly once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
