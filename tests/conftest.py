"""Shared test configuration: the `privileged` marker skips unless running as root."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs must be reproducible: the same examples every run (a new counterexample is found
# locally, where the database and random seeds vary, not by a flaky CI run).
# Deadline: 2 s per example instead of Hypothesis's 200 ms. It still catches a parser gone
# quadratic or worse, but not a test slowed 5x by a loaded 2-core machine (that failed runs).
LOADED_MACHINE_DEADLINE = timedelta(seconds=2)
settings.register_profile("ci", derandomize=True, print_blob=True,
                          deadline=LOADED_MACHINE_DEADLINE)  # fmt: skip
settings.register_profile("local", deadline=LOADED_MACHINE_DEADLINE)
settings.load_profile("ci" if os.environ.get("CI") else "local")

# Contract inputs the tests use, kept in the repository (the provider-profile example is
# the upstream example, byte for byte).
DATA_DIR = Path(__file__).resolve().parent / "data"
EXAMPLE_PROFILE = DATA_DIR / "provider-profile-example.yaml"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="privileged test: needs root")
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(skip)
