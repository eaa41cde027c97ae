"""Parser differentials an agent could use against the L7 rules (issue 14 review): what the
classifiers judge must be what any upstream reading of the same bytes would run, or the
request is refused."""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.profiles.canonical import query_params
from supervisor.profiles.graphql_ops import classify as classify_graphql
from supervisor.profiles.jsonrpc import classify as classify_jsonrpc
from supervisor.profiles.model import Endpoint, L7Rule, ValueMatcher
from supervisor.profiles.rules import L7Request, judge
from supervisor.proxy.method_override import body_may_override, body_overrides, override_methods

_key = st.text(alphabet="abcmethodnamequery_", min_size=1, max_size=8)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(_key, inner, max_size=3)),
    max_leaves=8,
)


def _with_duplicate(value: object, key: str, a: object, b: object, depth: int,
                    second: str | None = None) -> str:
    """``value`` serialized with one object holding ``key`` twice, ``depth`` levels down
    (with ``second`` as the other key instead: the same text without the duplicate)."""
    text = f"{{{json.dumps(key)}:{json.dumps(a)},{json.dumps(second or key)}:{json.dumps(b)}}}"
    for _ in range(depth):
        text = f'{{"params":{text}}}'
    base = json.dumps(value)
    return text if not isinstance(value, dict) or not value else base[:-1] + ',"x":' + text + "}"


def _envelopes(inner: str) -> tuple[bytes, bytes]:
    """A valid MCP tools/call and a valid GraphQL query carrying ``inner`` (an object)."""
    rpc = ('{"jsonrpc":"2.0","id":1,"method":"tools/call",'
           f'"params":{{"name":"search","arguments":{inner}}}}}')
    return rpc.encode(), f'{{"query":"{{ a }}","variables":{inner}}}'.encode()


@settings(max_examples=300, deadline=None)
@given(_json, _key, _json, _json, st.integers(0, 3))
def test_a_duplicate_key_anywhere_is_never_judged(
    value: object, key: str, a: object, b: object, depth: int
) -> None:
    # Control: the same messages with two distinct keys are judged ('x' is not in _key).
    rpc, gql = _envelopes(_with_duplicate(value, key, a, b, depth, second=key + "x"))
    assert classify_jsonrpc(rpc, mcp=True).error is None
    assert classify_jsonrpc(rpc, mcp=False).error is None
    assert classify_graphql("POST", {}, gql).error is None
    rpc, gql = _envelopes(_with_duplicate(value, key, a, b, depth))
    assert classify_jsonrpc(rpc, mcp=True).error is not None
    assert classify_jsonrpc(rpc, mcp=False).error is not None
    assert classify_graphql("POST", {}, gql).error is not None


_doc = st.sampled_from(["{ a }", "query Q { a }", "mutation M { b }", "subscription { c }"])


@settings(max_examples=200, deadline=None)
@given(_doc, st.sampled_from(["query", "operationName", "variables", "extensions", "id",
                              "documentId", "queryId"]), st.text(max_size=10))
def test_a_graphql_post_never_has_graphql_parameters_in_its_url(
    doc: str, name: str, value: str
) -> None:
    body = json.dumps({"query": doc}).encode()
    assert classify_graphql("POST", {}, body).error is None
    params = query_params(f"{quote(name)}={quote(value)}")
    assert classify_graphql("POST", params, body).error is not None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["query", "mutation", "subscription"]), min_size=2,
                max_size=4))
def test_an_operation_name_naming_several_operations_is_refused(types: list[str]) -> None:
    doc = " ".join(f"{t} A {{ f{i} }}" for i, t in enumerate(types))
    info = classify_graphql("POST", {}, json.dumps({"query": doc, "operationName": "A"})
                            .encode())
    assert info.error is not None


_pname = st.text(alphabet="abxyz_", min_size=1, max_size=5)
_pval = st.text(alphabet="abxyz019-", max_size=5)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_pname, _pval), min_size=1, max_size=6),
       st.lists(st.sampled_from(["&", ";"]), min_size=6, max_size=6))
def test_every_parameter_any_server_reads_is_seen(
    pairs: list[tuple[str, str]], seps: list[str]
) -> None:
    """Whether a server splits on '&' only or on '&' and ';', every (name, value) it reads
    is among the values the matchers see."""
    query = "".join((seps[i] if i else "") + f"{n}={v}" for i, (n, v) in enumerate(pairs))
    seen = query_params(query)
    for part in query.replace(";", "&").split("&"):  # the ';'-splitting reading
        n, _, v = part.partition("=")
        assert v in seen.get(n, []), (query, n, v)
    for part in query.split("&"):  # the '&'-only reading
        n, _, v = part.partition("=")
        assert v in seen.get(n, []), (query, n, v)


_method = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "get", "Delete"])


@settings(max_examples=300, deadline=None)
@given(_method, st.lists(st.tuples(
    st.sampled_from(["X-HTTP-Method-Override", "x-http-method", "X-METHOD-OVERRIDE",
                     "X-Other"]),
    st.lists(_method, min_size=1, max_size=3)), max_size=3),
    st.lists(_method, max_size=2))
