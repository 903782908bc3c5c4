"""Tests that need the interpreted core (pcpd.core).

A test marked ``interpreted`` traces cachelines (a TracedArena), which the
compiled core's typed memoryviews cannot record.  A run of the suite on the
compiled core skips those tests here, and tests/test_core.py runs them all
in a child process on the interpreted core, so every run runs them.
"""

import pytest

from pcpd import core


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "interpreted: traces cachelines, so runs on the interpreted core "
                                       "(tests/conftest.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not core.running_compiled():
        return
    skip = pytest.mark.skip(reason="traces cachelines: tests/test_core.py runs it on the interpreted core")
    for item in items:
        if item.get_closest_marker("interpreted"):
            item.add_marker(skip)
