"""Fixtures of the verify step (pytest-testinfra, run by Molecule after converge).

`host` is one converged container (testinfra's docker backend: `docker exec`, as root); every
test that uses it, or `probe`, runs once per platform (Debian 12, Debian 13).
The fake secrets are the files that the converge generated in Molecule's ephemeral
directory (see molecule.yml), the same on every host; `probe` runs probe.py inside the
host's container with the gateway's own interpreter and hands it parameters on stdin.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared"))
from verify_support import copy_probe_files, read_secrets, run_probe

BOT_ID = 7000000001  # public part of the test bot's token (molecule.yml: tgw_bot_id)
UNITS = ("nats-server.service", "telegram-bot-api.service", "telegram-gateway.service")
HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    """The fake secrets of this run, by name (written by the password lookups); bot_token is
    the whole token, bot_token_secret its secret part (what a leak check looks for)."""
    values = read_secrets()
    values["bot_token"] = f"{BOT_ID}:{values['bot_token_secret']}A"  # as molecule.yml makes it
    # api_id is an 8-digit number that identifies the application, not a secret (api_hash
    # is); a substring search for it would find it by chance in timestamps and binaries
    values.pop("api_id")
    return values


@pytest.fixture(scope="module")
def probe(host):
    """probe(name, **params) -> the JSON result of probe.py's probe_<name> in the container
    of `host`."""
    instance = host.backend.name
    copy_probe_files(instance, HERE / "probe.py")

    def run(name: str, timeout: float = 180, **params: object) -> dict:
        return run_probe(instance, name, params, timeout)

    return run


@pytest.fixture(scope="session")
def agents(secrets: dict[str, str]) -> dict[str, object]:
    """Parameters that let a probe act as an agent (NATS user `agents`)."""
    return {
        "bot_id": BOT_ID,
        "agents_user": "agents",
        "agents_password": secrets["nats_agents_password"],
    }


@pytest.fixture(scope="session")
def inventory_dir() -> str:
    return str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)
