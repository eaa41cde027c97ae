"""L7 decisions with binaries (ARCHITECTURE.md 4.2 and 11): only the endpoints of profiles
whose binaries allow the connecting process take part -- in the allow, in the deny rules,
and in whether rules apply at all."""

from __future__ import annotations

import pytest

from supervisor.profiles.loader import load_profiles
from supervisor.profiles.matcher import PolicyTable
from supervisor.proxy.decision import decide
from supervisor.proxy.errors import ProxyError

PROFILES = """\
- id: forge
  binaries: [/usr/bin/git]
  endpoints:
    - host: forge.test
      port: 443
      protocol: rest
      rules:
        - allow: { method: GET, path: "**" }
        - allow: { method: POST, path: "/**/git-upload-pack" }
- id: packages
  binaries: [/usr/bin/pip]
  endpoints:
    - { host: forge.test, port: 443 }
"""


class Judge:
    def __init__(self, exe: str) -> None:
        self.exe = exe

    def allows(self, patterns: tuple[str, ...]) -> bool:
        return self.exe in patterns

    def denial(self) -> str:
        return f"binary {self.exe} is not allowed"

    def binary(self) -> str | None:
        return self.exe


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> PolicyTable:
    p = tmp_path_factory.mktemp("bin") / "p.yaml"
    p.write_text(PROFILES)
    return load_profiles([str(p)]).table


def go(table: PolicyTable, exe: str, method: str, path: str) -> str:
    try:
        decide(table, method=method, scheme="https", host="forge.test", port=443, path=path,
               binary=Judge(exe))
    except ProxyError as exc:
        return exc.code
    return "ok"


def test_git_gets_the_rules(table: PolicyTable) -> None:
    assert go(table, "/usr/bin/git", "POST", "/o/r/git-upload-pack") == "ok"
    assert go(table, "/usr/bin/git", "POST", "/o/r/git-receive-pack") == "policy_denied"


def test_pip_is_an_l4_client_there(table: PolicyTable) -> None:
    assert go(table, "/usr/bin/pip", "POST", "/o/r/git-receive-pack") == "ok"
    assert go(table, "/usr/bin/pip", "DELETE", "/anything") == "ok"


def test_other_binaries_are_refused(table: PolicyTable) -> None:
    assert go(table, "/usr/bin/curl", "GET", "/") == "binary_denied"
