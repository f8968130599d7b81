"""Fixtures for the Bot API emulator's conformance tests.

``emulator_server`` is one emulator process per test module (``--local``); ``emu`` resets
it before each test (bots included); ``bot`` registers a fresh bot. Tests that need their
own process (command line, persistence, non-local mode) start one with ``EmulatorProcess``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from harness.emulator import EMULATOR_PATH, BotHandle, EmulatorProcess


@pytest.fixture(scope="session")
def emulator_module() -> ModuleType:
    """The emulator file imported as a module (for pure-function unit tests)."""
    spec = importlib.util.spec_from_file_location("botapi_emulator", EMULATOR_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["botapi_emulator"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def emulator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("emulator")) as emulator:
        yield emulator


@pytest.fixture
def emu(emulator_server: EmulatorProcess) -> EmulatorProcess:
    emulator_server.reset(bots=True)
    return emulator_server


@pytest.fixture
def bot(emu: EmulatorProcess) -> BotHandle:
    return BotHandle.register(emu)
