"""Token endpoint URL rule: the load-time check (profiles) and the run-time defence in depth
(grants) agree, and whatever passes is https or cleartext to loopback / service hosts."""

from __future__ import annotations

import ipaddress
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.grants.exchange import endpoint_allowed
from supervisor.profiles.validation import check_token_endpoint

_scheme = st.sampled_from(["https://", "http://", "HTTP://", "Https://", "ftp://", "http:/", ""])
_userinfo = st.sampled_from(["", "", "u@", "u:p@", "@"])
_host = st.sampled_from(
    ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "localhost.", "[::1]", "[::ffff:127.0.0.1]",
     "[fe80::1%25lo]", "issuer.auth.svc", "issuer.auth.svc.cluster.local", "a.b.c.svc", "x.svc",
     "issuer.example", "10.0.0.1", "0x7f000001", "2130706433", "127.0.0.1.nip.io", "[::1",
     "evil.com#@127.0.0.1", "127.0.0.1\\@evil.com", "*.svc", "", "ex ample.com"]
)  # fmt: skip
_port = st.sampled_from(["", ":443", ":0", ":65536", ":8080", ":x", ":"])
_rest = st.sampled_from(["", "/", "/token", "/realms/r/protocol/openid-connect/token", "?a=b",
                         "#frag", "/t\r\n", "/%2e%2e/"])  # fmt: skip

_urls = st.one_of(
    st.tuples(_scheme, _userinfo, _host, _port, _rest).map("".join),
    st.text(max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(_urls)
def test_load_time_rule_implies_run_time_rule(url: str) -> None:
    if check_token_endpoint(url) is not None:
        return
    parts = urllib.parse.urlsplit(url)
    assert endpoint_allowed(url), url  # validated profiles never fail closed at run time
    assert parts.scheme.lower() in ("http", "https") and parts.hostname
    assert "@" not in parts.netloc and not any(ord(c) < 0x21 or ord(c) == 0x7F for c in url)
    if parts.scheme.lower() == "http":
        host = parts.hostname.rstrip(".")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            labels = host.split(".")
            assert host == "localhost" or "svc" in labels[2:3], host
        else:
            mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is loopback too
            assert ip.is_loopback or (mapped is not None and mapped.is_loopback), host


# Was a finding: a trailing-dot host passed at load time and failed every grant at run
# time. Both checks now refuse it (validation names the reason).
@pytest.mark.parametrize(
    "url",
    ["http://localhost./t", "http://issuer.auth.svc./t", "http://127.0.0.1./t",
     "http://issuer.auth.svc.cluster.local./t"],
)  # fmt: skip
def test_trailing_dot_hosts_agree(url: str) -> None:
    assert check_token_endpoint(url) is not None and not endpoint_allowed(url)


_v4_nets = st.builds(
    lambda a, p: ipaddress.IPv4Network((a, p), strict=False),
    # 127.x.y.z drawn on purpose: uniform addresses almost never land inside 127.0.0.0/8.
    st.one_of(st.integers(0, 2**32 - 1), st.integers(127 << 24, (128 << 24) - 1)),
    st.integers(0, 32),
)
_v6_nets = st.builds(
    lambda a, p: ipaddress.IPv6Network((a, p), strict=False),
    st.one_of(st.integers(0, 2**128 - 1), st.sampled_from([1, 0xFFFF << 32, 0xFE80 << 112])),
    st.integers(0, 128),
)
_LOOPBACK = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_PUBLIC = (ipaddress.ip_address("8.8.8.8"), ipaddress.ip_address("2001:4860::8888"))


@settings(max_examples=300, deadline=None)
@given(st.one_of(_v4_nets, _v6_nets))
def test_broad_allowed_ips_warning(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    """Issue 12 item 11: any range that holds loopback AND a public address is flagged;
    a range inside loopback alone (an explicit opt-in) never is."""
    from supervisor.profiles.hosts import broad_special_ranges

    opened = broad_special_ranges(net)
    v = net.version
    loop = next(a for a in _LOOPBACK if a.version == v)
    public = next(a for a in _PUBLIC if a.version == v)
    if loop in net and public in net:
        assert any(o.startswith("loopback") for o in opened)
    if v == 4 and net.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        assert opened == []
    for item in opened:
        _, _, text = item.partition(" (")
        assert net.overlaps(ipaddress.ip_network(text.rstrip(")")))  # type: ignore[arg-type]
