from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.profiles.model import JWT_SPIFFE
from supervisor.profiles.validation import check_header_name, check_token_endpoint
from tests.profiles.helpers import base, endpoint, errors, fields, grant, load, warnings

TE = "credentials[0].token_grant.token_endpoint"


@pytest.mark.parametrize(
    "url",
    [
        "https://auth.example.com/token",
        "http://127.0.0.1:8080/token",
        "http://127.9.9.9/token",
        "http://localhost/token",
        "http://[::1]:8080/token",
        "http://token-issuer.default.svc/token",
        "http://token-issuer.default.svc.cluster.local/token",
        "https://auth.example.com/token?tenant=a",
    ],
)
def test_token_endpoint_accepted(url: str, tmp_path: Path) -> None:
    assert check_token_endpoint(url) is None
    load(tmp_path, grant(token_endpoint=url))


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://auth.example.com/token", "must use https"),
        ("http://token-issuer.default.svc.evil.com/token", "must use https"),
        ("http://a.b.default.svc/token", "must use https"),
        ("http://127.1/token", "must use https"),
        ("ftp://auth.example.com/token", "absolute https"),
        ("/token", "absolute https"),
        ("auth.example.com/token", "absolute https"),
        ("https://user:pw@auth.example.com/token", "user information"),
        ("https://auth.example.com/token#frag", "fragment"),
        ("https://auth.example.com:99999/token", "invalid port"),
        ("https://auth.example.com/to ken", "whitespace"),
        ("https://*.example.com/token", "pattern"),
        ("https://[::1/token", "not a valid URL"),
        ("https://[zz]/token", "not a valid URL"),
    ],
)
def test_token_endpoint_rejected(url: str, reason: str, tmp_path: Path) -> None:
    message = check_token_endpoint(url)
    assert message is not None and reason in message
    diags = errors(tmp_path, grant(token_endpoint=url))
    assert fields(diags) == [TE]


@pytest.mark.parametrize("name", ["Authorization", "X-Api-Key", "x_token", "X-Auth~1"])
def test_header_name_accepted(name: str, tmp_path: Path) -> None:
    assert check_header_name(name) is None
    doc = base()
    doc["credentials"][0].update(auth_style="header", header_name=name)
    load(tmp_path, doc)


@pytest.mark.parametrize(
    "name",
    ["Host", "content-length", "Transfer-Encoding", "CONNECTION", "Proxy-Authorization",
     "te", "Upgrade", "keep-alive", "Trailer", "proxy-connection",
     "X Token", "X-Token:", "", "Tøken", "X-Token\r\nEvil"],
)
def test_header_name_rejected(name: str, tmp_path: Path) -> None:
    doc = base()
    doc["credentials"][0]["header_name"] = name
    assert fields(errors(tmp_path, doc)) == ["credentials[0].header_name"]


def test_auth_style(tmp_path: Path) -> None:
    doc = base()
    doc["credentials"][0]["auth_style"] = "basic"
    assert fields(errors(tmp_path, doc)) == ["credentials[0].auth_style"]
    doc["credentials"][0]["auth_style"] = "bearer"
    load(tmp_path, doc)


def test_header_style_needs_header_name(tmp_path: Path) -> None:
    doc = base()
    doc["credentials"][0]["auth_style"] = "header"
    assert fields(errors(tmp_path, doc)) == ["credentials[0].header_name"]
    doc["credentials"][0]["header_name"] = "X-Api-Key"
    (b,) = load(tmp_path, doc).bindings
    assert (b.header_name, b.header_value("t")) == ("X-Api-Key", "t")


def test_client_assertion_type(tmp_path: Path) -> None:
    assert fields(errors(tmp_path, grant(client_assertion_type="urn:x"))) == [
        "credentials[0].token_grant.client_assertion_type"
    ]
    load(tmp_path, grant(client_assertion_type=JWT_SPIFFE))


