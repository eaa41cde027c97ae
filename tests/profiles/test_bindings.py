from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.profiles.helpers import base, bound, errors, fields, grant, load

OV = "credentials[0].token_grant.audience_overrides"


def ids(docs: list[Any], tmp_path: Path) -> list[str]:
    return [b.id for b in load(tmp_path, *docs).bindings]


def test_one_binding_per_endpoint_port_and_grant_credential(tmp_path: Path) -> None:
    doc = base(
        credentials=[
            {"name": "static"},  # no token_grant: no binding
            {"name": "tok", "token_grant": {"token_endpoint": "https://auth.example.com/t",
                                            "audience": "api", "scopes": ["r"]}},
        ],
        endpoints=[{"host": "api.example.com", "ports": [443, 8443], "path": "/v1/**"},
                   {"host": "*.cdn.example.com", "port": 443}],
    )
    ps = load(tmp_path, doc)
    assert [b.id for b in ps.bindings] == [
        "p/tok@*.cdn.example.com:443",
        "p/tok@api.example.com:443/v1/**",
        "p/tok@api.example.com:8443/v1/**",
    ]
    b = ps.bindings[1]
    assert (b.profile_id, b.credential_name, b.port, b.path) == ("p", "tok", 443, "/v1/**")
    assert (b.grant.audience, b.grant.scopes) == ("api", ("r",))
    assert b.grant.token_endpoint == "https://auth.example.com/t"
    assert b.endpoint is ps.profiles[0].endpoints[0]


def test_ipv6_binding_id_is_bracketed(tmp_path: Path) -> None:
    assert ids([base(endpoints=[{"host": "[::1]", "port": 8080}])], tmp_path) == [
        "p/c@[::1]:8080"
    ]


def test_override_replaces_default_on_exact_key(tmp_path: Path) -> None:
    doc = grant(audience="dflt", scopes=["d"], audience_overrides=[
        {"host": "api.example.com", "port": 443, "audience": "special"}])
    (b,) = load(tmp_path, doc).bindings
    assert (b.grant.audience, b.grant.scopes) == ("special", ("d",))  # scopes inherited


def test_override_without_host_applies_to_all_endpoints(tmp_path: Path) -> None:
    doc = grant(audience="dflt", audience_overrides=[{"scopes": ["x"]}])
    doc["endpoints"].append({"host": "b.example.com", "port": 443})
    ps = load(tmp_path, doc)
    assert [(b.grant.audience, b.grant.scopes) for b in ps.bindings] == [("dflt", ("x",))] * 2


def test_override_narrowing_path_adds_specific_binding(tmp_path: Path) -> None:
    doc = grant(audience="dflt", audience_overrides=[{"path": "/admin/**", "audience": "adm"}])
    ps = load(tmp_path, doc)
    assert [b.id for b in ps.bindings] == [
        "p/c@api.example.com:443", "p/c@api.example.com:443/admin/**"
    ]
    assert bound(ps.table, "api.example.com", 443, "/admin/x").grant.audience == "adm"
    assert bound(ps.table, "api.example.com", 443, "/other").grant.audience == "dflt"


def test_override_narrowing_host_pattern(tmp_path: Path) -> None:
    doc = grant(audience="dflt", audience_overrides=[{"host": "eu.api.example.com",
                                                     "audience": "eu"}])
    doc["endpoints"] = [{"host": "*.api.example.com", "port": 443}]
    ps = load(tmp_path, doc)
    assert bound(ps.table, "eu.api.example.com", 443, "/").grant.audience == "eu"
    assert bound(ps.table, "us.api.example.com", 443, "/").grant.audience == "dflt"


def test_override_matching_no_endpoint_is_an_error(tmp_path: Path) -> None:
    for override in ({"host": "other.example.com", "audience": "x"},
                     {"port": 8443, "audience": "x"},
                     # An override may only narrow, never widen a literal endpoint host.
                     {"host": "*.example.com", "audience": "x"}):
        diags = errors(tmp_path, grant(audience_overrides=[override]))
        assert fields(diags) == [f"{OV}[0]"] and "matches no endpoint" in diags[0].message


