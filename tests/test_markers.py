"""tests/conftest.py's rule, tried on a small suite of its own: a ``unit`` test that starts a
process fails, naming it; other tiers may start processes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
# the suite below starts `true` from an integration test, in this process
pytestmark = pytest.mark.integration

SUITE = """
import subprocess

import pytest


@pytest.mark.unit
def test_unit_starts_a_process():
    subprocess.run(["true"], check=True)


@pytest.mark.unit
def test_unit_hides_the_error():
    try:
        subprocess.run(["true"], check=True)
    except Exception:
        pass


@pytest.fixture
def server():
    return subprocess.Popen(["true"]).wait()


@pytest.mark.unit
def test_unit_with_a_fixture_that_starts_a_process(server):
    pass


@pytest.mark.unit
def test_unit_without_processes():
    assert sum([1, 2]) == 3


@pytest.mark.integration
def test_integration_starts_a_process():
    subprocess.run(["true"], check=True)
"""


def test_a_unit_test_that_starts_a_process_fails(pytester: pytest.Pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    unit: u\n    integration: i\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.inline_run("--strict-markers", "-p", "no:cacheprovider")
    failed = {
        report.nodeid.split("::")[-1]: str(report.longrepr)
        for report in result.getreports("pytest_runtest_logreport")
        if report.failed
    }
    assert set(failed) == {
        "test_unit_starts_a_process",
        "test_unit_hides_the_error",
        "test_unit_with_a_fixture_that_starts_a_process",
    }
    for name, text in failed.items():
        assert f"{name} is marked unit but starts 'true'" in text
        assert "integration (or faults), not unit" in text
    calls = [r for r in result.getreports("pytest_runtest_logreport") if r.when == "call"]
    passed = {report.nodeid.split("::")[-1] for report in calls if report.passed}
    assert passed == {"test_unit_without_processes", "test_integration_starts_a_process"}