@pytest.mark.parametrize("scope", ["a b", "", 'a"b', "a\\b", "a\tb"])
def test_scopes_rejected(scope: str, tmp_path: Path) -> None:
    assert fields(errors(tmp_path, grant(scopes=["ok", scope]))) == [
        "credentials[0].token_grant.scopes[1]"
    ]


def test_scopes_accepted(tmp_path: Path) -> None:
    (b,) = load(tmp_path, grant(scopes=["read:all", "api://x/.default"])).bindings
    assert b.grant.scopes == ("read:all", "api://x/.default")


@pytest.mark.parametrize("ttl", [0, -5, 1.5])
def test_cache_ttl_rejected(ttl: object, tmp_path: Path) -> None:
    assert fields(errors(tmp_path, grant(cache_ttl_seconds=ttl))) == [
        "credentials[0].token_grant.cache_ttl_seconds"
    ]


def test_cache_ttl_accepted(tmp_path: Path) -> None:
    (b,) = load(tmp_path, grant(cache_ttl_seconds=30)).bindings
    assert b.grant.cache_ttl_seconds == 30


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"host": "a.example.com", "port": 0}, "endpoints[0].port"),
        ({"host": "a.example.com", "port": 65536}, "endpoints[0].port"),
        ({"host": "a.example.com", "ports": [443, 70000]}, "endpoints[0].ports[1]"),
        ({"host": "a.example.com", "ports": [443, 443]}, "endpoints[0].ports[1]"),
        ({"host": "a.example.com", "ports": []}, "endpoints[0].ports"),
        ({"host": "a.example.com", "port": 1, "ports": [2]}, "endpoints[0].ports"),
        ({"host": "a.example.com", "port": 443, "access": "write"}, "endpoints[0].access"),
        ({"host": "a.example.com", "port": 443, "enforcement": "warn"}, "endpoints[0].enforcement"),
        ({"host": "a.example.com", "port": 443, "protocol": "grpc"}, "endpoints[0].protocol"),
        ({"host": "a.example.com", "port": 443, "allowed_ips": ["10.0.0.1/8"]},
         "endpoints[0].allowed_ips[0]"),
        ({"host": "a.example.com", "port": 443, "allowed_ips": ["nope"]},
         "endpoints[0].allowed_ips[0]"),
        ({"host": "*.com", "port": 443}, "endpoints[0].host"),
        ({"host": "a.**x.example.com", "port": 443}, "endpoints[0].host"),
        ({"host": "a..example.com", "port": 443}, "endpoints[0].host"),
        ({"host": "a/b.example.com", "port": 443}, "endpoints[0].host"),
        ({"host": "a.example.com", "port": 443, "path": "v1"}, "endpoints[0].path"),
        ({"host": "a.example.com", "port": 443, "path": "/a/**/b"}, "endpoints[0].path"),
        ({"host": "a.example.com", "port": 443, "path": "/a/../b"}, "endpoints[0].path"),
        ({"host": "a.example.com", "port": 443, "path": "/a?x=1"}, "endpoints[0].path"),
    ],
)
def test_endpoint_fields_rejected(endpoint: dict[str, object], field: str, tmp_path: Path) -> None:
    assert field in fields(errors(tmp_path, base(credentials=[], endpoints=[endpoint])))


def test_endpoint_fields_accepted(tmp_path: Path) -> None:
    ep = {"host": "*.api.example.com", "ports": [1, 65535], "path": "/v1/*/items/**",
          "access": "full", "enforcement": "audit", "tls": "SKIP",
          "allowed_ips": ["10.0.0.0/8", "::1/128", "127.0.0.1"]}
    (profile,) = load(tmp_path, base(credentials=[], endpoints=[ep])).profiles
    assert profile.endpoints[0].tls == "skip"
    assert len(profile.endpoints[0].allowed_ips) == 3