def test_override_path_outside_endpoint_path_is_an_error(tmp_path: Path) -> None:
    doc = grant(audience_overrides=[{"path": "/v2/x", "audience": "x"}])
    doc["endpoints"][0]["path"] = "/v1/**"
    assert fields(errors(tmp_path, doc)) == [f"{OV}[0]"]
    doc["credentials"][0]["token_grant"]["audience_overrides"][0]["path"] = "/v1/x"
    load(tmp_path, doc)


def test_two_overrides_on_same_key_are_ambiguous(tmp_path: Path) -> None:
    # One names the host, the other inherits it: both land on api.example.com:443.
    doc = grant(audience_overrides=[{"host": "api.example.com", "audience": "a"},
                                    {"port": 443, "audience": "b"}])
    (diag,) = errors(tmp_path, doc)
    assert diag.field == f"{OV}[1]"
    assert "audience_overrides[0]" in diag.message and "p/c@api.example.com:443" in diag.message


def test_override_that_changes_nothing_warns(tmp_path: Path) -> None:
    ps = load(tmp_path, grant(audience_overrides=[{"host": "api.example.com"}]))
    assert [d.field for d in ps.diagnostics] == [f"{OV}[0]"]


def test_ambiguity_across_profiles_names_both(tmp_path: Path) -> None:
    diags = errors(tmp_path, base(id="a"), base(id="b"))
    (diag,) = diags
    assert "a/c@api.example.com:443" in diag.message and "b/c@api.example.com:443" in diag.message


def test_ambiguity_between_patterns_that_overlap(tmp_path: Path) -> None:
    one = base(id="a", endpoints=[{"host": "*.x.example.com", "port": 443}])
    two = base(id="b", endpoints=[{"host": "x.*.example.com", "port": 443}])
    # Same rank and literal length, and x.x.example.com matches both.
    (diag,) = errors(tmp_path, one, two)
    assert "a/c@*.x.example.com:443" in diag.message and "b/c@x.*.example.com:443" in diag.message
    # A longer literal is more specific: no ambiguity, it wins.
    three = base(id="b", endpoints=[{"host": "api.*.example.com", "port": 443}])
    ps = load(tmp_path, one, three)
    assert bound(ps.table, "api.x.example.com", 443, "/").profile_id == "b"
    assert bound(ps.table, "web.x.example.com", 443, "/").profile_id == "a"


def test_ambiguity_between_two_credentials_of_one_profile(tmp_path: Path) -> None:
    doc = base()
    doc["credentials"].append({"name": "d", "token_grant": {"token_endpoint":
                                                           "https://auth.example.com/token"}})
    (diag,) = errors(tmp_path, doc)
    assert "p/c@api.example.com:443" in diag.message and "p/d@api.example.com:443" in diag.message


def test_no_ambiguity_for_more_specific_or_disjoint(tmp_path: Path) -> None:
    a = base(id="a", endpoints=[{"host": "api.example.com", "port": 443, "path": "/v1/**"}])
    b = base(id="b", endpoints=[{"host": "api.example.com", "port": 443, "path": "/v1/admin/**"}])
    c = base(id="c", endpoints=[{"host": "api.example.com", "port": 8443}])  # other port
    d = base(id="d", endpoints=[{"host": "*.example.com", "port": 443}])  # less specific
    e = base(id="e", endpoints=[{"host": "api.example.com", "port": 443, "path": "/v2/**"}])
    ps = load(tmp_path, a, b, c, d, e)
    assert len(ps.bindings) == 5
    assert bound(ps.table, "api.example.com", 443, "/v1/admin/x").profile_id == "b"


def test_equal_path_globs_overlapping_are_ambiguous(tmp_path: Path) -> None:
    a = base(id="a", endpoints=[{"host": "api.example.com", "port": 443, "path": "/v1/a*"}])
    b = base(id="b", endpoints=[{"host": "api.example.com", "port": 443, "path": "/v1/*b"}])
    ok = base(id="c", endpoints=[{"host": "api.example.com", "port": 443, "path": "/v1/*c/"}])
    assert len(errors(tmp_path, a, b)) == 1
    load(tmp_path, a, ok)
