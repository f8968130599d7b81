"""Fixtures for the gateway's inbound integration and fault tests.

``stack`` is the harness's :class:`~harness.stack.Stack` with two bots and no gateway yet:
real nats-server (with a user and password) and the Bot API emulator; each test starts its
gateway(s) with ``stack.add_gateway(...)`` (DEBUG logging, short poll timeout and retry
intervals) and every process is stopped at the end of the test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.stack import Stack

BOT_IDS = (700000001, 700000002)
# fast enough to see failures and recoveries within a test's bounds
INBOUND_SETTINGS = {
    "GATEWAY_LOG_LEVEL": "DEBUG",
    "GATEWAY_PUBLISH_TIMEOUT": "2",
}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path, BOT_IDS, gateway=False, env=INBOUND_SETTINGS) as the_stack:
        yield the_stack
