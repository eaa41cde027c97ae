"""Attacks on the L7 rules through the running proxy (issue 14 review): a request the rules
deny must never reach the upstream, whatever form the agent gives it. Each test names the
upstream behaviour it defends against."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.proxy.websocket import OP_CLOSE, OP_TEXT, encode_frame
from tests.proxy.harness import Env, recv_response
from tests.proxy.test_l7_requests import audit_events, forwarded, l7_env, send
from tests.proxy.test_l7_websocket import MASK, _open, ws_policy_env
from tests.proxy.test_websocket import _server_frame

PROFILE = """\
id: attacks
endpoints:
  - host: 127.0.0.1
    port: {port}
    protocol: rest
    access: read-write
    allowed_ips: [127.0.0.0/8]
    deny_rules:
      - {{ method: DELETE, path: "/repos/**" }}
      - {{ method: GET, path: "/files/**", query: {{ action: delete }} }}
  - host: 127.0.0.1
    port: {port}
    path: /git/**
    protocol: rest
    allowed_ips: [127.0.0.0/8]
    rules:
      - allow: {{ method: POST, path: "/git/**/git-upload-pack" }}
      - allow: {{ method: GET, path: "/git/**", query: {{ service: git-upload-pack }} }}
  - host: 127.0.0.1
    port: {port}
    path: /graphql
    protocol: graphql
    access: read-only
    persisted_queries: allow_registered
    graphql_persisted_queries:
      hq: {{ operation_type: query, fields: [viewer] }}
      hm: {{ operation_type: mutation, fields: [deleteRepo] }}
    allowed_ips: [127.0.0.0/8]
  - host: 127.0.0.1
    port: {port}
    path: /rpc
    protocol: json-rpc
    allowed_ips: [127.0.0.0/8]
    rules:
      - allow: {{ method: eth_call }}
  - host: 127.0.0.1
    port: {port}
    path: /mcp
    protocol: mcp
    allowed_ips: [127.0.0.0/8]
    rules:
      - allow: {{ method: tools/call, tool: search }}
  - host: 127.0.0.1
    port: {port}
    path: /repos/audited/**
    protocol: rest
    access: read-only
    enforcement: audit
    allowed_ips: [127.0.0.0/8]
"""

CT = "Content-Type: application/json\r\n"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with l7_env(tmp_path, PROFILE) as e:
        yield e


# ---- method override headers ----
# Rails (Rack::MethodOverride), Express method-override, Symfony/Laravel and Google's
# APIs run a POST as the method a header (or a '_method' parameter) names.


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "X-HTTP-Method",
                                    "X-Method-Override", "x-http-method-override"])
def test_a_method_override_header_is_judged_as_that_method(env: Env, header: str) -> None:
    # Before: POST is allowed (read-write), so 'DELETE /repos/x' went out as a POST.
    assert send(env, "POST", "/repos/x", b"{}", headers=f"{header}: DELETE\r\n")[0] == 403
    assert send(env, "POST", "/repos/x", b"{}", headers=f"{header}: delete\r\n")[0] == 403
    assert send(env, "POST", "/repos/x", b"{}",
                headers=f"{header}: PATCH, DELETE\r\n")[0] == 403
    # An override to a method the rules allow there changes nothing.
    assert send(env, "POST", "/repos/x", b"{}", headers=f"{header}: PUT\r\n")[0] == 200
    assert forwarded(env) == ["POST /repos/x HTTP/1.1"]


def test_method_override_cannot_turn_a_git_fetch_rule_into_something_else(env: Env) -> None:
    target = "/git/o/r.git/git-upload-pack"
    assert send(env, "POST", target, b"0000")[0] == 200
    # Before: the rule 'POST .../git-upload-pack' admitted a POST a server ran as DELETE.
    assert send(env, "POST", target, b"0000",
                headers="X-HTTP-Method-Override: DELETE\r\n")[0] == 403
    assert forwarded(env) == [f"POST {target} HTTP/1.1"]


def test_a_method_parameter_in_the_query_is_judged_as_that_method(env: Env) -> None:
    # Symfony/Laravel (and method-override with a query getter) read '?_method='.
    assert send(env, "POST", "/repos/x?_method=DELETE", b"{}")[0] == 403
    assert send(env, "POST", "/repos/x?_%6Dethod=delete", b"{}")[0] == 403
    assert send(env, "POST", "/repos/x?_method=PUT", b"{}")[0] == 200
    assert forwarded(env) == ["POST /repos/x?_method=PUT HTTP/1.1"]


# ---- JSON parser differentials ----
# Python keeps the last of duplicate keys; other parsers keep the first or refuse.


def test_duplicate_json_rpc_keys_are_refused(env: Env) -> None:
    ok = b'{"jsonrpc":"2.0","id":1,"method":"eth_call"}'
    assert send(env, "POST", "/rpc", ok, headers=CT)[0] == 200
    # Before: judged as eth_call (last key); a first-key parser runs eth_sendTransaction.
    dup = b'{"jsonrpc":"2.0","id":1,"method":"eth_sendTransaction","method":"eth_call"}'
    assert send(env, "POST", "/rpc", dup, headers=CT)[0] == 403
    nested = (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":'
              b'{"name":"delete_repo","name":"search","arguments":{}}}')
    assert send(env, "POST", "/mcp", nested, headers=CT)[0] == 403
    assert forwarded(env) == ["POST /rpc HTTP/1.1"]


def test_duplicate_graphql_keys_are_refused(env: Env) -> None:
    dup = b'{"query":"mutation { deleteRepo(id: 1) { id } }","query":"{ viewer { id } }"}'
    assert send(env, "POST", "/graphql", dup, headers=CT)[0] == 403
    assert forwarded(env) == []


# ---- GraphQL envelope differentials ----


def test_graphql_post_with_a_query_in_the_url_is_refused(env: Env) -> None:
    # express-graphql takes 'query' from the URL before the body, for POST too.
    body = json.dumps({"query": "{ viewer { id } }"}).encode()
    assert send(env, "POST", "/graphql", body, headers=CT)[0] == 200
    for q in ("query=mutation%7BdeleteRepo%7Bid%7D%7D", "operationName=M",
              "%71uery=mutation%7Bx%7D", "extensions=%7B%7D", "id=abc"):
        assert send(env, "POST", f"/graphql?{q}", body, headers=CT)[0] == 403, q
    assert forwarded(env) == ["POST /graphql HTTP/1.1"]


def test_graphql_duplicate_operation_names_are_refused(env: Env) -> None:
    # graphql-js's executor keeps the LAST operation of a name (validation, which rejects
    # the document, is skipped by some servers): judged as the query, run as the mutation.
    doc = "query A { viewer { id } } mutation A { deleteRepo(id: 1) { id } }"
    body = json.dumps({"query": doc, "operationName": "A"}).encode()
    assert send(env, "POST", "/graphql", body, headers=CT)[0] == 403
    assert forwarded(env) == []


# ---- query string separators ----


def test_a_semicolon_separated_parameter_cannot_dodge_a_query_deny_rule(env: Env) -> None:
    # Rack 2 (Rails), Python's parse_qs before 3.9.2 split a query on ';' as well as '&'.
    assert send(env, "GET", "/files/a?action=delete")[0] == 403
    assert send(env, "GET", "/files/a?x=1;action=delete")[0] == 403
    assert send(env, "GET", "/files/a?x=1;action=read")[0] == 200
    assert forwarded(env) == ["GET /files/a?x=1;action=read HTTP/1.1"]


GIT_ONLY = """\
id: git-only
endpoints:
  - host: 127.0.0.1
    port: {port}
    protocol: rest
    allowed_ips: [127.0.0.0/8]
    rules:
      - allow: {{ method: GET, path: "/**/info/refs", query: {{ service: git-upload-pack }} }}
