"""Deployment tier: the Molecule scenarios ansible/molecule/default and .../cluster, run by
.ci/molecule.

`molecule test` on two systemd containers, Debian 12 and Debian 13: create, a --check --diff
run on the fresh hosts (it must run to the end before anything is installed), converge with
the unchanged ansible/site.yml, idempotence (0 changed), side_effect (files changed by hand are
put back by another converge, and their services restarted; a rotated NATS password restarts
nats-server and the gateway), verify on both hosts (a --check run reports 0 changed; services,
sockets, users, files, secrets, sandbox, end to end, restarts, kill -9), destroy. The verify
step's own tests live in ansible/molecule/default/tests/.

Then `molecule test -s cluster`: three Debian 12 containers on their own network, one NATS
cluster (routes with mutual TLS and a route password), converged by the same site.yml,
idempotence, verify (routes, a refused intruder, 3 replicas, bots on every host, an update
per host once, /send on every host, docker kill of a bot's owner: failover within 10 s and,
after it is back, 0 lost and 0 doubled), destroy. Its tests: ansible/molecule/cluster/tests/.

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
    r"FAILOVER |INTRUDER |after the host came back: |owners: |tgw-cluster-\d: \d+ routes|"
    r"Playbook run took |\S+\s+: ok=\d+\s+changed=)"
)
CLUSTER_LOG = REPO / ".cache" / "molecule" / "molecule-test-cluster.log"
CLUSTER_NODES = ("tgw-cluster-1", "tgw-cluster-2", "tgw-cluster-3")


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=60)
    return probe.returncode == 0


def _run(args: list[str], log_path: Path, timeout: float) -> str:
    """``.ci/molecule <args>`` with its output in ``log_path``; the output (colours removed),
    after printing its figures and failing with the log's tail when it exits non-zero."""
    if os.geteuid() != 0 and not _docker_answers():
        pytest.skip("needs root (to install and start Docker) or a running Docker engine")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLECULE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the role copies gateway/ from this checkout
    with log_path.open("w") as log:
        proc = subprocess.run(
            [str(SCRIPT), *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
    output = re.sub(r"\x1b\[[0-9;]*m", "", log_path.read_text(errors="replace"))
    print("\n".join(line for line in output.splitlines() if FIGURES.match(line)))
    assert proc.returncode == 0, (
        f".ci/molecule {' '.join(args)} failed (exit {proc.returncode}); whole log: {log_path}\n"
        + "\n".join(output.splitlines()[-150:])
    )
    return output


def test_molecule_scenario_default_converges_idempotently_and_verifies():
    output = _run(["test"], LOG, 2300)
    # each step really ran (a scenario that skipped them would also exit 0)
    for step in ("check", "converge", "idempotence", "side_effect", "verify"):
        assert re.search(rf"default.*{step}.*Executed: Successful", output), f"no {step} in {LOG}"
    assert re.search(r"\d+ passed", output) and not re.search(r"\d+ (failed|error)", output)
    # both platforms were re-converged with 0 changed, and verified
    idempotence = output.split("[default > idempotence] Executing", 1)[-1].split("Executed:", 1)[0]
    for platform in ("telegram-gateway-debian12", "telegram-gateway-debian13"):
        assert re.search(rf"^{platform}\s*: ok=\d+\s+changed=0 ", idempotence, re.M), platform
        assert f"docker://{platform}" in output, f"{platform} not verified"


def test_molecule_scenario_cluster_converges_idempotently_and_survives_a_host():
    """Three hosts, one NATS cluster (after the single-host scenario: pytest keeps file order)."""
    output = _run(["test", "-s", "cluster"], CLUSTER_LOG, 1800)
    for step in ("converge", "idempotence", "verify"):
        assert re.search(rf"cluster.*{step}.*Executed: Successful", output), (
            f"no {step} in {CLUSTER_LOG}"
        )
    assert re.search(r"\b7 passed", output) and not re.search(r"\d+ (failed|error)", output)
    idempotence = output.split("[cluster > idempotence] Executing", 1)[-1].split("Executed:", 1)[0]
    for node in CLUSTER_NODES:
        assert re.search(rf"^{node}\s*: ok=\d+\s+changed=0 ", idempotence, re.M), node
    assert "FAILOVER " in output and "0 lost, 0 doubled, 0 unexpected" in output
