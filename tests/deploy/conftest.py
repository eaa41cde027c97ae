"""Paths and rendered manifests shared by the deployment tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.deploy.kustomize import Resource, render

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
SECCOMP_PROFILE = ROOT / "deploy" / "seccomp" / "openshell-supervisor.json"
NAMESPACE = "openshell-demo"


def find(resources: list[Resource], kind: str, name: str) -> dict[str, Any]:
    matches = [
        r.doc for r in resources if r.doc["kind"] == kind and r.doc["metadata"]["name"] == name
    ]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


@pytest.fixture(scope="session")
def base() -> list[Resource]:
    return render(KUBE / "base")


@pytest.fixture(scope="session")
def demo() -> list[Resource]:
    return render(KUBE / "demo")


@pytest.fixture(scope="session")
def sandbox_pod(base: list[Resource]) -> dict[str, Any]:
    pod: dict[str, Any] = find(base, "Deployment", "openshell-sandbox")["spec"]["template"]["spec"]
    return pod


@pytest.fixture(scope="session")
def sandbox_container(sandbox_pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = sandbox_pod["containers"]
    assert isinstance(container, dict)
    return container