"""


def test_a_semicolon_parameter_cannot_dodge_a_query_allow_rule(tmp_path: Path) -> None:
    with l7_env(tmp_path, GIT_ONLY) as env:
        base = "/o/r.git/info/refs"
        assert send(env, "GET", f"{base}?service=git-upload-pack")[0] == 200
        # Before: '&' alone saw service=git-upload-pack; Rack 2 runs git-receive-pack.
        assert send(env, "GET", f"{base}?service=git-upload-pack&x=1;service=git-receive-pack"
                    )[0] == 403
        assert forwarded(env) == [f"GET {base}?service=git-upload-pack HTTP/1.1"]


# ---- audit beside enforce ----


def test_an_audit_endpoint_does_not_lift_an_enforced_deny_rule(env: Env) -> None:
    # '/repos/audited/**' (audit, most specific) is selected; the host-wide enforce
    # endpoint's deny rule on DELETE /repos/** still holds.
    assert send(env, "GET", "/repos/audited/x")[0] == 200
    assert send(env, "DELETE", "/repos/audited/x")[0] == 403
    assert forwarded(env) == ["GET /repos/audited/x HTTP/1.1"]
    assert not [e for e in audit_events(env) if "violated" in json.dumps(e)]


# ---- attacks that held (regression tests) ----


def test_bodies_the_classifier_cannot_read_fail_closed(env: Env) -> None:
    doc = json.dumps({"query": "{ viewer { id } }"}).encode()
    gz = "Content-Encoding: gzip\r\n" + CT
    assert send(env, "POST", "/graphql", gzip.compress(doc), headers=gz)[0] == 403
    raw = b"mutation { deleteRepo(id: 1) { id } }"
    assert send(env, "POST", "/graphql", raw,
                headers="Content-Type: application/graphql\r\n")[0] == 403
    # A batch mixing allowed and denied operations or calls is denied whole.
    batch = json.dumps([{"query": "{ a }"}, {"query": "mutation { b }"}]).encode()
    assert send(env, "POST", "/graphql", batch, headers=CT)[0] == 403
    rpc = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "eth_call"},
                      {"jsonrpc": "2.0", "method": "eth_sendTransaction"}]).encode()
    assert send(env, "POST", "/rpc", rpc, headers=CT)[0] == 403
    # A fragment spreading mutation fields, an alias: judged by the real root fields.
    frag = json.dumps({"query": "mutation { ...F } fragment F on Mutation { x: deleteRepo }"})
    assert send(env, "POST", "/graphql", frag.encode(), headers=CT)[0] == 403
    # Escapes decode as every JSON parser decodes them: '\u005f' is '_'.
    esc = b'{"jsonrpc":"2.0","id":1,"method":"eth\\u005fcall"}'
    assert send(env, "POST", "/rpc", esc, headers=CT)[0] == 200
    assert forwarded(env) == ["POST /rpc HTTP/1.1"]


def test_a_pipelined_request_after_a_judged_body_is_judged_on_its_own(env: Env) -> None:
    port = env.upstream.port
    body = json.dumps({"query": "{ viewer { id } }"}).encode()
    first = (f"POST http://127.0.0.1:{port}/graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
             f"Content-Type: application/json\r\nExpect: 100-continue\r\n"
             f"Transfer-Encoding: chunked\r\n\r\n").encode()
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    second = (f"DELETE http://127.0.0.1:{port}/repos/x HTTP/1.1\r\n"
              f"Host: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").encode()
    s = env.connect()
    try:
        s.sendall(first + chunk + second)
        final: list[int] = []
        while len(final) < 2:  # 100 Continue answers are skipped
            status = recv_response(s)[0]
            if status >= 200:
                final.append(status)
        assert final == [200, 403]
    finally:
        s.close()
    assert forwarded(env) == ["POST /graphql HTTP/1.1"]


@pytest.mark.parametrize("target", ["/repos/%2e%2e/x", "/repos%2fx", "/repos/x%00",
                                    "/repos\\x", "/repos%5cx", "/x/%2E%2E/repos/y",
                                    "/repos/x#frag"])
def test_path_forms_that_would_be_served_as_another_path_are_refused(
    env: Env, target: str
) -> None:
    assert send(env, "DELETE", target)[0] in (400, 403)
    assert forwarded(env) == []


def test_a_json_rpc_endpoint_judges_every_method_not_only_post(env: Env) -> None:
    # geth (and others) run the body of a PATCH or a GET as JSON-RPC. Before: only POST
    # bodies were classified, so the host-wide read-write endpoint let a PATCH carrying
    # eth_sendTransaction through; as OpenShell, every request's body is judged now.
    call = b'{"jsonrpc":"2.0","id":1,"method":"eth_sendTransaction"}'
    for method in ("PATCH", "PUT", "GET"):
        assert send(env, method, "/rpc", call, headers=CT)[0] == 403, method
        assert send(env, method, "/mcp", call, headers=CT)[0] == 403, method
    assert forwarded(env) == []


def test_a_method_field_in_a_form_body_is_judged_as_that_method(env: Env) -> None:
    # Rails (Rack::MethodOverride) and Symfony read '_method' from a POST's form body.
    # Before: forwarded as the POST read-write allows.
    form = "Content-Type: application/x-www-form-urlencoded\r\n"
    assert send(env, "POST", "/repos/x", b"a=1&_method=DELETE", headers=form)[0] == 403
    assert send(env, "POST", "/repos/x", b"_%6Dethod=delete", headers=form)[0] == 403
    assert send(env, "POST", "/repos/x", b"_method=DELETE")[0] == 403  # Rack: no type = form
    assert send(env, "POST", "/repos/x", b"_method=DELETE", headers=form,
                chunked=True)[0] == 403
    # read-write allows no DELETE anywhere, but PATCH; harmless forms go through.
    assert send(env, "POST", "/other/x", b"_method=DELETE", headers=form)[0] == 403
    assert send(env, "POST", "/other/x", b"_method=PATCH", headers=form)[0] == 200
    assert send(env, "POST", "/repos/x", b"a=1&_method=PUT", headers=form)[0] == 200
    assert send(env, "POST", "/repos/x", b"a=1", headers=form, chunked=True)[0] == 200
    assert forwarded(env) == ["POST /other/x HTTP/1.1", "POST /repos/x HTTP/1.1",
                              "POST /repos/x HTTP/1.1"]
    got = env.upstream.received  # heads: the judged bodies went out with their length
    assert b"Content-Length: 15\r\n" in got and got.endswith(b"Content-Length: 3\r\n\r\n")


def test_a_graphql_get_with_a_body_is_refused(env: Env) -> None:
    # express-graphql reads a parameter missing from the URL from the body, GET included:
    # '?id=<saved query>' judged, the body's document run. Before: the body went unjudged.
    body = json.dumps({"query": "{ secrets { value } }"}).encode()
    assert send(env, "GET", "/graphql?query=%7Bviewer%7Bid%7D%7D")[0] == 200
    assert send(env, "GET", "/graphql?query=%7Bviewer%7Bid%7D%7D", body, headers=CT)[0] == 403
    assert send(env, "GET", "/graphql?query=%7Bviewer%7Bid%7D%7D", body, headers=CT,
                chunked=True)[0] == 403
    assert forwarded(env) == ["GET /graphql?query=%7Bviewer%7Bid%7D%7D HTTP/1.1"]


NPM = """\
id: npm
endpoints:
  - host: 127.0.0.1
    port: {port}
    protocol: rest
    access: read-only
    allow_encoded_slash: true
    allowed_ips: [127.0.0.0/8]
    deny_rules:
      - {{ method: GET, path: "/@evil/**" }}
      - {{ method: GET, path: "/files/**", query: {{ action: delete }} }}
