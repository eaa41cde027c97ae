"""The exchange's pure steps: upstream head, agent response head and keep-alive, CONNECT
decision, tunnel authority, and the context's ``prepare_upstream_request``."""

from __future__ import annotations

import pytest

from supervisor.proxy.channel import Conn
from supervisor.proxy.decision import decide, decide_connect
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.exchange import (
    Exchange,
    Target,
    absolute_target,
    check_tunnel_authority,
    prepare_upstream_request,
)
from supervisor.proxy.http1 import (
    agent_response,
    parse_request_head,
    parse_response_head,
    upstream_request_head,
)
from tests.proxy.harness import FakePolicy, binding, endpoint


def request(text: str, *, origin_ok: bool = False) -> object:
    return parse_request_head(text.encode("latin-1"), origin_ok=origin_ok)


def lines(head: bytes) -> list[str]:
    return head.decode("latin-1").split("\r\n")


def test_upstream_head_drops_proxy_hop_and_agent_credential_adds_one() -> None:
    r = parse_request_head(
        b"POST http://h:8/p?q=1 HTTP/1.1\r\nHost: h:8\r\nAuthorization: mine\r\n"
        b"Proxy-Authorization: x\r\nConnection: X-A\r\nX-A: 1\r\nExpect: 100-continue\r\n"
        b"Content-Length: 3\r\nX-Keep: k\r\n\r\n"
    )
    head = upstream_request_head(r, "h:8", ("Authorization", "Bearer t"))
    got = lines(head)
    assert got[0] == "POST /p?q=1 HTTP/1.1"
    assert got[1:-2] == ["Host: h:8", "X-Keep: k", "Authorization: Bearer t", "Content-Length: 3"]
    assert head.endswith(b"\r\n\r\n")


def test_upstream_head_keeps_expect_it_did_not_answer_and_reframes_chunked() -> None:
    r = parse_request_head(
        b"PUT http://h/p HTTP/1.1\r\nHost: h\r\nExpect: something\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    assert lines(upstream_request_head(r, "h", None))[1:-2] == [
        "Host: h",
        "Expect: something",
        "Transfer-Encoding: chunked",
    ]


def test_upstream_head_upgrade_is_readded_only_when_relayed() -> None:
    r = parse_request_head(
        b"GET http://h/ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: k\r\n\r\n"
    )
    assert lines(upstream_request_head(r, "h", None))[1:-2] == ["Host: h", "Sec-WebSocket-Key: k"]
    assert lines(upstream_request_head(r, "h", None, upgrade="websocket"))[1:-2] == [
        "Host: h",
        "Sec-WebSocket-Key: k",
        "Connection: Upgrade",
        "Upgrade: websocket",
    ]


@pytest.mark.parametrize(
    ("version", "conn", "resp", "keep", "framing"),
    [
        ("HTTP/1.1", "", "Content-Length: 2", True, "Content-Length: 2"),
        ("HTTP/1.1", "Connection: close\r\n", "Content-Length: 2", False, "Content-Length: 2"),
        ("HTTP/1.1", "", "Transfer-Encoding: chunked", True, "Transfer-Encoding: chunked"),
        ("HTTP/1.0", "Connection: keep-alive\r\n", "Transfer-Encoding: chunked", False, None),
        ("HTTP/1.0", "Connection: keep-alive\r\n", "Content-Length: 2", True, "Content-Length: 2"),
        ("HTTP/1.1", "", "X-Nothing: 1", False, None),  # close-delimited
    ],
)
def test_agent_response_keep_alive_table(
    version: str, conn: str, resp: str, keep: bool, framing: str | None
) -> None:
    r = parse_request_head(f"GET http://h/ {version}\r\nHost: h\r\n{conn}\r\n".encode())
    rh = parse_response_head(f"HTTP/1.1 200 OK\r\n{resp}\r\nKeep-Alive: x\r\n\r\n".encode())
    out = agent_response(r, rh)
    got = lines(out.head)
    assert got[0] == "HTTP/1.1 200 OK" and "Keep-Alive: x" not in got
    assert out.keep_alive is keep
    assert (
        (framing in got)
        if framing
        else not any(g.startswith(("Content-Length", "Transfer-Encoding")) for g in got)
    )
    assert ("Connection: close" in got) is (not keep)
    assert ("Connection: keep-alive" in got) is (keep and version == "HTTP/1.0")
    assert out.encode_chunked is (version == "HTTP/1.1")


