"""The emulator as Molecule ships it: one zipapp file built from the package, run by a Python
that sees the standard library only (no PYTHONPATH, no site-packages)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.emulator import EMULATOR_PACKAGE, BotHandle, EmulatorProcess
from harness.tokens import fake_token

# -I: no PYTHONPATH, no user site, no current directory; -S: no site-packages at all
STDLIB_ONLY_PYTHON = (sys.executable, "-I", "-S")


def build_zipapp(workdir: Path) -> Path:
    """Exactly as the Molecule scenario builds it (the fixed interface in the README)."""
    staging = workdir / "staging"
    staging.mkdir()
    shutil.copytree(EMULATOR_PACKAGE, staging / "botapi_emulator")
    target = workdir / "telegram-bot-api"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "zipapp",
            str(staging),
            "-m",
            "botapi_emulator.__main__:main",
            "-p",
            "/usr/bin/env python3",
            "-o",
            str(target),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return target


@pytest.fixture(scope="module")
def zipapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("zipapp"))


@pytest.mark.integration
def test_zipapp_prints_the_version(zipapp: Path) -> None:
    assert zipapp.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    result = subprocess.run(
        [*STDLIB_ONLY_PYTHON, str(zipapp), "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=zipapp.parent,
    )
    assert (result.returncode, result.stderr) == (0, "Bot API 10.0\n")


@pytest.mark.integration
def test_zipapp_serves_the_bot_api(zipapp: Path, tmp_path: Path) -> None:
    token = fake_token(424242)
    program = [*STDLIB_ONLY_PYTHON, str(zipapp)]
    with EmulatorProcess(tmp_path / "state", bots=[token], program=program) as emu:
        bot = BotHandle(emu, 424242, token)
        assert bot.ok("getMe")["id"] == 424242
        bot.chat(7)
        assert bot.ok("sendMessage", chat_id=7, text="hello")["text"] == "hello"


@pytest.mark.unit
def test_the_package_imports_the_standard_library_only() -> None:
    foreign = []
    for module in sorted(EMULATOR_PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top != "botapi_emulator" and top not in sys.stdlib_module_names:
                    foreign.append(f"{module.name}: {name}")
    assert foreign == []
