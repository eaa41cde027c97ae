"""Render a kustomization without kubectl: follow ``resources`` recursively, set the
namespace, and refuse every kustomize feature this repository does not use (so a patch or
generator added later cannot be silently ignored by the tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "namespace", "resources"}
# Kinds without a namespace among those the manifests use.
CLUSTER_SCOPED = {"Namespace", "ClusterSPIFFEID", "ClusterRole", "ClusterRoleBinding"}


class KustomizeError(Exception):
    pass


@dataclass(frozen=True)
class Resource:
    source: Path
    doc: dict[str, Any]

    @property
    def key(self) -> tuple[str, str, str, str]:
        meta = self.doc.get("metadata") or {}
        return (
            str(self.doc.get("apiVersion")),
            str(self.doc.get("kind")),
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
        )


def load_documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict):
            raise KustomizeError(f"{path}: a document is not a mapping")
    return docs


def render(directory: Path) -> list[Resource]:
    """Resources of the kustomization in ``directory``, as kustomize would emit them."""
    return _render(directory.resolve(), ())


def _render(directory: Path, stack: tuple[Path, ...]) -> list[Resource]:
    if directory in stack:
        raise KustomizeError(f"{directory}: kustomization cycle")
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    (spec,) = load_documents(path)
    unsupported = set(spec) - SUPPORTED_KEYS
    if unsupported:
        raise KustomizeError(f"{path}: unsupported keys {sorted(unsupported)}")
    if spec.get("kind") != "Kustomization":
        raise KustomizeError(f"{path}: kind is not Kustomization")
    out: list[Resource] = []
    for entry in spec.get("resources") or []:
        target = (directory / entry).resolve()
        if target.is_dir():
            out.extend(_render(target, (*stack, directory)))
        elif target.is_file():
            out.extend(Resource(target, doc) for doc in load_documents(target))
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")
    namespace = spec.get("namespace")
    if namespace:
        for res in out:
            if res.doc.get("kind") not in CLUSTER_SCOPED:
                res.doc.setdefault("metadata", {})["namespace"] = namespace
    seen: dict[tuple[str, str, str, str], Path] = {}
    for res in out:
        if res.key in seen:
            raise KustomizeError(f"{res.key} defined in {seen[res.key]} and {res.source}")
        seen[res.key] = res.source
    return out
