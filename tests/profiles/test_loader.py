from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from supervisor.profiles.diagnostics import Diagnostic, ProfileError
from supervisor.profiles.loader import fingerprint_files, load_profiles
from supervisor.profiles.model import JWT_BEARER, JWT_SPIFFE
from tests.conftest import EXAMPLE_PROFILE
from tests.profiles.helpers import base, errors, fields, grant, load, write

EXAMPLE = EXAMPLE_PROFILE


def test_example_profile_loads_unchanged() -> None:
    ps = load_profiles([str(EXAMPLE)])
    (profile,) = ps.profiles
    assert profile.id == "spiffe-token-demo"
    assert profile.binaries == ("/usr/bin/curl", "/usr/local/bin/curl")
    (cred,) = profile.credentials
    assert cred.auth_style == "bearer" and cred.header_name == "Authorization"
    assert cred.token_grant is not None
    assert cred.token_grant.client_assertion_type == JWT_SPIFFE
    assert cred.token_grant.jwt_svid_audience == "http://token-issuer.default.svc.cluster.local"
    assert [e.host for e in profile.endpoints] == [
        "alpha.default.svc.cluster.local", "beta.default.svc.cluster.local"
    ]
    assert profile.endpoints[0].allowed_ips == (ipaddress.ip_network("10.43.0.0/16"),)
    assert profile.endpoints[0].access == "read-write"


def test_example_expands_to_alpha_and_beta_bindings() -> None:
    ps = load_profiles([str(EXAMPLE)])
    by_id = {b.id: b for b in ps.bindings}
    assert sorted(by_id) == [
        "spiffe-token-demo/access_token@alpha.default.svc.cluster.local:80",
        "spiffe-token-demo/access_token@beta.default.svc.cluster.local:80",
    ]
    alpha = by_id["spiffe-token-demo/access_token@alpha.default.svc.cluster.local:80"]
    beta = by_id["spiffe-token-demo/access_token@beta.default.svc.cluster.local:80"]
    assert (alpha.grant.audience, alpha.grant.scopes) == ("alpha", ("alpha",))
    assert (beta.grant.audience, beta.grant.scopes) == ("beta", ("beta",))
    for b in (alpha, beta):
        assert b.grant.cache_ttl_seconds == 60
        assert b.grant.token_endpoint == "http://token-issuer.default.svc.cluster.local/token"
        assert b.header_value("tok") == "Bearer tok"
    assert ps.table.match_binding("alpha.default.svc.cluster.local", 80, "/") is alpha
    # Nothing to warn about (binaries are enforced, so no "not enforced" line either).
    assert ps.warnings == ()


def test_defaults(tmp_path: Path) -> None:
    ps = load(tmp_path, base())
    (profile,) = ps.profiles
    cred = profile.credentials[0]
    assert (cred.auth_style, cred.header_name, cred.required) == ("bearer", "Authorization", False)
    assert cred.token_grant is not None
    assert cred.token_grant.client_assertion_type == JWT_BEARER
    assert cred.token_grant.jwt_svid_audience == "https://auth.example.com/token"
    assert cred.token_grant.audience == "" and cred.token_grant.scopes == ()
    ep = profile.endpoints[0]
    assert (ep.access, ep.enforcement, ep.protocol) == ("read-only", "enforce", "rest")
    assert ep.path is None
    assert ps.warnings == ()


def test_svid_audience_defaults_to_realm_prefix(tmp_path: Path) -> None:
    url = "https://kc.example.com/realms/demo/protocol/openid-connect/token"
    ps = load(tmp_path, grant(token_endpoint=url))
    tg = ps.profiles[0].credentials[0].token_grant
    assert tg is not None and tg.jwt_svid_audience == "https://kc.example.com/realms/demo"


def test_hosts_normalized_and_ports_list(tmp_path: Path) -> None:
    ps = load(tmp_path, base(credentials=[], endpoints=[
        {"host": "API.Example.COM.", "ports": [443, 8443]},
    ]))
    ep = ps.profiles[0].endpoints[0]
    assert ep.host == "api.example.com" and ep.ports == (443, 8443)


def test_file_with_list_of_profiles(tmp_path: Path) -> None:
    ps = load(tmp_path, [base(id="a"), base(id="b", endpoints=[{"host": "b.example.com",
                                                                "port": 443}])])
    assert [p.id for p in ps.profiles] == ["a", "b"]


def test_profile_without_credentials_is_reachable_only(tmp_path: Path) -> None:
    ps = load(tmp_path, base(credentials=[]))
    assert ps.bindings == ()
    assert ps.table.declares("api.example.com", 443)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("id: [unclosed", "malformed YAML at line"),
        ("", "file is empty"),
        ("42", "expected a profile mapping"),
        ("id: a\nid: b\nendpoints: []\n", "duplicate key 'id'"),
        ("when: 2001-02-30\n", "malformed YAML"),
        ("id: \x07\n", "malformed YAML"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, needle: str) -> None:
    (diag,) = errors(tmp_path, text)
    assert needle in diag.message


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"id: \xff\n")
    with pytest.raises(ProfileError) as info:
        load_profiles([str(bad), str(tmp_path / "missing.yaml")])
    messages = [d.message for d in info.value.errors]
    assert any("UTF-8" in m for m in messages) and any("cannot open" in m for m in messages)


