"""Suite-wide ordering: the slow deployment tier (Molecule) runs after every other tier, so a
broken unit or integration test fails the run minutes earlier."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("deployment") is not None)
