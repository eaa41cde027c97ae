"""Host normalization and the CA's name constraints derived from host patterns."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.proxy.tls_names import (
    Constraints,
    HostError,
    constraints_for,
    excluded_ip_networks,
    parse_host,
    pattern_subtree,
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("API.Example.COM.", "api.example.com"),
        ("my_svc.ns.svc", "my_svc.ns.svc"),
        ("127.0.0.1", ipaddress.IPv4Address("127.0.0.1")),
        ("[::1]", ipaddress.IPv6Address("::1")),
        ("2001:DB8::1", ipaddress.IPv6Address("2001:db8::1")),
    ],
)
def test_parse_host_normalizes(host: str, expected: object) -> None:
    assert parse_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        ".",
        "*.example.com",
        "a..b",
        "-a.com",
        "a-.com",
        "bücher.de",
        "fe80::1%eth0",
        "127.1",  # clients read a numeric last label as IPv4
        "0x7f.0.0.1",
        "a b.com",
        "a/b.com",
        "x" * 64 + ".com",
        ".".join(["a" * 60] * 5),  # > 253 characters
    ],
)
def test_parse_host_rejects(host: str) -> None:
    with pytest.raises(HostError):
        parse_host(host)


@pytest.mark.parametrize(
    ("pattern", "subtree"),
    [
        ("api.example.com", "api.example.com"),
        ("*.example.com", "example.com"),
        ("**.example.com", "example.com"),
        ("api-*.example.com", "example.com"),
        ("a.*.b.example.com", "b.example.com"),
        ("*.ns.svc.cluster.local", "ns.svc.cluster.local"),
        ("10.1.2.3", ipaddress.ip_network("10.1.2.3/32")),
        ("[::1]", ipaddress.ip_network("::1/128")),
        ("*", None),
        ("**", None),
        ("*.*", None),
        ("*.0.0.1", None),  # matches the IP literal 10.0.0.1 too
    ],
)
def test_pattern_subtree(pattern: str, subtree: object) -> None:
    assert pattern_subtree(pattern) == subtree


@pytest.mark.parametrize("pattern", ["*.fe80::1", "*.exa mple.com", "a.*.b..com"])
def test_pattern_subtree_rejects(pattern: str) -> None:
    with pytest.raises(HostError):
        pattern_subtree(pattern)


def test_constraints_drop_covered_names_and_split_ips() -> None:
    c = constraints_for(
        ["api.example.com", "*.example.com", "other.org", "127.0.0.1", "::1", "other.org"]
    )
    assert c == Constraints(
        dns=("example.com", "other.org"),
        ips=(ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")),
    )


def test_one_unanchored_pattern_makes_constraints_impossible() -> None:
    assert constraints_for(["api.example.com", "**"]) is None


def test_covers_subdomains_not_lookalikes() -> None:
    c = constraints_for(["example.com", "10.0.0.1"])
    assert c is not None
    assert c.covers("example.com")
    assert c.covers("a.b.example.com")
    assert not c.covers("badexample.com")
    assert not c.covers("example.com.evil.org")
    assert c.covers(ipaddress.ip_address("10.0.0.1"))
    assert not c.covers(ipaddress.ip_address("10.0.0.2"))


def test_ips_excluded_only_when_none_permitted() -> None:
    assert excluded_ip_networks(()) == (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    assert excluded_ip_networks((ipaddress.ip_network("10.0.0.1/32"),)) == ()


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_names = (
    st.lists(_label, min_size=1, max_size=5)
    .map(".".join)
    .filter(lambda n: not n.rsplit(".", 1)[-1].isdigit())
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_names, st.integers(0, 3), st.sampled_from(["*", "**", "p-*"])),
        min_size=1,
        max_size=6,
    )
)
def test_every_pattern_host_is_covered(specs: list[tuple[str, int, str]]) -> None:
    """Whatever concrete host a pattern matches lies inside the derived constraints."""
    patterns: list[str] = []
    hosts: list[str] = []
    for suffix, wild_labels, wildcard in specs:
        # wild_labels leading wildcard labels before a fixed suffix; 0 = an exact host.
        patterns.append(".".join([wildcard] * wild_labels + [suffix]))
        hosts.append(".".join(["p-x1"] * wild_labels + [suffix]))
    c = constraints_for(patterns)
    assert c is not None
    for host in hosts:
        assert c.covers(parse_host(host)), (patterns, host)