def test_directory_is_not_a_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profiles([str(tmp_path)])


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (base(colour="red"), "colour"),
        (base(credentials=[{"name": "c", "secret": "x"}]), "credentials[0].secret"),
        (grant(client_id="x"), "credentials[0].token_grant.client_id"),
        (grant(audience_overrides=[{"host": "api.example.com", "aud": "x"}]),
         "credentials[0].token_grant.audience_overrides[0].aud"),
        (base(endpoints=[{"host": "a.example.com", "port": 443, "methods": ["GET"]}]),
         "endpoints[0].methods"),
    ],
)
def test_unknown_keys_named_at_every_level(tmp_path: Path, doc: object, field: str) -> None:
    diags = errors(tmp_path, doc)
    assert field in fields(diags)
    key = field.rsplit(".", 1)[-1]
    assert any(f"unknown key {key!r}" in d.message for d in diags)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"endpoints": []}, "[0].id"),
        (base(credentials=[{"description": "x"}]), "credentials[0].name"),
        (grant(token_endpoint=None), "credentials[0].token_grant.token_endpoint"),
        (base(endpoints=[{"port": 443}]), "endpoints[0].host"),
        (base(endpoints=[{"host": "a.example.com"}]), "endpoints[0].port"),
    ],
)
def test_missing_required_fields(tmp_path: Path, doc: object, field: str) -> None:
    diags = errors(tmp_path, [doc])
    assert field in fields(diags), diags


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (base(id=7), "[0].id"),
        (base(credentials="c"), "credentials"),
        (base(credentials=[{"name": "c", "required": "yes"}]), "credentials[0].required"),
        (grant(scopes="a b"), "credentials[0].token_grant.scopes"),
        (grant(cache_ttl_seconds=True), "credentials[0].token_grant.cache_ttl_seconds"),
        (grant(cache_ttl_seconds="60"), "credentials[0].token_grant.cache_ttl_seconds"),
        (base(endpoints=[{"host": "a.example.com", "port": "443"}]), "endpoints[0].port"),
        (base(endpoints=[{"host": "a.example.com", "ports": [443, None]}]),
         "endpoints[0].ports[1]"),
        (base(endpoints=["a.example.com"]), "endpoints[0]"),
    ],
)
def test_wrong_types(tmp_path: Path, doc: object, field: str) -> None:
    diags = errors(tmp_path, [doc])
    assert field in fields(diags), diags
    assert any("expected" in d.message for d in diags)


def test_all_diagnostics_collected(tmp_path: Path) -> None:
    doc = base(colour="red", endpoints=[{"host": "a.example.com", "port": 0}],
               credentials=[{"name": "c", "auth_style": "digest"}])
    diags = errors(tmp_path, doc)
    assert {"colour", "endpoints[0].port", "credentials[0].auth_style"} <= set(fields(diags))


def test_duplicate_profile_ids_across_files(tmp_path: Path) -> None:
    diags = errors(tmp_path, base(), base())
    (diag,) = diags
    assert diag.profile_id == "p" and "duplicate profile id" in diag.message
    assert diag.file.endswith("p1.yaml") and "p0.yaml" in diag.message


def test_duplicate_credential_and_endpoint(tmp_path: Path) -> None:
    doc = base(credentials=[{"name": "c"}, {"name": "c"}],
               endpoints=[{"host": "a.example.com", "port": 443}] * 2)
    diags = errors(tmp_path, doc)
    assert {"credentials[1].name", "endpoints[1]"} <= set(fields(diags))


def test_diagnostic_str_is_one_line(tmp_path: Path) -> None:
    (diag,) = errors(tmp_path, grant(token_endpoint="http://auth.example.com/token"))
    text = str(diag)
    assert "\n" not in text
    assert text.startswith(f"{tmp_path / 'p0.yaml'}: profile 'p': "
                           "credentials[0].token_grant.token_endpoint: must use https")
    assert str(Diagnostic("", None, "binaries", "msg", "warning")) == "binaries: msg"


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    path = write(tmp_path, base())
    first = load_profiles([path]).fingerprint
    assert fingerprint_files([path]) == first
    write(tmp_path, base(description="changed"))
    assert fingerprint_files([path]) != first
    assert load_profiles([path]).fingerprint == fingerprint_files([path])


def test_file_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ProfileError, match="larger than"):
        load_profiles([str(path)])


def test_no_paths_is_an_empty_set() -> None:
    ps = load_profiles([])
    assert ps.profiles == () and ps.table.match_endpoint("a.example.com", 443, "/") is None
