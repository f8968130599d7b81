"""A dry run (`--check --diff`) of the unchanged site.yml on the converged host changes nothing.

Runs first, before the later tests restart and kill services.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


def test_check_mode_reports_nothing_to_change(inventory_dir):
    converge = Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml"
    proc = subprocess.run(
        ["ansible-playbook", "--inventory", inventory_dir, "--check", "--diff", str(converge)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout
    recap = re.findall(
        r"^\S+\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out, re.M
    )
    for line in out.splitlines():
        if "ok=" in line and "changed=" in line:
            print(f"\nCHECK --check --diff: {line}")
    assert proc.returncode == 0, f"--check failed:\n{out[-5000:]}\n{proc.stderr[-2000:]}"
    assert recap, f"no PLAY RECAP in the output:\n{out[-3000:]}"
    changed, task = [], ""
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line.split("]")[0] + "]"
        elif line.startswith("changed:"):
            changed.append(f"{task} {line}")
    assert all(c == "0" and u == "0" and f == "0" for c, u, f in recap), (
        "--check --diff on the converged host reports changes:\n"
        + "\n".join(changed)
        + "\n"
        + out[-5000:]
    )
