"""``systemctl status`` and the watchdog: what the gateway's arbiter tells systemd.

Unit: the summary line made of /healthz checks, the notifier's messages (WATCHDOG=1 only when
a worker answered), the interval from $WATCHDOG_USEC. Integration: a real gunicorn gateway
with a datagram socket standing in for systemd's $NOTIFY_SOCKET -- READY=1, the summary, the
pings; all workers stopped (SIGSTOP): the pings stop, the status says so; resumed: they
come back; NATS down: the status names it and the pings go on (the gateway still answers).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from harness.procs import wait_until
from harness.stack import Stack
from telegram_gateway.systemd_status import StatusNotifier, interval_from_environment, summary

BOT = 810000101

HEALTHY = {
    "status": "ok",
    "checks": {
        "nats": {"ok": True, "reason": "connected, stream TELEGRAM ready"},
        "telegram_api:1": {"ok": True, "reason": "getMe ok"},
        "telegram_api:2": {"ok": True, "reason": "getMe ok"},
        "poller:1": {"ok": True, "reason": "polling"},
        "poller:2": {"ok": True, "reason": "polling"},
    },
}


@pytest.mark.unit
def test_summary_counts_bots_polled_nats_and_failing_checks():
    assert summary(HEALTHY) == "2/2 bots polled, NATS connected, 0 failing"
    body = {"checks": {**HEALTHY["checks"]}}
    body["checks"]["poller:2"] = {"ok": False, "reason": "409 Conflict: another poller"}
    body["checks"]["nats"] = {"ok": False, "reason": "disconnected"}
    assert summary(body) == ("1/2 bots polled, NATS disconnected, 2 failing (nats: disconnected)")
    assert summary({}) == "0/0 bots polled, NATS unknown, 0 failing"


@pytest.mark.unit
def test_the_watchdog_is_fed_only_when_a_worker_answered():
    sent: list[str] = []
    answers = iter([summary(HEALTHY), None, summary(HEALTHY)])
    notifier = StatusNotifier(
        "http://127.0.0.1:1/healthz", 5.0, sent.append, lambda _: None, lambda *_: next(answers)
    )
    assert [notifier.tick() for _ in range(3)] == [True, False, True]
    assert sent == [
        "WATCHDOG=1\nSTATUS=2/2 bots polled, NATS connected, 0 failing",
        "STATUS=workers not answering /healthz",
        "WATCHDOG=1\nSTATUS=2/2 bots polled, NATS connected, 0 failing",
    ]


@pytest.mark.unit
def test_interval_is_a_quarter_of_the_watchdog_timeout():
    assert interval_from_environment({"WATCHDOG_USEC": "20000000"}) == 5.0
    assert interval_from_environment({}) == 10.0
    other = {"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert interval_from_environment(other) == 10.0  # meant for another process


class FakeSystemd:
    """A datagram socket at $NOTIFY_SOCKET, as systemd listens on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def read(self, seconds: float) -> list[str]:
        """Messages that arrive within ``seconds``."""
        got: list[str] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.append(data)
            got.append(data)
        return got


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


@pytest.mark.integration
def test_systemd_sees_the_summary_and_pings_stop_when_workers_stall(tmp_path):
    systemd = FakeSystemd(tmp_path / "notify.sock")
    with Stack(tmp_path / "stack", {BOT: None}, gateway=False) as stack:
        gateway = stack.add_gateway(NOTIFY_SOCKET=str(systemd.path), WATCHDOG_USEC="2000000")
        assert gateway.proc is not None
        wait_until(
            lambda: any(
                "STATUS=1/1 bots polled, NATS connected, 0 failing" in m for m in systemd.read(0.5)
            ),
            20,
            "the healthy summary",
        )
        assert any(m.startswith("READY=1") for m in systemd.messages)
        pings = [m for m in systemd.read(2.0) if m.startswith("WATCHDOG=1")]
        assert len(pings) >= 3, systemd.messages[-6:]  # every 0.5 s

        workers = worker_pids(gateway.proc.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        try:
            systemd.read(1.0)  # a probe already under way may still have been answered
            stalled = systemd.read(3.0)
        finally:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        assert stalled and not any(m.startswith("WATCHDOG=1") for m in stalled), stalled
        assert "STATUS=workers not answering /healthz" in stalled
        resumed = systemd.read(3.0)
        assert any(m.startswith("WATCHDOG=1") for m in resumed), resumed

        stack.nats.stop()
        wait_until(
            lambda: any("NATS connected" not in m and "WATCHDOG=1" in m for m in systemd.read(0.5)),
            20,
            "a summary without NATS, with pings",
        )
