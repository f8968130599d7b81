"""What both scenarios' verify fixtures share, on the controller: the secrets the converge
generated in Molecule's ephemeral directory, and running a probe inside a container.

A probe is probe.py's probe_<name>, run with the gateway's own interpreter (it has nats-py)
beside probe_http.py; parameters (secrets included) go in on stdin, never on the command line,
and the result is one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

PYTHON = "/opt/telegram-gateway/venv/bin/python"
SHARED = Path(__file__).parent


def ephemeral() -> Path:
    """Molecule's ephemeral directory of the scenario being verified."""
    path = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not path:
        pytest.exit("MOLECULE_EPHEMERAL_DIRECTORY is not set: run through `molecule verify`")
    return Path(path)


def read_secrets() -> dict[str, str]:
    """The fake secrets of this run, by name (the files the password lookups wrote)."""
    folder = ephemeral() / "secrets"
    values = {f.name: f.read_text().split(" salt=")[0].strip() for f in sorted(folder.iterdir())}
    assert values, f"no secrets in {folder}: has the scenario been converged?"
    return values


def copy_probe_files(instance: str, probe: Path) -> None:
    """Put the scenario's probe.py and the shared probe_http.py into /root of the container."""
    for source in (probe, SHARED / "probe_http.py"):
        subprocess.run(["docker", "cp", str(source), f"{instance}:/root/{source.name}"], check=True)


def run_probe(instance: str, name: str, params: dict[str, object], timeout: float) -> dict:
    """The JSON result of probe_<name> in the container (copy_probe_files first); `timeout`: seconds
    for the whole `docker exec`."""
    proc = subprocess.run(
        ["docker", "exec", "-i", instance, PYTHON, "/root/probe.py", name],
        input=json.dumps(params),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"probe {name} on {instance} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)
