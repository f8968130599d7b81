"""The Bot API client under gevent's monkey-patching, as in a gunicorn gevent worker: in a
Python subprocess of its own, so the patching stays out of the test process (integration,
not unit: it starts a process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


TRICKLE = """
from gevent import monkey

monkey.patch_all()
import socket, sys, threading, time
from telegram_gateway.botapi import BotApi
from telegram_gateway.errors import BotApiTimeout

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(1)

def serve():
    conn, _ = listener.accept()
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 1000\\r\\n\\r\\n")
    for _ in range(100):  # one byte every 0.1 s: no single read ever waits 1 s
        conn.sendall(b" ")
        time.sleep(0.1)

threading.Thread(target=serve, daemon=True).start()
started = time.monotonic()
try:
    BotApi(f"http://127.0.0.1:{listener.getsockname()[1]}").post("1:x", "getMe", {}, None, 1.0)
except BotApiTimeout as exc:
    print(f"timeout after {time.monotonic() - started:.2f} s: {exc}")
"""


def test_under_gevent_a_trickling_server_cannot_hold_a_call_past_its_bound():
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRICKLE)],
        env={"PYTHONPATH": str(GATEWAY)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("timeout after "), done.stdout + done.stderr
    took = float(done.stdout.split()[2])
    assert 1.0 <= took < 1.5