def test_tls_skip_with_token_grant_is_an_error(tmp_path: Path) -> None:
    doc = base(endpoints=[{"host": "api.example.com", "port": 443, "tls": "skip"}])
    (diag,) = errors(tmp_path, doc)
    assert diag.field == "endpoints[0].tls" and "raw tunnel" in diag.message
    # Without a token grant the same endpoint is fine.
    doc["credentials"] = [{"name": "static"}]
    load(tmp_path, doc)


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"host": "etcd.example.com", "ports": [443, 2379]}, "endpoints[0].ports"),
        ({"host": "k8s.example.com", "port": 6443}, "endpoints[0].ports"),
        ({"host": "169.254.169.254", "port": 443}, "endpoints[0].host"),
    ],
)
def test_control_plane_destinations_warn(endpoint: dict[str, object], field: str,
                                         tmp_path: Path) -> None:
    (diag,) = warnings(tmp_path, base(credentials=[], endpoints=[endpoint]))
    assert diag.field == field and "always refused" in diag.message
    assert warnings(tmp_path, base(credentials=[])) == []


def test_cleartext_binding_warns_for_public_host(tmp_path: Path) -> None:
    doc = base(endpoints=[{"host": "api.example.com", "ports": [80, 443]}])
    (diag,) = warnings(tmp_path, doc)
    assert diag.severity == "warning" and "cleartext" in diag.message
    assert "p/c@api.example.com:80" in diag.message


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "api.default.svc", "api.ns.svc.cluster.local",
             "*.ns.svc.cluster.local"]
)
def test_cleartext_binding_fine_for_local_hosts(host: str, tmp_path: Path) -> None:
    assert warnings(tmp_path, base(endpoints=[{"host": host, "port": 80}])) == []


def test_binaries_validated_and_copied_onto_the_endpoints(tmp_path: Path) -> None:
    assert fields(errors(tmp_path, base(binaries=["/usr/bin/curl", "curl", "/a/../b"]))) == [
        "binaries[1]", "binaries[2]"
    ]
    ps = load(tmp_path, base(binaries=["/usr/bin/curl"]),
              base(id="q", credentials=[], binaries=["/bin/sh"],
                   endpoints=[{"host": "q.example.com", "port": 443}]))
    assert [w for w in ps.warnings if "binaries" in w] == []  # enforced now: no warning
    assert ps.profiles[0].binaries == ("/usr/bin/curl",)
    assert all(e.binaries is not None and "/usr/bin/curl" in e.binaries
               for e in ps.profiles[0].endpoints)
    assert ps.profiles[1].endpoints[0].binaries == ("/bin/sh", "/usr/bin/dash")  # resolved


def test_identifiers_rejected(tmp_path: Path) -> None:
    assert "[0].id" in fields(errors(tmp_path, [base(id="a/b")]))
    doc = base()
    doc["credentials"][0]["name"] = "c@d"
    assert fields(errors(tmp_path, doc)) == ["credentials[0].name"]


def test_equal_endpoints_with_different_settings_warn(tmp_path: Path) -> None:
    a = base(id="a", credentials=[], endpoints=[{"host": "api.example.com", "port": 443,
                                                  "tls": "skip"}])
    b = base(id="b", credentials=[], endpoints=[{"host": "api.example.com", "port": 443}])
    ps = load(tmp_path, b, a)
    (diag,) = ps.diagnostics
    assert diag.profile_id == "b" and "profile 'a'" in diag.message
    assert endpoint(ps.table, "api.example.com", 443, "/").tls == "skip"
    same = base(id="c", credentials=[], endpoints=[{"host": "api.example.com", "port": 443}])
    assert warnings(tmp_path, b, same) == []
    # Different access/rules are combined (ARCHITECTURE.md 4.2), not a conflict.
    rules = base(id="d", credentials=[], endpoints=[{"host": "api.example.com", "port": 443,
                                                      "protocol": "rest", "access": "full"}])
    assert warnings(tmp_path, b, rules) == []


