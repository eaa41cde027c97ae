from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from supervisor.profiles.loader import load_profiles
from supervisor.profiles.matcher import PolicyTable
from supervisor.profiles.model import Endpoint, Profile
from supervisor.profiles.patterns import (
    canonical_path,
    hosts_overlap,
    parse_host_pattern,
    parse_path_pattern,
)
from tests.profiles.helpers import base, bound, endpoint, load, write


def table(endpoints: list[dict[str, Any]], tmp_path: Path) -> PolicyTable:
    return load(tmp_path, base(credentials=[], endpoints=endpoints)).table


def path_of(ep: Endpoint | None) -> str | None:
    assert ep is not None
    return ep.path


# ---- host patterns ----

@pytest.mark.parametrize(
    ("pattern", "host", "matches"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.Example.com.", True),
        ("api.example.com", "xapi.example.com", False),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "a.b.example.com", False),  # '*' never crosses a dot
        ("*.example.com", "example.com", False),
        ("**.example.com", "a.b.example.com", True),
        ("**.example.com", "api.example.com", True),
        ("**.example.com", "example.com", False),  # one or more labels
        ("api-*.example.com", "api-eu.example.com", True),
        ("api-*.example.com", "api-.example.com", True),
        ("api-*.example.com", "api-eu.x.example.com", False),
        ("a.*.c.example.com", "a.b.c.example.com", True),
        ("a.**.c.example.com", "a.b.b.c.example.com", True),
        ("a.**.c.example.com", "a.c.example.com", False),
    ],
)
def test_host_patterns(pattern: str, host: str, matches: bool, tmp_path: Path) -> None:
    t = table([{"host": pattern, "port": 443}], tmp_path)
    assert t.declares(host, 443) is matches
    assert (t.match_endpoint(host, 443, "/") is not None) is matches
    assert not t.declares(host, 444)


def test_ipv6_hosts_normalized(tmp_path: Path) -> None:
    t = table([{"host": "::1", "port": 8080}], tmp_path)
    assert t.declares("[::1]", 8080) and t.declares("0:0::1", 8080)


# ---- path patterns ----

