"""The sandbox's capability list against the kernel: the list suffices for every step of
DESIGN.md section 6, and no capability in it is superfluous."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.probe import run_probe
from tests.deploy.test_manifests import SUPERVISOR_CAPS

pytestmark = pytest.mark.privileged


@pytest.fixture
def socket_dir(tmp_path: Path) -> str:
    path = tmp_path / "spiffe-workload-api"
    path.mkdir()
    return str(path)


def failures(results: dict[str, tuple[bool, int]]) -> set[str]:
    return {step for step, (ok, _) in results.items() if not ok}


def test_the_listed_capabilities_suffice(socket_dir: str) -> None:
    results = run_probe(sorted(SUPERVISOR_CAPS), socket_dir)
    assert len(results) == 16
    assert failures(results) == set()


@pytest.mark.parametrize("missing", sorted(SUPERVISOR_CAPS))
def test_each_listed_capability_is_needed(socket_dir: str, missing: str) -> None:
    results = run_probe(sorted(SUPERVISOR_CAPS - {missing}), socket_dir)
    assert failures(results), f"every step works without {missing}: drop it from the list"
