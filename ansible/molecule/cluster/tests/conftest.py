"""Fixtures of the cluster scenario's verify step (pytest-testinfra, run by Molecule).

The tests act on the cluster as a whole: `node(name)` runs probe.py's probe_<name> inside one
node's container (`docker exec`, the gateway's interpreter, parameters on stdin), and the
failover test runs `docker kill` / `docker start` here, on the controller. The fake secrets are
the files the converge generated in Molecule's ephemeral directory (molecule.yml).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from verify_support import PYTHON as PYTHON  # for test_cluster's docker exec
from verify_support import copy_probe_files, read_secrets, run_probe

NODES = ("tgw-cluster-1", "tgw-cluster-2", "tgw-cluster-3")  # molecule.yml's platforms
BOT_IDS = (7000000011, 7000000012, 7000000013)  # molecule.yml: tgw_bot_ids
HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    return read_secrets()


@pytest.fixture(scope="session")
def params(secrets: dict[str, str]) -> dict[str, object]:
    """What every probe may need: the bots, the agents user, the /send token."""
    return {
        "bot_ids": list(BOT_IDS),
        "agents_user": "agents",
        "agents_password": secrets["nats_agents_password"],
        "api_token": secrets["gateway_api_token"],
    }


def copy_probe(instance: str) -> None:
    copy_probe_files(instance, HERE / "probe.py")


@pytest.fixture(scope="session")
def node(params: dict[str, object]) -> Callable[..., dict]:
    """node(instance, probe, **params) -> the JSON result of probe.py's probe_<probe> there."""
    for instance in NODES:
        copy_probe(instance)

    def run(instance: str, name: str, limit: float = 120, **extra: object) -> dict:
        """`limit`: seconds for the whole `docker exec`; every other keyword goes to the
        probe (e.g. its own `timeout`)."""
        return run_probe(instance, name, {**params, **extra}, limit)

    return run


def wait_until(check: Callable[[], object], timeout: float, interval: float = 1.0) -> object:
    """The first truthy result of check() within timeout seconds (else the last one)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