@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/v1/**", "/v1", True),
        ("/v1/**", "/v1/", True),
        ("/v1/**", "/v1/a/b", True),
        ("/v1/**", "/v1x", False),
        ("/v1/*", "/v1/a", True),
        ("/v1/*", "/v1/a/b", False),
        ("/v1/*.json", "/v1/a.json", True),
        ("/v1/items", "/v1/items", True),
        ("/v1/items", "/v1/items/", False),
        ("/**", "/anything", True),
        ("/v1/**", "/v1/../admin", False),  # dot segments never match a path glob
        ("/v1/**", "/v1//x", False),
        ("/v1/**", "/v1/%2e%2e/admin", False),
        ("/v1/**", "/v1%2fadmin", False),
        ("/admin/**", "/%61dmin/x", True),  # encoded unreserved characters are decoded
        ("/v1/**", "v1", False),
    ],
)
def test_path_patterns(pattern: str, path: str, matches: bool, tmp_path: Path) -> None:
    t = table([{"host": "api.example.com", "port": 443, "path": pattern}], tmp_path)
    assert (t.match_endpoint("api.example.com", 443, path) is not None) is matches
    assert t.declares("api.example.com", 443)  # CONNECT ignores paths


def test_odd_paths_fall_back_to_host_wide_entry(tmp_path: Path) -> None:
    t = table([{"host": "api.example.com", "port": 443, "path": "/v1/admin/**"},
               {"host": "api.example.com", "port": 443}], tmp_path)
    assert path_of(t.match_endpoint("api.example.com", 443, "/v1/admin/x")) == "/v1/admin/**"
    assert path_of(t.match_endpoint("api.example.com", 443, "/v1/x/../admin/x")) is None


# ---- specificity ----

def test_specificity_order(tmp_path: Path) -> None:
    t = table([
        {"host": "api.example.com", "port": 443},
        {"host": "*.example.com", "port": 443},
        {"host": "**.example.com", "port": 443},
        {"host": "**.example.com", "port": 443, "path": "/v1/**"},
        {"host": "*.example.com", "port": 443, "path": "/v1/**"},
        {"host": "api.example.com", "port": 443, "path": "/v1/**"},
        {"host": "api.example.com", "port": 443, "path": "/v1/admin/**"},
    ], tmp_path)
    m = t.match_endpoint
    # Path-specific beats host-only, even a pattern host against an exact host.
    web = endpoint(t, "web.example.com", 443, "/v1/x")
    assert (web.host, web.path) == ("*.example.com", "/v1/**")
    assert endpoint(t, "a.b.example.com", 443, "/v1/x").host == "**.example.com"
    assert endpoint(t, "api.example.com", 443, "/v1/x").host == "api.example.com"
    assert path_of(m("api.example.com", 443, "/v1/admin/x")) == "/v1/admin/**"
    # Host-only: exact > '*' > '**'.
    assert endpoint(t, "api.example.com", 443, "/v2").host == "api.example.com"
    assert endpoint(t, "web.example.com", 443, "/v2").host == "*.example.com"
    assert endpoint(t, "a.b.example.com", 443, "/v2").host == "**.example.com"
    assert m("example.com", 443, "/") is None


def test_path_literal_beats_wildcard(tmp_path: Path) -> None:
    t = table([{"host": "api.example.com", "port": 443, "path": "/v1/*"},
               {"host": "api.example.com", "port": 443, "path": "/v1/items"},
               {"host": "api.example.com", "port": 443, "path": "/v1/**"}], tmp_path)
    assert path_of(t.match_endpoint("api.example.com", 443, "/v1/items")) == "/v1/items"
    assert path_of(t.match_endpoint("api.example.com", 443, "/v1/other")) == "/v1/*"
    assert path_of(t.match_endpoint("api.example.com", 443, "/v1/a/b")) == "/v1/**"


def test_binding_lookup_uses_same_rules(tmp_path: Path) -> None:
    a = base(id="a", endpoints=[{"host": "*.example.com", "port": 443}])
    b = base(id="b", endpoints=[{"host": "api.example.com", "port": 443, "path": "/v1/**"}])
    t = load(tmp_path, a, b).table
    assert bound(t, "api.example.com", 443, "/v1/x").profile_id == "b"
    assert bound(t, "api.example.com", 443, "/v2").profile_id == "a"
    assert t.match_binding("api.example.com", 80, "/v2") is None
    assert t.match_binding("other.test", 443, "/") is None


# ---- properties ----

label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=8)
hostnames = st.lists(label, min_size=2, max_size=5).map(".".join)


@settings(max_examples=60, deadline=None)
@given(hostnames)
def test_literal_pattern_matches_itself(host: str) -> None:
    p = parse_host_pattern(host)
    assert p.matches(host) and hosts_overlap(p, p)


@settings(max_examples=60, deadline=None)
@given(label, st.lists(label, min_size=1, max_size=3), hostnames)
def test_single_star_never_crosses_a_dot(first: str, extra: list[str], suffix: str) -> None:
    pattern = parse_host_pattern(f"*.{suffix}")
    assert pattern.matches(f"{first}.{suffix}")
    assert not pattern.matches(".".join([*extra, first, suffix]))


segment = st.text(string.ascii_lowercase + "*", min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(segment, min_size=1, max_size=3), st.lists(segment, min_size=1, max_size=3),
       st.lists(st.text(string.ascii_lowercase, min_size=0, max_size=3), min_size=1, max_size=4))
def test_path_overlap_agrees_with_witness(a: list[str], b: list[str], probe: list[str]) -> None:
    """If some path matches both globs, the overlap check must say they overlap."""
    from supervisor.profiles.patterns import paths_overlap

    try:  # the strategy also draws invalid globs ('/a**'); the property is about valid ones
        pa, pb = parse_path_pattern("/" + "/".join(a)), parse_path_pattern("/" + "/".join(b))
    except ValueError:
        assume(False)
    path = "/" + "/".join(probe)
    if pa.matches(path) and pb.matches(path):
        assert paths_overlap(pa, pb)


@st.composite
def _glob_matching(draw: st.DrawFn, path: list[str]) -> str:
    """A path glob that matches ``/``+``path`` by construction: each segment kept, made a
    ``*``, or given a ``*`` in place of a prefix or suffix, or the rest made ``/**``."""
    out: list[str] = []
    for seg in path:
        how = draw(st.integers(0, 4))
        if how == 4:
            return "/" + "/".join([*out, "**"])
        cut = draw(st.integers(0, len(seg)))
        out.append([seg, "*", seg[:cut] + "*", "*" + seg[cut:]][how])
    return "/" + "/".join(out)


@settings(max_examples=300, deadline=None)
@given(st.data(), st.lists(st.text(string.ascii_lowercase, min_size=1, max_size=3),
                           min_size=1, max_size=4))
def test_globs_sharing_a_path_always_overlap(data: st.DataObject, path: list[str]) -> None:
    """Two globs built to match the same path must be reported as overlapping (the random
    probe above rarely lands on a path both match; here one always exists)."""
    from supervisor.profiles.patterns import paths_overlap

    witness = "/" + "/".join(path)
    pa = parse_path_pattern(data.draw(_glob_matching(path)))
    pb = parse_path_pattern(data.draw(_glob_matching(path)))
    assert pa.matches(witness) and pb.matches(witness)  # the construction itself
    assert paths_overlap(pa, pb) and paths_overlap(pb, pa)


host_pats = st.sampled_from(["api.example.com", "*.example.com", "**.example.com",
                             "a*.example.com", "api.*.example.com", "web.example.com"])
path_pats = st.sampled_from([None, "/v1/**", "/v1/*", "/v1/admin/**", "/v2", "/**"])
endpoint_docs = st.fixed_dictionaries({"host": host_pats, "port": st.sampled_from([443, 8443]),
                                  "path": path_pats})
requests = st.tuples(st.sampled_from(["api.example.com", "web.example.com", "a.b.example.com",
                                      "abc.example.com", "api.x.example.com", "x.org"]),
                     st.sampled_from([443, 8443]),
                     st.sampled_from(["/", "/v1", "/v1/x", "/v1/admin/y", "/v2", "/v1/../v2"]))


def _profiles(eps: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for i, group in enumerate(eps):
        clean = [{k: v for k, v in e.items() if v is not None} for e in group]
        # Deduplicate within a profile (duplicates are a load error, tested elsewhere);
        # path '/**' is the same as no path to the loader.
        uniq = {repr(sorted((k, v) for k, v in e.items() if (k, v) != ("path", "/**"))): e
                for e in clean}
        out.append(base(id=f"p{i}", credentials=[], endpoints=list(uniq.values())))
    return out


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(endpoint_docs, min_size=1, max_size=4), min_size=1, max_size=4),
       st.lists(requests, min_size=1, max_size=10), st.randoms())
def test_result_independent_of_profile_order(
    tmp_path: Path, groups: list[list[dict[str, Any]]], reqs: list[tuple[str, int, str]],
    rnd: Any,
) -> None:
    docs = _profiles(groups)
    paths = [write(tmp_path, d, f"{d['id']}.yaml") for d in docs]
    shuffled = list(paths)
    rnd.shuffle(shuffled)
    t1, t2 = load_profiles(paths).table, load_profiles(shuffled).table
    for host, port, path in reqs:
        assert t1.match_endpoint(host, port, path) == t2.match_endpoint(host, port, path)
        assert t1.declares(host, port) == t2.declares(host, port)


def test_table_built_directly_from_objects() -> None:
    ep = Endpoint("api.example.com", (443,), None, "rest", "auto", "full", "enforce", ())
    p = Profile("x", "", "", "", (), (ep,), (), "mem")
    t = PolicyTable([p], [])
    assert t.match_endpoint("api.example.com", 443, "/") is ep
    assert t.match_binding("api.example.com", 443, "/") is None


def test_canonical_path() -> None:
    assert canonical_path("/a/%7euser/%41") == "/a/~user/A"
    assert canonical_path("/a/%2F") is None
    assert canonical_path("/a/%zz") is None
    assert canonical_path("/a/%20b") == "/a/%20b"
    assert canonical_path("/a/.hidden") == "/a/.hidden"
    assert canonical_path("/a/./b") is None
    assert canonical_path("*") is None


@pytest.mark.parametrize(
    ("endpoints", "with_grant", "expected"),
    [
        ([{"host": "api.example.com", "port": 443, "access": "full"}], False, False),
        ([{"host": "api.example.com", "port": 443, "access": "full"}], True, True),
        ([{"host": "api.example.com", "port": 443, "access": "read-only"}], False, True),
        ([{"host": "api.example.com", "port": 443, "access": "read-only",
           "enforcement": "audit"}], False, False),
        ([{"host": "api.example.com", "port": 443, "access": "full", "path": "/v1/**"}],
         False, True),  # other paths are undeclared: only visible inside the tunnel
        ([{"host": "*.example.com", "port": 443, "access": "full"},
          {"host": "api.example.com", "port": 443, "access": "read-only", "path": "/a/**"}],
         False, True),
        ([{"host": "*.example.com", "port": 443, "access": "full"},
          {"host": "api.example.com", "port": 443, "access": "full", "path": "/a/**"}],
         False, False),
    ],
)
def test_needs_inspection(endpoints: list[dict[str, Any]], with_grant: bool, expected: bool,
                          tmp_path: Path) -> None:
    doc = base(endpoints=endpoints) if with_grant else base(credentials=[], endpoints=endpoints)
    t = load(tmp_path, doc).table
    assert t.needs_inspection("API.example.com", 443) is expected
