"""Shared test configuration: the `privileged` marker skips unless running as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="privileged test: needs root")
    for item in items:
        if "privileged" in item.keywords:
            item.add_marker(skip)
