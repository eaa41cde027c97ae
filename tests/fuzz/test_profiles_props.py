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
