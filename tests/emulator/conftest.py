"""Fixtures for the Bot API emulator's conformance tests.

``emulator_server`` is one emulator process per test module (``--local``); ``emu`` resets
it before each test (bots included); ``bot`` registers a fresh bot. Tests that need their
own process (command line, persistence, non-local mode) start one with ``EmulatorProcess``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.emulator import BotHandle, EmulatorProcess


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


@pytest.fixture
def unlimited(emu: EmulatorProcess) -> EmulatorProcess:
    """Flood control off, for tests of what a method answers rather than how often it may be
    called: Telegram's 1 message per second per private chat would make a send followed by
    an edit a 429 (``test_emu_limits`` tests the limits themselves)."""
    emu.set_limits(enabled=False)
    return emu
