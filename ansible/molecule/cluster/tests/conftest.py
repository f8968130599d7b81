"""Fixtures of the cluster scenario's verify step (pytest-testinfra, run by Molecule).

The tests act on the cluster as a whole: `node(name)` runs probe.py's probe_<name> inside one
node's container (`docker exec`, the gateway's interpreter, parameters on stdin), and the
failover test runs `docker kill` / `docker start` here, on the controller. The fake secrets are
the files the converge generated in Molecule's ephemeral directory (molecule.yml).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

NODES = ("tgw-cluster-1", "tgw-cluster-2", "tgw-cluster-3")  # molecule.yml's platforms
BOT_IDS = (7000000011, 7000000012, 7000000013)  # molecule.yml: tgw_bot_ids
PYTHON = "/opt/telegram-gateway/venv/bin/python"
HERE = Path(__file__).parent


def _ephemeral() -> Path:
    path = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not path:
        pytest.exit("MOLECULE_EPHEMERAL_DIRECTORY is not set: run through `molecule verify`")
    return Path(path)


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    folder = _ephemeral() / "secrets"
    values = {f.name: f.read_text().split(" salt=")[0].strip() for f in sorted(folder.iterdir())}
    assert values, f"no secrets in {folder}: has the scenario been converged?"
    return values


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
    subprocess.run(
        ["docker", "cp", str(HERE / "probe.py"), f"{instance}:/root/probe.py"], check=True
    )


@pytest.fixture(scope="session")
def node(params: dict[str, object]) -> Callable[..., dict]:
    """node(instance, probe, **params) -> the JSON result of probe.py's probe_<probe> there."""
    for instance in NODES:
        copy_probe(instance)

    def run(instance: str, name: str, limit: float = 120, **extra: object) -> dict:
        """`limit`: seconds for the whole `docker exec`; every other keyword goes to the
        probe (e.g. its own `timeout`)."""
        proc = subprocess.run(
            ["docker", "exec", "-i", instance, PYTHON, "/root/probe.py", name],
            input=json.dumps({**params, **extra}),
            capture_output=True,
            text=True,
            timeout=limit,
        )
        assert proc.returncode == 0, f"probe {name} on {instance} failed:\n{proc.stderr[-3000:]}"
        return json.loads(proc.stdout)

    return run


def wait_until(check: Callable[[], object], timeout: float, interval: float = 1.0) -> object:
    """The first truthy result of check() within timeout seconds (else the last one)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)
