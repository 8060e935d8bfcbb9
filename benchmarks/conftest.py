"""Fixtures shared by the benchmark suites, and their summary tables at the end of a session.

``training_threads``: the test runs with the torch CPU threads one training job of the embedded
default gets (``training.threads``), restored afterwards; no benchmark module sets threads on import.

A benchmark module that defines ``summary_lines() -> list[str]`` has those lines printed after
pytest-benchmark's own table (its medians, ratios and verdicts in plain text).
"""

from __future__ import annotations

import pytest

from harness import Experiment, torch_threads

_SUMMARY_MODULES = pytest.StashKey[list]()


@pytest.fixture
def training_threads():
    with torch_threads(Experiment.load("config").threads):
        yield


def pytest_collection_modifyitems(session, config, items):
    modules = []
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and hasattr(module, "summary_lines") and module not in modules:
            modules.append(module)
    config.stash[_SUMMARY_MODULES] = modules


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for module in config.stash.get(_SUMMARY_MODULES, []):
        for line in module.summary_lines():
            terminalreporter.write_line(line)