@pytest.mark.parametrize(
    ("skip_host", "skip_id", "cred_path"),
    [
        ("api.example.com", "a-tunnel", None),  # sorts before 'p': wins the tie at "/"
        ("api.example.com", "z-tunnel", "/v1/**"),  # credential on paths only: "/" is the skip's
        ("*.example.com", "z-tunnel", "/v1/**"),
        ("**.example.com", "a-tunnel", None),
    ],
)
def test_tls_skip_in_another_profile_over_a_credentialed_host_is_an_error(
    tmp_path: Path, skip_host: str, skip_id: str, cred_path: str | None
) -> None:
    """Issue 12 item 9: another profile's host-wide ``tls: skip`` decided the CONNECT
    (matched at "/") and made a credentialed host a raw tunnel: its binding and rules
    silently gone. Now an ambiguity error naming both."""
    cred_ep: dict[str, object] = {"host": "api.example.com", "port": 443}
    if cred_path is not None:
        cred_ep["path"] = cred_path
    creds = base(endpoints=[cred_ep])
    skipper = base(id=skip_id, credentials=[],
                   endpoints=[{"host": skip_host, "port": 443, "tls": "skip"}])
    diags = [d for d in errors(tmp_path, creds, skipper) if "tls: skip" in d.message]
    assert len(diags) == 1, diags
    (diag,) = diags
    assert (diag.profile_id, diag.field) == (skip_id, "endpoints[0].tls")
    assert f"p/c@api.example.com:443{cred_path or ''}" in diag.message  # the binding, named
    assert "profile 'p'" in diag.message and "raw tunnel" in diag.message


@pytest.mark.parametrize(
    "skip_ep",
    [
        {"host": "other.example.com", "port": 443, "tls": "skip"},
        {"host": "api.example.com", "port": 8443, "tls": "skip"},
        {"host": "*.api.example.com", "port": 443, "tls": "skip"},
    ],
)
def test_tls_skip_beside_a_credentialed_host_elsewhere_is_fine(
    tmp_path: Path, skip_ep: dict[str, object]
) -> None:
    load(tmp_path, base(), base(id="tunnel", credentials=[], endpoints=[skip_ep]))


@pytest.mark.parametrize(
    ("nets", "named"),
    [
        (["0.0.0.0/0"], ["loopback", "private", "link-local"]),
        (["::/0"], ["loopback", "private", "link-local", "IPv4-mapped"]),
        (["0.0.0.0/1"], ["loopback", "private"]),
        (["10.0.0.0/7"], ["private"]),
        (["8.8.8.0/24", "160.0.0.0/3"], ["private", "link-local"]),
    ],
)
def test_allowed_ips_wider_than_any_special_range_warns(
    tmp_path: Path, nets: list[str], named: list[str]
) -> None:
    """Issue 12 item 11: 'allowed_ips: [0.0.0.0/0]' silently opened loopback, private and
    link-local space (the only opt-in to them). Warn at load, naming what it opens."""
    ep = {"host": "api.example.com", "port": 443, "allowed_ips": nets}
    diags = [d for d in warnings(tmp_path, base(credentials=[], endpoints=[ep]))
             if d.field == "endpoints[0].allowed_ips" and "metadata" not in d.message]
    assert len(diags) == 1, diags
    for what in named:
        assert what in diags[0].message
    assert nets[-1] in diags[0].message


@pytest.mark.parametrize(
    "nets", [["10.43.0.0/16"], ["10.0.0.0/8"], ["127.0.0.1"], ["8.8.8.0/24"], ["fd00::/8"],
             ["192.168.1.0/24", "::1/128"]],
)
def test_allowed_ips_inside_one_range_or_public_does_not_warn(
    tmp_path: Path, nets: list[str]
) -> None:
    ep = {"host": "api.example.com", "port": 443, "allowed_ips": nets}
    assert warnings(tmp_path, base(credentials=[], endpoints=[ep])) == []
