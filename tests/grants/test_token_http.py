"""The token client's own HTTP/1.1 pieces: the request it writes, how it reads an answer
(framings, interim answers, truncation, caps), and that no third-party HTTP stack loads.
Answers come from a scripted channel (no sockets); the real issuer is in test_http_client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.devenv.token_issuer import TokenIssuer
from supervisor.devenv.workload_api import WorkloadAPIServer
from supervisor.grants import http_client
from supervisor.grants.errors import GrantError
from supervisor.grants.http_client import TokenEndpointClient, parse_target, request_bytes
from supervisor.proxy.channel import Conn

from .conftest import make_binding


class Scripted:
    """A Channel that answers reads from a script of byte strings, then EOF."""

    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)
        self.written = bytearray()

    async def read(self, n: int) -> bytes:
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > n:
            piece, rest = piece[:n], piece[n:]
            self.pieces.insert(0, rest)
        return piece

    def write(self, data: bytes) -> None:
        self.written += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None

    def write_eof(self) -> None:
        return None

    def usable(self) -> bool:
        return True


_clients: dict[int, TokenEndpointClient] = {}


def answer(*pieces: bytes, max_body: int = 64 * 1024) -> tuple[int, bytes]:
    # One client per cap: making one loads the system roots (tens of ms).
    client = _clients.get(max_body)
    if client is None:
        client = _clients[max_body] = TokenEndpointClient(timeout=2, max_body=max_body)
    return asyncio.run(client._response(Conn(Scripted(*pieces))))


OK_JSON = b'{"access_token":"t","token_type":"Bearer","expires_in":60}'


@pytest.mark.parametrize("pieces", [
    [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_JSON), OK_JSON)],
    [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(OK_JSON), OK_JSON[:5], OK_JSON[5:]],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n" + OK_JSON[:5] + b"\r\n",
     b"%x\r\n%s\r\n0\r\n\r\n" % (len(OK_JSON) - 5, OK_JSON[5:])],
    [b"HTTP/1.0 200 OK\r\n\r\n", OK_JSON],  # delimited by the close
    [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
     b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK_JSON), OK_JSON)],
])
def test_framings_give_the_same_body(pieces: list[bytes]) -> None:
    assert answer(*pieces) == (200, OK_JSON)


def test_no_body_statuses() -> None:
    assert answer(b"HTTP/1.1 204 No Content\r\n\r\n") == (204, b"")
    assert answer(b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n") == (400, b"")


def test_redirect_body_is_never_read() -> None:
    # The body would be truncated (a read would fail): a 3xx is answered from its head alone.
    assert answer(b"HTTP/1.1 302 Found\r\nLocation: http://x/\r\nContent-Length: 50\r\n\r\n") \
        == (302, b"")


@pytest.mark.parametrize("pieces,error", [
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], http_client.ResponseTruncated),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"],
     http_client.ResponseTruncated),
    ([b""], http_client.ResponseTruncated),
    ([b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"], http_client.UnexpectedSwitch),
])
def test_broken_answers(pieces: list[bytes], error: type[Exception]) -> None:
    with pytest.raises(error):
        answer(*pieces)


@pytest.mark.parametrize("pieces", [
    [b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n"],
    [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"ffff\r\n" + b"a" * 0xffff,
     b"\r\n10\r\n" + b"b" * 16 + b"\r\n0\r\n\r\n"],
    [b"HTTP/1.0 200 OK\r\n\r\n", b"c" * 40000, b"d" * 40000],
])
def test_body_cap_in_every_framing(pieces: list[bytes]) -> None:
    with pytest.raises(GrantError, match="too large"):
        answer(*pieces)


def test_content_encoding_refused() -> None:
    with pytest.raises(GrantError, match="content encoding"):
        answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nxx")
    assert answer(b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: 2\r\n\r\nxx") \
        == (200, b"xx")


_FIELDS = st.sampled_from([
    b"Content-Length: 5", b"Content-Length: 600", b"Content-Length: x", b"Content-Length: 1, 2",
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"Content-Encoding: gzip",
    b"Connection: close", b"X: y", b"bad header", b"Location: /x",
])
_HEADS = st.builds(
    lambda version, status, fields: b"%s %d R\r\n%s\r\n" % (version, status,
                                                             b"".join(f + b"\r\n" for f in fields)),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0"]), st.integers(100, 999),
    st.lists(_FIELDS, max_size=3))
_CHUNKS = st.sampled_from([b"5\r\nhello\r\n", b"0\r\n\r\n", b"zz\r\n", b"3;x=y\r\nabc\r\n",
                           b"fff\r\n", b"\r\n"])
_ANSWERS = st.one_of(
    st.lists(st.binary(max_size=300), max_size=6),  # anything at all
    st.builds(lambda heads, body: [*heads, *body], st.lists(_HEADS, min_size=1, max_size=3),
              st.lists(st.one_of(_CHUNKS, st.binary(max_size=200)), max_size=5)),
)


@given(_ANSWERS)
@settings(max_examples=400, deadline=None)
def test_any_answer_is_a_response_or_a_named_failure(pieces: list[bytes]) -> None:
    # A hostile issuer's bytes: a (status, body) within the cap, or one of the failures the
    # client turns into a GrantError; nothing else escapes.
    from supervisor.proxy.http1 import ParseError

    try:
        status, body = answer(*pieces, max_body=512)
    except (GrantError, ParseError, http_client._Unusable):
        return
    assert 200 <= status <= 999 and len(body) <= 512


def test_request_head_and_form() -> None:
    target = parse_target("https://issuer.example:8443/realms/a b/token?x=1&y=ä")
    raw = request_bytes(target, {"grant_type": "client_credentials", "scope": "a b"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /realms/a%20b/token?x=1&y=%C3%A4 HTTP/1.1",
        b"Host: issuer.example:8443",
        b"Accept: application/json",
        b"Accept-Encoding: identity",
        b"User-Agent: openshell-supervisor",
        b"Content-Type: application/x-www-form-urlencoded",
        b"Content-Length: %d" % len(body),
        b"Connection: close",
    ]
    assert body == b"grant_type=client_credentials&scope=a+b"


@pytest.mark.parametrize("url,host,port,target,host_field", [
    ("https://a.example/t", "a.example", 443, "/t", "a.example"),
    ("http://127.0.0.1:8080", "127.0.0.1", 8080, "/", "127.0.0.1:8080"),
    ("https://[::1]:8443/t%2Fx?q", "::1", 8443, "/t%2Fx?q", "[::1]:8443"),
    ("https://A.Example:443/T", "a.example", 443, "/T", "a.example"),
])
def test_parse_target(url: str, host: str, port: int, target: str, host_field: str) -> None:
    t = parse_target(url)
    assert (t.host, t.port, t.request_target) == (host, port, target)
    assert f"Host: {host_field}\r\n".encode() in request_bytes(t, {})


@given(st.text(max_size=40), st.text(max_size=20))
def test_request_target_is_always_one_safe_token(path: str, query: str) -> None:
    t = parse_target(f"https://h.example/{path.replace('#', '')}?{query.replace('#', '')}")
    assert t.request_target.startswith("/")
    assert all(0x21 <= ord(c) <= 0x7e for c in t.request_target)  # no space, CTL, non-ASCII


pytest_anyio = pytest.mark.anyio


@pytest_anyio
async def test_a_grant_loads_no_third_party_http_stack(issuer: TokenIssuer,
                                                         workload: WorkloadAPIServer) -> None:
    # A fresh interpreter: this process may have imported httpx for other tests.
    code = """
import asyncio, json, sys
from supervisor.grants.http_client import TokenEndpointClient
from tests.grants.conftest import make_binding
async def main():
    c = TokenEndpointClient(timeout=5)
    try:
        return await c.exchange(make_binding(sys.argv[1]).grant, sys.argv[2])
    finally:
        await c.aclose()
resp = asyncio.run(main())
print(json.dumps({"token": bool(resp.access_token), "modules": sorted(sys.modules)}))
"""
    svid = workload.sign_svid([make_binding(issuer.token_url).grant.jwt_svid_audience])
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code, issuer.token_url, svid],
        capture_output=True, text=True, timeout=60, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["token"] is True
    stacks = {"httpx", "httpcore", "anyio", "h11", "sniffio", "idna", "certifi", "click", "rich"}
    assert [m for m in out["modules"] if m.split(".")[0] in stacks] == []