def test_agent_response_bodiless_statuses() -> None:
    r = parse_request_head(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
    for status, expect in ((204, []), (304, ["Content-Length: 5"]), (404, ["Content-Length: 0"])):
        cl = "Content-Length: 5\r\n" if status == 304 else "Content-Length: 0\r\n"
        out = agent_response(r, parse_response_head(f"HTTP/1.1 {status} X\r\n{cl}\r\n".encode()))
        assert out.mode == "none" and out.keep_alive
        assert [g for g in lines(out.head) if g.startswith("Content-Length")] == expect
    head = parse_request_head(b"HEAD http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
    out = agent_response(head, parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n"))
    assert out.mode == "none" and "Content-Length: 9" in lines(out.head)


def test_upstream_reusable() -> None:
    r = parse_request_head(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n")
    ok = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n")
    assert agent_response(r, ok).upstream_reusable
    eof = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n")  # close-delimited body
    assert not agent_response(r, eof).upstream_reusable
    closing = parse_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n"
    )
    assert not agent_response(r, closing).upstream_reusable


def test_decide_connect() -> None:
    plain = endpoint("tunnel.example", 443)
    ro = endpoint("ro.example", 443, access="read-only")
    cred = endpoint("cred.example", 443)
    skip = endpoint("skip.example", 443, access="read-only", tls="skip")
    paths = endpoint("paths.example", 443, path="/api/**")
    policy = FakePolicy([plain, ro, cred, skip, paths], [binding(cred)])

    def connect(host: str, port: int = 443, can: bool = True) -> object:
        return decide_connect(policy, host=host, port=port, can_intercept=can)

    d = connect("tunnel.example")
    assert not d.intercept and d.endpoint is plain
    for host in ("ro.example", "cred.example", "paths.example"):
        d = connect(host)
        assert d.intercept and d.endpoint is None
    d = connect("skip.example")
    assert not d.intercept and d.endpoint is skip
    assert connect("tunnel.example", can=False).endpoint is plain
    for host, port, can, code in (
        ("cred.example", 443, False, "policy_denied"),
        ("paths.example", 443, False, "policy_denied"),
        ("nope.example", 443, True, "policy_denied"),
        ("tunnel.example", 6443, True, "ssrf_denied"),
    ):
        with pytest.raises(ProxyError) as exc:
            connect(host, port, can)
        assert exc.value.code == code


def test_tunnel_authority() -> None:
    t = Target("https", "h.example", 443)
    check_tunnel_authority(request("GET / HTTP/1.1\r\nHost: h.example\r\n\r\n", origin_ok=True), t)
    check_tunnel_authority(
        request("GET / HTTP/1.1\r\nHost: h.example:443\r\n\r\n", origin_ok=True), t
    )
    for host in ("other.example", "h.example:8443"):
        with pytest.raises(ProxyError) as exc:
            check_tunnel_authority(
                request(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n", origin_ok=True), t
            )
        assert exc.value.code == "request_authority_mismatch"
    r = request("GET http://a.example:81/x HTTP/1.1\r\nHost: a.example:81\r\n\r\n")
    assert absolute_target(r) == Target("http", "a.example", 81)


def test_prepare_upstream_request_from_context() -> None:
    ep = endpoint("127.0.0.1", 80)
    policy = FakePolicy([ep], [binding(ep)])
    r = parse_request_head(
        b"POST http://127.0.0.1/p HTTP/1.1\r\nHost: 127.0.0.1\r\nauthorization: agent\r\n"
        b"AUTHORIZATION: again\r\nContent-Length: 4\r\n\r\n"
    )
    ex = Exchange(Conn.__new__(Conn), r, absolute_target(r), False)
    ex.decision = decide(policy, method="POST", scheme="http", host="127.0.0.1", port=80, path="/p")
    assert ex.binding_id == binding(ep).id and ex.close_on_error
    ex.body_start = b"bo"
    assert prepare_upstream_request(ex).endswith(b"Content-Length: 4\r\n\r\nbo")
    ex.credential = ("Authorization", "Bearer tok")
    out = prepare_upstream_request(ex)
    assert [ln for ln in lines(out) if ln.lower().startswith("authorization")] == [
        "Authorization: Bearer tok"
    ]
