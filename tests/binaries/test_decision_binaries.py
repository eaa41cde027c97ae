"""The endpoint decision with binaries (no I/O: a fake judge): any matching endpoint whose
binaries allow the connecting process may carry the request; a credential serves its own
profile's binaries only; no endpoint allows it -> 403 binary_denied naming the binary."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.policy.loader import load_config
from supervisor.proxy import errors
from supervisor.proxy.decision import decide, decide_connect
from supervisor.proxy.errors import ProxyError


class Judge:
    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.calls = 0

    def allows(self, patterns: tuple[str, ...]) -> bool:
        self.calls += 1
        return self.exe in patterns

    def denial(self) -> str:
        return f"binary {self.exe} may not use this endpoint"

    def binary(self) -> str | None:
        return self.exe


PROFILE = """\
id: gh
credentials:
  - name: token
    token_grant: {token_endpoint: "https://issuer.example.com/token"}
endpoints:
  - {host: api.example.com, port: 443, path: "/repos/**", protocol: rest, access: full}
binaries: [/usr/bin/git]
"""
POLICY = """\
version: 1
network_policies:
  readers:
    endpoints: [{host: api.example.com, port: 443, protocol: rest, access: read-only}]
    binaries: [{path: /usr/bin/curl}, {path: /usr/bin/git}]
  tunnel:
    endpoints: [{host: raw.example.com, port: 443}]
    binaries: [{path: /usr/bin/curl}]
"""


@pytest.fixture
def table(tmp_path: Path) -> object:
    (tmp_path / "p.yaml").write_text(PROFILE)
    (tmp_path / "policy.yaml").write_text(POLICY)
    profiles, _ = load_config((str(tmp_path / "p.yaml"),), str(tmp_path / "policy.yaml"))
    return profiles.table


def ask(table: object, exe: str | None, method: str = "GET", path: str = "/repos/x") -> object:
    return decide(table, method=method, scheme="https", host="api.example.com", port=443,  # type: ignore[arg-type]
                  path=path, binary=Judge(exe) if exe else None)


def test_the_profiles_binary_gets_its_endpoint_and_credential(table: object) -> None:
    d = ask(table, "/usr/bin/git", "POST")
    assert d.endpoint.path == "/repos/**" and d.binding is not None  # type: ignore[attr-defined]


def test_another_listed_binary_gets_the_less_specific_entry_without_the_credential(
    table: object,
) -> None:
    d = ask(table, "/usr/bin/curl")
    assert d.endpoint.path is None and d.endpoint.access == "read-only"  # type: ignore[attr-defined]
    assert d.binding is None  # type: ignore[attr-defined]
    with pytest.raises(ProxyError) as info:  # and that entry's access rules apply to it
        ask(table, "/usr/bin/curl", "POST")
    assert info.value.code == errors.POLICY_DENIED


@pytest.mark.parametrize("exe", ["/usr/bin/python3.11", None])
def test_no_entry_allows_it(table: object, exe: str | None) -> None:
    with pytest.raises(ProxyError) as info:
        ask(table, exe)
    assert info.value.code == errors.BINARY_DENIED and info.value.status == 403
    assert (exe or "binary identity unavailable") in info.value.detail
    assert getattr(info.value, "binary", None) == exe


def test_raw_tunnels_are_judged_at_connect(table: object) -> None:
    ok = decide_connect(table, host="raw.example.com", port=443, can_intercept=True,  # type: ignore[arg-type]
                        binary=Judge("/usr/bin/curl"))
    assert not ok.intercept and ok.endpoint is not None
    with pytest.raises(ProxyError) as info:
        decide_connect(table, host="raw.example.com", port=443, can_intercept=True,  # type: ignore[arg-type]
                       binary=Judge("/usr/bin/python3.11"))
    assert info.value.code == errors.BINARY_DENIED


@given(st.sampled_from(["/usr/bin/git", "/usr/bin/curl", "/usr/bin/python3.11", "/bin/sh"]),
       st.sampled_from(["GET", "HEAD", "POST", "DELETE"]),
       st.sampled_from(["/repos/a", "/repos/a/b", "/users/x", "/"]))
def test_never_more_than_the_union_of_what_the_binary_is_allowed(
    exe: str, method: str, path: str
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        Path(d, "p.yaml").write_text(PROFILE)
        Path(d, "policy.yaml").write_text(POLICY)
        table, _ = load_config((f"{d}/p.yaml",), f"{d}/policy.yaml")
    try:
        result = ask(table.table, exe, method, path)
    except ProxyError as exc:
        result = exc.code
    git_repo = exe == "/usr/bin/git" and path.startswith("/repos/")
    reader = exe in ("/usr/bin/curl", "/usr/bin/git") and method in ("GET", "HEAD")
    if git_repo:
        assert result.binding is not None  # type: ignore[union-attr]
    elif reader:
        assert result.binding is None  # type: ignore[union-attr]
    elif exe in ("/usr/bin/curl", "/usr/bin/git"):
        assert result == errors.POLICY_DENIED
    else:
        assert result == errors.BINARY_DENIED
