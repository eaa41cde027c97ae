"""Address rules as OpenShell's (ARCHITECTURE.md 4.1): an exact declared host may resolve to
RFC 1918 space without allowed_ips; wildcard hosts need allowed_ips for it; loopback,
link-local, metadata and other special ranges always need allowed_ips. Decisions only:
nothing here connects anywhere."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import pytest

from supervisor.profiles.loader import load_profiles
from supervisor.proxy.decision import decide, decide_connect
from supervisor.proxy.egress import check_destination
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.upstream import resolve_checked

A = ipaddress.ip_address
NETS = (ipaddress.ip_network("10.1.0.0/16"),)


@pytest.mark.parametrize(
    ("addr", "private_ok", "nets", "allowed"),
    [
        ("10.2.3.4", True, (), True),
        ("172.16.0.9", True, (), True),
        ("192.168.1.1", True, (), True),
        ("::ffff:10.2.3.4", True, (), True),
        ("10.2.3.4", False, (), False),  # wildcard host: needs allowed_ips
        ("10.2.3.4", True, NETS, False),  # allowed_ips given: they decide
        ("10.1.3.4", False, NETS, True),
        ("127.0.0.1", True, (), False),  # loopback always needs allowed_ips
        ("169.254.10.1", True, (), False),  # link-local
        ("169.254.169.254", True, (), False),  # metadata
        ("100.64.0.1", True, (), False),  # CGNAT is not RFC 1918
        ("fd00::1", True, (), False),  # IPv6 ULA is not RFC 1918
        ("8.8.8.8", False, (), True),
    ],
)
def test_private_ranges(addr: str, private_ok: bool, nets: Any, allowed: bool) -> None:
    got = check_destination(A(addr), 443, nets, private_ok=private_ok)
    assert (got is None) == allowed, got


PROFILE = """\
id: cluster
endpoints:
  - {host: api.internal.test, port: 443, protocol: rest, access: full}
  - {host: "*.svc.internal.test", port: 443, protocol: rest, access: full}
  - {host: tunnel.internal.test, port: 8443}
"""


def test_exactness_comes_from_the_table(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text(PROFILE)
    table = load_profiles([str(p)]).table
    exact = decide(table, method="GET", scheme="https", host="api.internal.test", port=443,
                   path="/")
    wild = decide(table, method="GET", scheme="https", host="a.svc.internal.test", port=443,
                  path="/")
    assert exact.private_ok and not wild.private_ok
    tunnel = decide_connect(table, host="tunnel.internal.test", port=8443, can_intercept=True)
    assert not tunnel.intercept and tunnel.private_ok

    async def resolver(host: str, port: int) -> list[Any]:
        return [A("10.9.8.7")]

    async def check(private_ok: bool) -> Any:
        return await resolve_checked(resolver, "x", 443, (), private_ok=private_ok)

    assert asyncio.run(check(True)) == A("10.9.8.7")
    with pytest.raises(ProxyError) as err:
        asyncio.run(check(False))
    assert err.value.code == "ssrf_denied" and "10.9.8.7" not in err.value.detail
