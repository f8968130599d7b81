"""Suite-wide rules.

Ordering: the slow deployment tier (Molecule) runs after every other tier, so a broken unit or
integration test fails the run minutes earlier.

Markers tell the truth: a test marked ``unit`` starts no external process. While a ``unit``
test (its fixtures included) runs, starting a program (``subprocess``, ``asyncio``
subprocesses, ``os.system``, ``os.posix_spawn``) is refused and the test fails, naming the
program; mark such a test ``integration`` (or ``faults``). Forking the test process itself
(``multiprocessing``) starts no other program and stays allowed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Generator, Sequence
from typing import Any

import pytest

OTHER_TIERS = {"integration", "faults", "deployment"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("deployment") is not None)


class UnitTestStartedAProcess(AssertionError):
    """A ``unit`` test tried to start an external program."""


class _ProcessGuard:
    """Refuses every program a unit test starts."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.started: list[str] = []

    def check(self, command: object) -> None:
        if isinstance(command, (str, bytes, os.PathLike)):
            shown = os.fsdecode(command)
        else:
            shown = " ".join(os.fsdecode(part) for part in command)  # type: ignore[attr-defined]
        self.started.append(" ".join(shown.split())[:120])
        raise UnitTestStartedAProcess(self.message())

    def message(self) -> str:
        text = (
            f"{self.item.nodeid} is marked unit but starts {self.started[0]!r}: a test that "
            "starts a process is integration (or faults), not unit"
        )
        others = sorted({m.name for m in self.item.iter_markers()} & OTHER_TIERS)
        if others:
            text += (
                f" (its {', '.join(others)} mark does not undo the unit mark, e.g. a module's "
                "pytestmark, that `-m unit` selects it by: move it to a module without one)"
            )
        return text

    def wrap(self, original: Callable[..., Any], command_at: int) -> Callable[..., Any]:
        def guarded(*args: Any, **kwargs: Any) -> Any:
            self.check(args[command_at])
            return original(*args, **kwargs)

        return guarded

    def patches(self) -> Sequence[tuple[object, str, Callable[..., Any]]]:
        # Popen._execute_child is where every subprocess.Popen (run, check_output, asyncio's
        # subprocess transports) starts its program; args[1] is the command
        found: list[tuple[object, str, Callable[..., Any]]] = [
            (
                subprocess.Popen,
                "_execute_child",
                self.wrap(subprocess.Popen._execute_child, 1),  # type: ignore[attr-defined]
            ),
            (os, "system", self.wrap(os.system, 0)),
        ]
        for name in ("posix_spawn", "posix_spawnp"):
            if hasattr(os, name):
                found.append((os, name, self.wrap(getattr(os, name), 1)))
        return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    return (yield from _guarded(item))


def _guarded(item: pytest.Item) -> Generator[None, None, None]:
    """Run one phase of ``item``; a unit test's phase under a :class:`_ProcessGuard`."""
    if item.get_closest_marker("unit") is None:
        return (yield)
    guard = _ProcessGuard(item)
    with pytest.MonkeyPatch.context() as patch:
        for target, name, replacement in guard.patches():
            patch.setattr(target, name, replacement)
        result = yield
    if guard.started:
        # the test went on (it caught the error): fail it all the same
        raise UnitTestStartedAProcess(guard.message())
    return result
