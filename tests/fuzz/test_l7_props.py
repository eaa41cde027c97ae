"""Properties of the L7 cores: path canonicalization, rule globs, the allow/deny decision,
and the GraphQL and JSON-RPC/MCP classifiers."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.l7_oracles import check_canonical_path, check_graphql, check_jsonrpc
from supervisor.profiles.canonical import CanonicalError, canonicalize
from supervisor.profiles.globs import compile_path_glob, compile_value_glob
from supervisor.profiles.graphql_ops import classify as classify_graphql
from supervisor.profiles.jsonrpc import classify as classify_jsonrpc
from supervisor.profiles.model import Endpoint, L7Rule
from supervisor.profiles.rules import L7Request, judge

_seg = st.text(alphabet="abcXYZ019-_~@:", min_size=1, max_size=6)
_segs = st.lists(_seg, min_size=1, max_size=5)
_sep = st.sampled_from(["/", "//", "/./", "///", "/x/../"])
_param = st.sampled_from(["", "", ";p=1", ";jsessionid=a;b", ";"])
_methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])


@settings(max_examples=300, deadline=None)
@given(_segs, st.data())
def test_dodges_canonicalize_to_the_clean_path(segs: list[str], data: st.DataObject) -> None:
    clean = "/" + "/".join(segs)
    dodged = "".join(data.draw(_sep) + s + data.draw(_param) for s in segs)
    got = canonicalize(dodged, allow_encoded_slash=False).path
    assert got == clean, (dodged, got)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_canonical_invariants(text: str) -> None:
    check_canonical_path("/" + text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_canonicalize_never_raises_anything_else(data: bytes) -> None:
    try:
        canonicalize("/" + data.decode("latin-1"), allow_encoded_slash=True)
    except CanonicalError:
        pass


@settings(max_examples=300, deadline=None)
@given(_seg, _segs)
def test_star_stays_within_a_segment(prefix: str, middle: list[str]) -> None:
    path = f"/{prefix}/" + "/".join(middle) + "/end"
    one = compile_path_glob(f"/{prefix}/*/end").fullmatch(path) is not None
    assert one == (len(middle) == 1)
    assert compile_path_glob(f"/{prefix}/**/end").fullmatch(path) is not None
    assert compile_path_glob("**").fullmatch(path) is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="abc019", min_size=1, max_size=4), min_size=1, max_size=4))
def test_value_star_stays_between_dots(parts: list[str]) -> None:
    value = ".".join(parts)
    assert (compile_value_glob("*").fullmatch(value) is not None) == (len(parts) == 1)
    assert compile_value_glob("**").fullmatch(value) is not None


def _ep(access: str | None, rules: tuple[L7Rule, ...] | None = None,
        deny: tuple[L7Rule, ...] = (), protocol: str | None = "rest") -> Endpoint:
    return Endpoint(host="h.test", ports=(443,), path=None, protocol=protocol, tls="auto",
                    access=access, enforcement="enforce", allowed_ips=(), rules=rules,  # type: ignore[arg-type]
                    deny_rules=deny)


@settings(max_examples=400, deadline=None)
@given(_methods, _segs, _methods, _segs, st.sampled_from(["read-only", "read-write", "full"]))
def test_deny_beats_any_allow(method: str, segs: list[str], deny_method: str,
                              deny_segs: list[str], access: str) -> None:
    path = "/" + "/".join(segs)
    deny_glob = "/" + "/".join(deny_segs[:1]) + "/**"
    deny = (L7Rule(method=deny_method, path=deny_glob),)
    eps = [_ep(access, deny=deny), _ep("full"), _ep(None, (L7Rule(method="*", path="**"),))]
    v = judge(eps, L7Request(method, path))
    hits = compile_path_glob(deny_glob).fullmatch(path) is not None and (
        method == deny_method or (method == "HEAD" and deny_method == "GET"))
    assert v.allowed == (not hits)


@settings(max_examples=300, deadline=None)
@given(_methods, _segs, st.sampled_from(["read-only", "read-write", "full"]))
def test_l4_entry_never_allows_and_presets_are_method_sets(method: str, segs: list[str],
                                                           access: str) -> None:
    path = "/" + "/".join(segs)
    assert not judge([_ep(None, protocol=None)], L7Request(method, path)).allowed
    allowed = judge([_ep(access), _ep(None, protocol=None)], L7Request(method, path)).allowed
    sets = {"read-only": {"GET", "HEAD", "OPTIONS"},
            "read-write": {"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"}}
    assert allowed == (access == "full" or method in sets[access])


_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["query", "mutation", "subscription", ""]),
       st.lists(_name, min_size=1, max_size=4), st.one_of(st.none(), _name))
def test_graphql_classifier_recovers_type_name_and_root_fields(
    kind: str, fields: list[str], name: str | None
) -> None:
    head = f"{kind} {name or ''}".strip() if kind or name else ""
    if name and not kind:
        head = f"query {name}"
    doc = f"{head} {{ " + " ".join(f"{f} {{ id }}" for f in fields) + " }"
    info = classify_graphql("POST", {}, json.dumps({"query": doc}).encode())
    assert info.error is None, (doc, info)
    (op,) = info.operations
    assert op.operation_type == (kind or "query")
    assert op.operation_name == name
    assert op.fields == tuple(sorted(set(fields)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_graphql_classifier_total(data: bytes) -> None:
    check_graphql(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_jsonrpc_classifier_total(data: bytes) -> None:
    check_jsonrpc(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[a-z]{1,6}(/[a-z]{1,6})?", fullmatch=True),
                          st.one_of(st.none(), _name)), min_size=1, max_size=5))
def test_jsonrpc_batches_recover_every_call(calls: list[tuple[str, str | None]]) -> None:
    msgs = []
    for i, (method, tool) in enumerate(calls):
        if tool is not None:
            msgs.append({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                         "params": {"name": tool}})
        else:
            msgs.append({"jsonrpc": "2.0", "id": i, "method": method})
    info = classify_jsonrpc(json.dumps(msgs).encode(), mcp=True)
    assert info.error is None and info.is_batch
    assert [(c.method, c.tool) for c in info.calls] == [
        ("tools/call", t) if t is not None else (m, None) for m, t in calls]