"""


def test_an_encoded_slash_cannot_dodge_a_deny_rule(tmp_path: Path) -> None:
    # With allow_encoded_slash, '/@evil%2Fpkg' is one segment to the rules, but nginx and
    # many routers decode %2F before routing: the deny rule on '/@evil/**' must hold.
    with l7_env(tmp_path, NPM) as env:
        assert send(env, "GET", "/@types%2Fnode")[0] == 200
        assert send(env, "GET", "/@evil/pkg")[0] == 403
        assert send(env, "GET", "/@evil%2Fpkg")[0] == 403
        assert send(env, "GET", "/@evil%2fpkg/-/pkg-1.0.0.tgz")[0] == 403
        assert forwarded(env) == ["GET /@types%2Fnode HTTP/1.1"]


def test_a_case_variant_query_name_cannot_dodge_a_deny_rule(tmp_path: Path) -> None:
    # ASP.NET and PHP-on-IIS-style frameworks read query names case-insensitively, as
    # deny-rule paths already match ('/ADMIN' on a case-folding server).
    with l7_env(tmp_path, NPM) as env:
        assert send(env, "GET", "/files/a?action=read")[0] == 200
        for q in ("action=delete", "ACTION=delete", "Action=delete", "x=1&aCtIoN=delete"):
            assert send(env, "GET", f"/files/a?{q}")[0] == 403, q
        assert forwarded(env) == ["GET /files/a?action=read HTTP/1.1"]


def test_a_case_variant_query_name_cannot_dodge_a_query_allow_rule(tmp_path: Path) -> None:
    # ASP.NET joins 'service' and 'SERVICE' into one value: every case variant must match.
    with l7_env(tmp_path, GIT_ONLY) as env:
        base = "/o/r.git/info/refs"
        assert send(env, "GET", f"{base}?service=git-upload-pack&SERVICE=git-receive-pack"
                    )[0] == 403
        assert send(env, "GET", f"{base}?SERVICE=git-upload-pack&service=git-upload-pack"
                    )[0] == 200
        assert send(env, "GET", f"{base}?SERVICE=git-upload-pack")[0] == 403  # exact needed
        assert forwarded(env) == [
            f"GET {base}?SERVICE=git-upload-pack&service=git-upload-pack HTTP/1.1"]


def test_a_document_cannot_cover_for_a_persisted_identifier(env: Env) -> None:
    # Servers with a persisted-operation store (GraphQL Yoga, Hot Chocolate) run the
    # stored document an identifier names, whatever 'query' says. Before: a request with
    # both was judged by its document alone.
    def post(doc: dict[str, object]) -> int:
        return send(env, "POST", "/graphql", json.dumps(doc).encode(), headers=CT)[0]

    q = "{ viewer { id } }"
    assert post({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "hq"}}}) == 200
    assert post({"query": q, "extensions": {"persistedQuery": {"sha256Hash": "hq"}}}) == 200
    assert post({"query": q, "extensions": {"persistedQuery": {"sha256Hash": "hm"}}}) == 403
    assert post({"query": q, "extensions": {"persistedQuery": {"sha256Hash": "zz"}}}) == 403
    assert post({"query": q, "id": "hm"}) == 403
    assert post({"query": q, "documentId": "other"}) == 403
    assert send(env, "GET", "/graphql?query=%7Bviewer%7Bid%7D%7D&id=hm")[0] == 403
    assert forwarded(env) == ["POST /graphql HTTP/1.1"] * 2


WS_AUDIT = """\
id: ws-audit
endpoints:
  - host: 127.0.0.1
    port: {port}
    path: /rw/**
    protocol: websocket
    access: read-write
    allowed_ips: [127.0.0.0/8]
    deny_rules:
      - {{ method: WEBSOCKET_TEXT, path: "/rw/admin/**" }}
  - host: 127.0.0.1
    port: {port}
    path: /rw/admin/**
    protocol: websocket
    access: read-only
    enforcement: audit
    allowed_ips: [127.0.0.0/8]
"""


def test_an_audit_endpoint_does_not_lift_an_enforced_websocket_text_denial(
    tmp_path: Path,
) -> None:
    # The audit endpoint on /rw/admin/** is selected (most specific); the enforce
    # endpoint's deny rule on text messages there must still close the connection.
    with ws_policy_env(tmp_path, WS_AUDIT) as (env, ws):
        s, buf = _open(env, ws.port, "/rw/admin/x")
        with s:
            s.sendall(encode_frame(OP_TEXT, b"drop table", mask=MASK))
            op, payload = _server_frame(s, buf)
            assert op == OP_CLOSE and payload[:2] == struct.pack("!H", 1008)
