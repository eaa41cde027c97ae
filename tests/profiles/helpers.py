"""Shared helpers for profile tests: write YAML, load, collect diagnostics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from supervisor.profiles.diagnostics import Diagnostic, ProfileError
from supervisor.profiles.loader import load_profiles
from supervisor.profiles.matcher import PolicyTable
from supervisor.profiles.model import Binding, Endpoint
from supervisor.profiles.profileset import ProfileSet

BASE: dict[str, Any] = {
    "id": "p",
    "credentials": [
        {"name": "c", "token_grant": {"token_endpoint": "https://auth.example.com/token"}}
    ],
    "endpoints": [{"host": "api.example.com", "port": 443}],
}


def base(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc.update(changes)
    return doc


def grant(**changes: Any) -> dict[str, Any]:
    """BASE with token_grant fields changed."""
    doc = base()
    doc["credentials"][0]["token_grant"].update(changes)
    return doc


def write(tmp_path: Path, doc: Any, name: str = "p.yaml") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(path)


def load(tmp_path: Path, *docs: Any) -> ProfileSet:
    return load_profiles([write(tmp_path, d, f"p{i}.yaml") for i, d in enumerate(docs)])


def errors(tmp_path: Path, *docs: Any) -> list[Diagnostic]:
    try:
        load(tmp_path, *docs)
    except ProfileError as exc:
        return exc.errors
    raise AssertionError("expected a ProfileError")


def warnings(tmp_path: Path, *docs: Any) -> list[Diagnostic]:
    return list(load(tmp_path, *docs).diagnostics)


def fields(diags: list[Diagnostic]) -> list[str]:
    return [d.field for d in diags]


def bound(table: PolicyTable, host: str, port: int, path: str) -> Binding:
    b = table.match_binding(host, port, path)
    assert b is not None, f"no binding for {host}:{port}{path}"
    return b


def endpoint(table: PolicyTable, host: str, port: int, path: str) -> Endpoint:
    ep = table.match_endpoint(host, port, path)
    assert ep is not None, f"no endpoint for {host}:{port}{path}"
    return ep
