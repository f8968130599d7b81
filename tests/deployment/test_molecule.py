"""Deployment tier: the Molecule scenario ansible/molecule/default, run by .ci/molecule.

`molecule test` on two systemd containers, Debian 12 and Debian 13: create, a --check --diff
run on the fresh hosts (it must run to the end before anything is installed), converge with
the unchanged ansible/site.yml, idempotence (0 changed), side_effect (files changed by hand are
put back by another converge, and their services restarted; a rotated NATS password restarts
nats-server and the gateway), verify on both hosts (a --check run reports 0 changed; services,
sockets, users, files, secrets, sandbox, end to end, restarts, kill -9), destroy. The verify
step's own tests live in ansible/molecule/default/tests/.

Needs root (or a Docker engine that already answers and the base images) and takes minutes;
deselect it with `-m "not deployment"`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deployment, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "molecule"
LOG = REPO / ".cache" / "molecule" / "molecule-test.log"
# lines of the run worth showing even when it passes (stage times, figures, recaps)
# (stage and step times are "--- <name>: <seconds> s"; other "--- " lines are --diff output)
FIGURES = re.compile(
    r"^(--- [^:]+: [\d.]+ s$|total: |CHECK |EXPOSURE |INBOUND |RESTARTS |KILL -9 |"
    r"Playbook run took |\S+\s+: ok=\d+\s+changed=)"
)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=60)
    return probe.returncode == 0


def test_molecule_scenario_default_converges_idempotently_and_verifies():
    if os.geteuid() != 0 and not _docker_answers():
        pytest.skip("needs root (to install and start Docker) or a running Docker engine")
    LOG.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLECULE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the role copies gateway/ from this checkout
    with LOG.open("w") as log:
        proc = subprocess.run(
            [str(SCRIPT), "test"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=2300,
        )
    output = re.sub(r"\x1b\[[0-9;]*m", "", LOG.read_text(errors="replace"))
    print("\n".join(line for line in output.splitlines() if FIGURES.match(line)))
    assert proc.returncode == 0, (
        f".ci/molecule test failed (exit {proc.returncode}); whole log: {LOG}\n"
        + "\n".join(output.splitlines()[-150:])
    )
    # each step really ran (a scenario that skipped them would also exit 0)
    for step in ("check", "converge", "idempotence", "side_effect", "verify"):
        assert re.search(rf"default.*{step}.*Executed: Successful", output), f"no {step} in {LOG}"
    assert re.search(r"\d+ passed", output) and not re.search(r"\d+ (failed|error)", output)
    # both platforms were re-converged with 0 changed, and verified
    idempotence = output.split("[default > idempotence] Executing", 1)[-1].split("Executed:", 1)[0]
    for platform in ("telegram-gateway-debian12", "telegram-gateway-debian13"):
        assert re.search(rf"^{platform}\s*: ok=\d+\s+changed=0 ", idempotence, re.M), platform
        assert f"docker://{platform}" in output, f"{platform} not verified"