def test_every_override_an_upstream_could_honour_is_judged(
    method: str, headers: list[tuple[str, list[str]]], params: list[str]
) -> None:
    hdrs = [(name, " , ".join(values)) for name, values in headers]
    got = override_methods(method, hdrs, {"_method": params} if params else {})
    named = [v for n, vs in headers if n.lower() != "x-other" for v in vs] + params
    assert set(got) == {m.upper() for m in named} - {method.upper()}


_rpc_method = st.sampled_from(["eth_call", "tools/list", "tools/call", "initialize"])


@settings(max_examples=300, deadline=None)
@given(_rpc_method, _rpc_method, st.sampled_from(["jsonrpc", "method", "id", "params"]),
       st.booleans())
def test_a_valid_message_with_a_repeated_key_is_refused(
    first: str, second: str, repeated: str, batch: bool
) -> None:
    """Without the repeat each message is valid: the repeat alone makes it an error."""
    msg = {"jsonrpc": "2.0", "id": 1, "method": first,
           "params": {"name": "search", "arguments": {}}}
    other = {"jsonrpc": "2.0", "id": 2, "method": second,
             "params": {"name": "delete_repo", "arguments": {}}}
    fields = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in msg.items()]
    fields.append(f"{json.dumps(repeated)}:{json.dumps(other[repeated])}")
    text = "{" + ",".join(fields) + "}"
    valid = json.dumps(msg)
    if batch:
        text, valid = f"[{valid},{text}]", f"[{valid},{valid}]"
    assert classify_jsonrpc(valid.encode(), mcp=True).error is None
    assert classify_jsonrpc(text.encode(), mcp=True).error is not None
    assert classify_jsonrpc(text.encode(), mcp=False).error is not None


@settings(max_examples=200, deadline=None)
@given(_doc, _doc, st.sampled_from(["query", "operationName", "extensions"]))
def test_a_graphql_envelope_with_a_repeated_key_is_refused(
    first: str, second: str, repeated: str
) -> None:
    envelope: dict[str, object] = {"query": first, "operationName": None, "extensions": {}}
    fields = [f"{json.dumps(k)}:{json.dumps(v)}" for k, v in envelope.items()]
    again = {"query": second, "operationName": "Q", "extensions": {"x": 1}}[repeated]
    fields.append(f"{json.dumps(repeated)}:{json.dumps(again)}")
    assert classify_graphql("POST", {}, json.dumps(envelope).encode()).error is None
    assert classify_graphql("POST", {}, ("{" + ",".join(fields) + "}").encode()
                            ).error is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_pname, _pval), max_size=4), _method,
       st.sampled_from(["_method", "_%6Dethod", "%5Fmethod", "_metho%64"]),
       st.sampled_from(["", "Content-Type: application/x-www-form-urlencoded"]))
def test_a_form_body_method_field_is_found_however_encoded(
    pairs: list[tuple[str, str]], override: str, name: str, ctype: str
) -> None:
    fields = [f"{n}={v}" for n, v in pairs if n != "_method"] + [f"{name}={override}"]
    body = "&".join(fields).encode()
    headers = [tuple(ctype.split(": "))] if ctype else []
    got = body_overrides("POST", body)
    assert got == ([] if override.upper() == "POST" else [override.upper()])
    assert body_may_override("POST", headers)  # type: ignore[arg-type]


def _rest_ep(deny: tuple[L7Rule, ...], rules: tuple[L7Rule, ...] | None = None) -> Endpoint:
    return Endpoint(host="h.test", ports=(443,), path=None, protocol="rest", tls="auto",
                    access=None if rules else "full", enforcement="enforce",
                    allowed_ips=(), rules=rules, deny_rules=deny)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="abc@-", min_size=1, max_size=4), min_size=2, max_size=5),
       st.data())
def test_a_deny_rule_holds_whether_or_not_the_upstream_decodes_an_encoded_slash(
    segs: list[str], data: st.DataObject
) -> None:
    deny = (L7Rule(method="GET", path="/" + segs[0] + "/**"),)
    seps = [data.draw(st.sampled_from(["/", "%2F"])) for _ in segs[1:]]
    path = "/" + segs[0] + "".join(sep + s for sep, s in zip(seps, segs[1:], strict=True))
    assert not judge([_rest_ep(deny)], L7Request("GET", path)).allowed, path


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="acinot", min_size=1, max_size=6), st.data())
def test_query_deny_names_match_in_any_case(name: str, data: st.DataObject) -> None:
    variant = "".join(c.upper() if data.draw(st.booleans()) else c for c in name)
    deny = (L7Rule(method="*", path="**", query=((name, ValueMatcher(("x",))),)),)
    query = query_params(f"{variant}=x")
    assert not judge([_rest_ep(deny)], L7Request("GET", "/a", query)).allowed
    allow = (L7Rule(method="*", path="**", query=((name, ValueMatcher(("x",))),)),)
    ep = _rest_ep((), allow)
    assert not judge([ep], L7Request("GET", "/a", query_params(f"{name}=x&{variant}=y"))
                     ).allowed
    assert judge([ep], L7Request("GET", "/a", query_params(f"{name}=x&{variant}=x"))).allowed
