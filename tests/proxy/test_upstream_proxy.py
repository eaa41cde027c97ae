"""The operator's egress proxy (--upstream-proxy): options, routing rules, the CONNECT
exchange, and the proxy server dialing through a recording CONNECT proxy."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import parse_response_head
from supervisor.proxy.upstream import open_upstream
from supervisor.proxy.upstream_proxy import (
    HostRules,
    check_connect_response,
    connect_request,
    parse_host_rules,
    parse_upstream_proxy,
)
from supervisor.settings import SetupError
from tests.proxy.connect_proxy import RecordingConnectProxy
from tests.proxy.harness import SECRET, Env, recv_response
from tests.proxy.tlscerts import make_cert as _cert

# -- options -----------------------------------------------------------------------------


def test_url_forms() -> None:
    p = parse_upstream_proxy("http://proxy.corp:3128")
    assert (p.scheme, p.host, p.port, p.authorization) == ("http", "proxy.corp", 3128, None)
    assert parse_upstream_proxy("https://PROXY.corp.").port == 443
    assert parse_upstream_proxy("http://[::1]:8080").host == "::1"
    assert parse_upstream_proxy("http://10.0.0.1:8080/").display == "http://10.0.0.1:8080"


def test_userinfo_becomes_basic_and_is_never_printed() -> None:
    p = parse_upstream_proxy("http://al%40ice:p%3Ass@proxy.corp:3128")
    assert p.authorization == "Basic " + base64.b64encode(b"al@ice:p:ss").decode()
    for text in (repr(p), str(p), p.display, p.url(), f"{p}"):
        assert "p:ss" not in text and "p%3Ass" not in text and p.authorization not in text
    assert "<redacted>" in repr(p)


def test_auth_file(tmp_path: Path) -> None:
    f = tmp_path / "auth"
    f.write_text("svc:s3cret\n")
    p = parse_upstream_proxy("http://proxy.corp:3128", auth_file=str(f))
    assert p.authorization == "Basic " + base64.b64encode(b"svc:s3cret").decode()
    with pytest.raises(SetupError) as err:
        parse_upstream_proxy("http://u:p@proxy.corp:3128", auth_file=str(f))
    assert err.value.step == "--upstream-proxy-auth-file"
    f.write_text("no-colon\n")
    with pytest.raises(SetupError, match="user:password"):
        parse_upstream_proxy("http://proxy.corp:3128", auth_file=str(f))
    link = tmp_path / "link"
    link.symlink_to(f)
    with pytest.raises(SetupError, match="cannot open"):
        parse_upstream_proxy("http://proxy.corp:3128", auth_file=str(link))
    with pytest.raises(SetupError, match="cannot open"):
        parse_upstream_proxy("http://proxy.corp:3128", auth_file=str(tmp_path / "missing"))


@pytest.mark.parametrize(("url", "reason"), [
    ("socks5://proxy:1080", "scheme"),
    ("proxy.corp:3128", "scheme"),
    ("http://", "no host"),
    ("http://proxy.corp:3128/path", "no path"),
    ("http://proxy.corp:3128?x=1", "no path"),
    ("http://proxy.corp:99999", "not a valid URL"),
    ("http://*.corp:3128", "wildcard"),
    ("http://:pw@proxy.corp:3128", "user name"),
])
def test_bad_urls_name_the_flag(url: str, reason: str) -> None:
    with pytest.raises(SetupError) as err:
        parse_upstream_proxy(url)
    assert err.value.step == "--upstream-proxy"
    assert reason in err.value.reason
    assert "pw" not in str(err.value)


def test_host_rules() -> None:
    rules = parse_host_rules("internal.corp, *.svc.cluster.local .corp 10.0.0.0/8,fd00::/8", "f")
    v4 = ipaddress.ip_address
    assert rules.matches("internal.corp")
    assert rules.matches("a.b.corp") and rules.matches("corp")
    assert not rules.matches("notcorp")
    assert rules.matches("api.svc.cluster.local") and not rules.matches("a.b.svc.cluster.local")
    assert rules.matches("example.com", v4("10.1.2.3"))
    assert not rules.matches("example.com", v4("11.1.2.3"))
    assert rules.matches("10.9.9.9")  # IP-literal host, no address needed
    assert rules.matches("example.com", v4("fd00::1"))
    assert not rules.matches("example.com")
    assert parse_host_rules("*", "f").matches("anything.at.all")
    assert parse_host_rules("", "f").empty and not parse_host_rules("", "f").matches("x")


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "b@d", "a..b", ".*.corp", "x/y", "*.com"])
def test_bad_rule_entries_are_named(entry: str) -> None:
    with pytest.raises(SetupError) as err:
        parse_host_rules(f"ok.corp,{entry}", "--no-upstream-proxy")
    assert err.value.step == "--no-upstream-proxy"


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(st.lists(_LABEL, min_size=1, max_size=4), st.lists(_LABEL, min_size=0, max_size=3))
def test_domain_entry_matches_exactly_the_domain_and_below(domain: list[str], sub: list[str]) -> None:
    rules = parse_host_rules("." + ".".join(domain), "f")
    name = ".".join([*sub, *domain])
    assert rules.matches(name)
    # A name that only ends with the same characters is another domain.
    assert not rules.matches("x" + ".".join(domain))


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=8, max_value=32))
def test_cidr_entry_is_address_membership(value: int, prefix: int) -> None:
    addr = ipaddress.IPv4Address(value)
    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    rules = HostRules(networks=(net,))
    assert rules.matches("name.example", addr)
    outside = ipaddress.IPv4Address((int(net.network_address) - 1) % 2**32)
    assert rules.matches("name.example", outside) == (outside in net)


@given(st.text(max_size=40))
def test_rule_parser_only_raises_setup_errors(text: str) -> None:
    try:
        parse_host_rules(text, "f")
    except SetupError:
        pass


# -- the CONNECT exchange ----------------------------------------------------------------


def test_connect_request_names_the_checked_address() -> None:
    assert connect_request(ipaddress.ip_address("203.0.113.7"), 443, None) == (
        b"CONNECT 203.0.113.7:443 HTTP/1.1\r\nHost: 203.0.113.7:443\r\n\r\n"
    )
    req = connect_request(ipaddress.ip_address("2001:db8::1"), 80, "Basic abc")
    assert req.startswith(b"CONNECT [2001:db8::1]:80 HTTP/1.1\r\n")
    assert b"\r\nProxy-Authorization: Basic abc\r\n" in req


def test_connect_response() -> None:
    check_connect_response(b"HTTP/1.1 200 Connection established\r\n\r\n", "x:1")
    check_connect_response(b"HTTP/1.0 200 OK\r\nVia: squid\r\n\r\n", "x:1")
    with pytest.raises(ProxyError) as err:
        check_connect_response(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", "x:1")
    assert err.value.code == "upstream_unreachable" and err.value.status == 502
    assert "407 Proxy Authentication Required" in err.value.detail
    with pytest.raises(ProxyError, match="invalid answer"):
        check_connect_response(b"SSH-2.0-OpenSSH\r\n\r\n", "x:1")


_status_heads = st.builds(lambda code, reason: b"HTTP/1.1 %d %s\r\n\r\n" % (code, reason),
                          st.integers(100, 999), st.sampled_from([b"OK", b"", b"Connection"]))


@given(st.binary(max_size=200) | _status_heads)
def test_any_answer_is_accepted_or_upstream_unreachable(head: bytes) -> None:
    try:
        check_connect_response(head, "x:1")
    except ProxyError as exc:
        assert exc.code == "upstream_unreachable"
    else:  # accepted: only a well-formed 2xx answer
        assert 200 <= parse_response_head(head).status < 300


def test_bytes_right_behind_the_answer_are_kept() -> None:
    """A server that speaks first: its banner may arrive with the proxy's 200."""

    async def scenario() -> bytes:
        async def fake_proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n\r\n")
            w.write(b"HTTP/1.1 200 OK\r\n\r\nSSH-2.0-banner\r\n")
            await w.drain()
            await asyncio.sleep(0.5)
            w.close()

        server = await asyncio.start_server(fake_proxy, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        via = parse_upstream_proxy(f"http://127.0.0.1:{port}")
        up = await open_upstream(("tcp", "h", 22), ipaddress.ip_address("127.0.0.9"), tls=None,
                                 timeout=5, via=via)
        data = await up.ch.read(100)
        up.close()
        server.close()
        return data

    assert asyncio.run(scenario()) == b"SSH-2.0-banner\r\n"


# -- the proxy server dialing through it -------------------------------------------------


def _get(env: Env, path: str = "/headers") -> tuple[int, dict[str, str], bytes]:
    with env.connect() as s:
        s.sendall(f"GET http://127.0.0.1:{env.upstream.port}{path} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{env.upstream.port}\r\n\r\n".encode())
        return recv_response(s)


def _audit(env: Env) -> list[dict[str, Any]]:
    assert env.audit_path is not None
    env.audit.close()
    return [json.loads(line) for line in Path(env.audit_path).read_text().splitlines()]


def test_plain_http_is_tunnelled_to_the_checked_address(make_env: Any) -> None:
    with RecordingConnectProxy() as proxy:
        env = make_env(upstream_proxy=parse_upstream_proxy(proxy.url))
        status, _, body = _get(env)
        assert status == 200
        assert f"authorization: bearer {SECRET}".lower() in body.decode().lower()
        assert proxy.targets() == [f"127.0.0.1:{env.upstream.port}"]
        assert [s.method for s in proxy.seen] == ["CONNECT"]  # never a forwarded request
        # Keep-alive: the pooled tunnel is reused, no second CONNECT.
        assert _get(env)[0] == 200
        assert len(proxy.seen) == 1


def test_raw_tunnel_goes_through_the_proxy(make_env: Any) -> None:
    with RecordingConnectProxy() as proxy:
        env = make_env(bind=False, upstream_proxy=parse_upstream_proxy(proxy.url))
        a = f"127.0.0.1:{env.upstream.port}"
        with env.connect() as s:
            s.sendall(f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode()
                      + b"GET /headers HTTP/1.1\r\nHost: x\r\n\r\n")
            assert recv_response(s, head_only=True)[0] == 200
            assert recv_response(s)[0] == 200
        assert proxy.targets() == [a]


def test_excluded_destinations_are_dialed_directly(make_env: Any) -> None:
    with RecordingConnectProxy() as proxy:
        for rule in ("127.0.0.0/8", "127.0.0.1", "*"):
            env = make_env(upstream_proxy=parse_upstream_proxy(proxy.url, no_proxy=rule))
            assert _get(env)[0] == 200
        assert proxy.seen == []


def test_credentials_reach_the_proxy_and_no_log(make_env: Any, caplog: Any) -> None:
    expected = "Basic " + base64.b64encode(b"svc:pa55word").decode()
    with RecordingConnectProxy(require_auth=expected) as proxy:
        url = proxy.url.replace("://", "://svc:pa55word@")
        env = make_env(upstream_proxy=parse_upstream_proxy(url))
        assert _get(env)[0] == 200
        assert [s.authorization for s in proxy.seen] == [expected]
        # The upstream never sees the proxy's credentials.
        assert b"pa55word" not in env.upstream.received
        assert expected.encode() not in env.upstream.received
        wrong = make_env(upstream_proxy=parse_upstream_proxy(proxy.url))
        status, hdrs, body = _get(wrong)
        assert status == 502 and hdrs["x-openshell-proxy-error"] == "upstream_unreachable"
        assert "407" in json.loads(body)["detail"]
    for e in (env, wrong):
        text = json.dumps(_audit(e))
        assert "pa55word" not in text and expected not in text
    assert "pa55word" not in caplog.text


@pytest.mark.parametrize("refuse", [403, 407, 502, 503])
def test_refusing_proxy_is_502_with_its_status_in_the_audit(make_env: Any, refuse: int) -> None:
    with RecordingConnectProxy(refuse=refuse) as proxy:
        env = make_env(upstream_proxy=parse_upstream_proxy(proxy.url))
        status, hdrs, body = _get(env)
    assert status == 502 and hdrs["x-openshell-proxy-error"] == "upstream_unreachable"
    assert f"{refuse} Refused By Test" in json.loads(body)["detail"]
    assert env.upstream.requests == 0
    assert env.tokens.calls == 1  # the token came first; nothing was written upstream
    (event,) = [e for e in _audit(env) if e.get("message") == "upstream_unreachable"]
    assert f"refused CONNECT 127.0.0.1:{env.upstream.port}: {refuse}" in event["status_detail"]
    assert event["http_response"]["code"] == 502


def test_silent_and_missing_proxies_are_502(make_env: Any) -> None:
    with RecordingConnectProxy(close_without_answer=True) as proxy:
        env = make_env(upstream_proxy=parse_upstream_proxy(proxy.url))
        status, _, body = _get(env)
        assert status == 502 and "closed before answering" in json.loads(body)["detail"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, not listening: connection refused
        env = make_env(upstream_proxy=parse_upstream_proxy(f"http://127.0.0.1:{dead}"))
        status, _, body = _get(env)
    assert status == 502 and "upstream proxy unreachable" in json.loads(body)["detail"]


def test_https_proxy_is_verified(make_env: Any, tmp_path: Path) -> None:
    ca, ca_key, ca_path, _ = _cert(tmp_path, "proxy-ca", ca=True)
    _, _, leaf, leaf_key = _cert(tmp_path, "proxy", issuer=(ca, ca_key))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(leaf, leaf_key)
    trusting = ssl.create_default_context(cafile=str(ca_path))
    with RecordingConnectProxy(tls=server) as proxy:
        env = make_env(upstream_proxy=parse_upstream_proxy(proxy.url), upstream_proxy_tls=trusting)
        assert _get(env)[0] == 200
        assert proxy.targets() == [f"127.0.0.1:{env.upstream.port}"]
        untrusting = ssl.create_default_context()  # system roots only
        env = make_env(upstream_proxy=parse_upstream_proxy(proxy.url),
                       upstream_proxy_tls=untrusting)
        status, _, body = _get(env)
    assert status == 502
    assert "upstream proxy: certificate verification failed" in json.loads(body)["detail"]


def test_intercepted_https_goes_tls_in_a_tunnel(tmp_path: Path) -> None:
    """TLS to the upstream runs inside the CONNECT tunnel (the proxy sees only ciphertext),
    and its certificate is still checked for the name the agent asked for."""
    from tests.proxy.harness import FakePolicy, FakeTokens, binding, endpoint
    from tests.proxy.test_tunnels import Interceptor
    from tests.proxy.tlscerts import make_pki

    pki = make_pki(tmp_path)
    with RecordingConnectProxy() as proxy:
        env = Env(FakePolicy(), FakeTokens(), str(tmp_path / "audit.jsonl"),
                  upstream_ssl=pki.upstream_client(), interceptor=Interceptor(pki.agent_side),
                  upstream_proxy=parse_upstream_proxy(proxy.url))
        try:
            env.upstream.server.close()  # type: ignore[union-attr]
            env.call(env.upstream.start(pki.upstream_server))
            ep = endpoint("127.0.0.1", env.upstream.port, tls="terminate")
            env.policy.endpoints.append(ep)
            env.policy.bindings.append(binding(ep))
            a = f"127.0.0.1:{env.upstream.port}"
            raw = env.connect()
            raw.sendall(f"CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
            assert recv_response(raw, head_only=True)[0] == 200
            client = ssl.create_default_context(cafile=str(pki.ca_path))
            with client.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(f"GET /headers HTTP/1.1\r\nHost: {a}\r\n\r\n".encode())
                status, _, body = recv_response(s)  # type: ignore[arg-type]
            assert status == 200
            assert f"authorization: bearer {SECRET}".lower() in body.decode().lower()
            assert proxy.targets() == [a]
        finally:
            env.close()
