"""The README's first command, ``bash .ci/demo``, really brings the stack up and shows it."""

from __future__ import annotations

import subprocess

import pytest

from harness.gateway import REPO

pytestmark = pytest.mark.integration


def test_demo_walkthrough_succeeds():
    done = subprocess.run(
        ["bash", str(REPO / ".ci" / "demo"), "--once"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert '"status": "ok"' in out
    assert "telegram.in.7000000001.message" in out
    assert "reply through POST /send (HTTP 200)" in out
    assert '"Hello from the gateway!",\n  "And hello over NATS."' in out
    assert '"bucket": "TELEGRAM_FILES"' in out
    assert "% a document the user sent" in out
    assert out.rstrip().endswith("demo: everything works")
