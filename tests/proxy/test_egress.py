"""Pure destination rules and the per-request decision."""

from __future__ import annotations

import ipaddress

import pytest

from supervisor.proxy.decision import CredentialHeaders, credential_header, decide
from supervisor.proxy.egress import check_destination, cleartext_injection_allowed, is_special
from supervisor.proxy.errors import ProxyError
from tests.proxy.harness import FakePolicy, binding, endpoint

ip = ipaddress.ip_address
net = ipaddress.ip_network


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "198.18.0.1",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::a00:1",
        "2001:db8::1",
    ],
)
def test_special_addresses_refused_without_opt_in(addr: str) -> None:
    assert is_special(ip(addr))
    assert check_destination(ip(addr), 443, ()) is not None


@pytest.mark.parametrize("addr", ["8.8.8.8", "1.1.1.1", "2606:4700::1111"])
def test_public_addresses_allowed(addr: str) -> None:
    assert check_destination(ip(addr), 443, ()) is None


def test_allowed_ips_is_explicit_opt_in_and_a_restriction() -> None:
    assert check_destination(ip("10.43.0.5"), 80, (net("10.43.0.0/16"),)) is None
    assert check_destination(ip("::ffff:10.43.0.5"), 80, (net("10.43.0.0/16"),)) is None
    assert check_destination(ip("10.44.0.5"), 80, (net("10.43.0.0/16"),)) is not None
    assert check_destination(ip("8.8.8.8"), 80, (net("10.43.0.0/16"),)) is not None


@pytest.mark.parametrize("addr", ["169.254.169.254", "::ffff:169.254.169.254"])
def test_metadata_always_refused(addr: str) -> None:
    assert check_destination(ip(addr), 80, (net("0.0.0.0/0"), net("::/0"))) is not None


@pytest.mark.parametrize("port", [2379, 2380, 6443, 10250, 10255])
def test_control_plane_ports_always_refused(port: int) -> None:
    assert check_destination(ip("127.0.0.1"), port, (net("127.0.0.0/8"),)) is not None


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("alpha.default.svc", True),
        ("alpha.default.svc.cluster.local", True),
        ("api.example.com", False),
        ("svc", False),
        ("a.b.svc.evil.com", False),
        ("10.0.0.1", False),
    ],
)
def test_cleartext_injection_rule(host: str, ok: bool) -> None:
    assert cleartext_injection_allowed(host) is ok


def test_decide() -> None:
    ep = endpoint("api.example.com", 80)
    ro = endpoint("ro.example.com", 443, access="read-only")
    policy = FakePolicy([ep, ro], [binding(ep)])
    with pytest.raises(ProxyError) as exc:
        decide(policy, method="GET", scheme="http", host="api.example.com", port=80, path="/")
    assert exc.value.code == "policy_denied" and "cleartext" in exc.value.detail
    with pytest.raises(ProxyError) as exc:
        decide(policy, method="POST", scheme="https", host="ro.example.com", port=443, path="/")
    assert exc.value.code == "policy_denied"
    with pytest.raises(ProxyError) as exc:
        decide(policy, method="GET", scheme="https", host="nope.example.com", port=443, path="/")
    assert exc.value.code == "policy_denied"
    d = decide(policy, method="GET", scheme="https", host="ro.example.com", port=443, path="/x")
    assert d.binding is None and d.audit_violation is None


def test_credential_header_rechecks_token68() -> None:
    b = binding(endpoint())
    assert credential_header(b, "abc.DEF-_~+/==") == ("Authorization", "Bearer abc.DEF-_~+/==")
    for bad in ("", "a b", "a\r\nb", "a=b", "tok\x00"):
        with pytest.raises(ProxyError):
            credential_header(b, bad)


def test_credential_headers_memo_checks_every_new_token() -> None:
    """The per-proxy memo answers the same binding and token object from memory; any other
    token (even an equal-looking new object) or binding goes through the check again."""
    b = binding(endpoint())
    headers = CredentialHeaders()
    good = "".join(["abc.", "DEF"])  # built at run time: a fresh object
    first = headers.header(b, good)
    assert first == ("Authorization", "Bearer abc.DEF")
    assert headers.header(b, good) is first  # remembered
    for bad in ("", "a b", "a\r\nb", "a=b", "tok\x00"):
        with pytest.raises(ProxyError):
            headers.header(b, bad)
    assert headers.header(b, good) is first  # a refusal leaves the memo as it was
    other = binding(endpoint(), header="X-Api-Key", style="header")
    assert headers.header(other, good) == ("X-Api-Key", "abc.DEF")
    bad_copy = "".join(["a b"])
    with pytest.raises(ProxyError):
        headers.header(other, bad_copy)


@pytest.mark.parametrize("text", ["::1:0:0", "4000::1", "100:0:0:1::1", "fe00::1", "e000::1"])
def test_ipv6_outside_global_unicast_is_special(text: str) -> None:
    # Python calls some of these is_global; only 2000::/3 is assigned global unicast.
    assert check_destination(ip(text), 443, ()) is not None
    assert check_destination(ip(text), 443, (net(text + "/128"),)) is None  # explicit opt-in
    assert check_destination(ip("2606:4700::1111"), 443, ()) is None


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("::ffff:7f00:1", True),  # IPv4-mapped loopback (normal form) stays on the node
        ("LOCALHOST", False),  # not in the proxy's normal form: refused
        ("localhost.", False),
        ("a" * 300, False),
        (("a" * 64) + ".ns.svc", False),  # not a DNS label
    ],
)
def test_cleartext_rule_is_the_profiles_rule(host: str, ok: bool) -> None:
    from supervisor.profiles.hosts import cleartext_allowed_host

    assert cleartext_injection_allowed(host) is ok
    if ok:
        assert cleartext_allowed_host(host)
