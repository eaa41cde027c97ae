"""Sans-IO parser: rules, chunked decoder, and hypothesis fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.proxy.http1 import (
    MAX_HEAD,
    ChunkedDecoder,
    ParseError,
    find_head_end,
    forwardable,
    parse_request_head,
    parse_response_head,
    response_body_mode,
    serialize_head,
)


def req(text: str, **kw: bool) -> object:
    return parse_request_head(text.encode("latin-1"), **kw)


def test_absolute_form_parsed() -> None:
    r = parse_request_head(
        b"GET http://API.Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: api.example.com:8080\r\n\r\n"
    )
    assert (r.host, r.port, r.path, r.query, r.scheme) == (
        "api.example.com",
        8080,
        "/a/b",
        "?x=1",
        "http",
    )
    assert r.keep_alive and not r.has_body


def test_default_port_agreement_and_ipv6() -> None:
    r = parse_request_head(b"GET http://h.test/ HTTP/1.1\r\nHost: h.test:80\r\n\r\n")
    assert r.port is None
    r = parse_request_head(b"GET http://[::1]:81/ HTTP/1.1\r\nHost: [::1]:81\r\n\r\n")
    assert (r.host, r.port) == ("::1", 81)


def test_connect_authority_form() -> None:
    r = parse_request_head(b"CONNECT h.test:443 HTTP/1.1\r\nHost: h.test:443\r\n\r\n")
    assert (r.form, r.host, r.port) == ("authority", "h.test", 443)
    with pytest.raises(ParseError):
        parse_request_head(b"CONNECT h.test:443 HTTP/1.1\r\nHost: other:443\r\n\r\n")


def test_origin_form_only_in_tunnel() -> None:
    raw = b"GET /x?y HTTP/1.1\r\nHost: h.test\r\n\r\n"
    with pytest.raises(ParseError):
        parse_request_head(raw)
    r = parse_request_head(raw, origin_ok=True)
    assert (r.form, r.host, r.path, r.query) == ("origin", "h.test", "/x", "?y")


def test_identical_duplicate_content_length_merged() -> None:
    r = parse_request_head(
        b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"
    )
    assert r.content_length == 3
    r = parse_request_head(b"POST http://h/ HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\n\r\n")
    assert r.content_length == 3


@pytest.mark.parametrize("te", ["chunked", "Chunked", "CHUNKED"])
def test_te_chunked_case_insensitive(te: str) -> None:
    r = parse_request_head(
        f"POST http://h/ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {te}\r\n\r\n".encode()
    )
    assert r.chunked


def test_head_limit_and_bare_lf_detected_early() -> None:
    assert find_head_end(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n") == -1
    with pytest.raises(ParseError):
        find_head_end(b"GET http://h/ HTTP/1.1\nHost")
    with pytest.raises(ParseError) as exc:
        find_head_end(b"x" * (MAX_HEAD + 10))
    assert exc.value.status == 431


def test_connection_tokens_and_forwardable() -> None:
    r = parse_request_head(
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\nConnection: close, X-A\r\nX-A: 1\r\nTE: trailers\r\n"
        b"Upgrade: h2c\r\nX-B: 2\r\n\r\n"
    )
    assert not r.keep_alive
    assert forwardable(r.headers, r.connection_tokens, frozenset()) == [("Host", "h"), ("X-B", "2")]


def test_response_framing() -> None:
    ok = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert response_body_mode("GET", ok) == "length"
    assert response_body_mode("HEAD", ok) == "none"
    for status in (b"204 No Content", b"304 Not Modified", b"100 Continue"):
        r = parse_response_head(b"HTTP/1.1 " + status + b"\r\n\r\n")
        assert response_body_mode("GET", r) == "none"
    r = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert response_body_mode("GET", r) == "chunked"
    r = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n")
    assert response_body_mode("GET", r) == "close" and not r.keep_alive
    r = parse_response_head(b"HTTP/1.1 404\r\n\r\n")
    assert r.status == 404 and r.reason == ""
    for bad in (
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\nX: y\r\n\r\n",
    ):
        with pytest.raises(ParseError):
            parse_response_head(bad)


def test_chunked_decoder_incremental() -> None:
    raw = b"5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT"
    for step in (1, 2, 3, 7, len(raw)):
        dec = ChunkedDecoder()
        out = b""
        for i in range(0, len(raw), step):
            if dec.done:
                break
            out += b"".join(dec.feed(raw[i : i + step]))
        assert out == b"hello world" and dec.done


@pytest.mark.parametrize(
    "bad",
    [
        b"ffffffffffffffffff\r\n",  # > 16 hex digits
        b"zz\r\n",
        b" 5\r\n",
        b"5 \r\n",
        b"5\nhello",
        b"5\r\nhelloXX",
        b"0\r\nbad trailer\r\n\r\n",
        b"8000000000000000\r\n",  # overflow guard
    ],
)
def test_chunked_decoder_rejects(bad: bytes) -> None:
    with pytest.raises(ParseError):
        ChunkedDecoder().feed(bad)


# -- fuzzing ---------------------------------------------------------------------------

_token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~",
    min_size=1,
    max_size=12,
)
_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(
    str.strip
)
_host = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9]{0,5}){0,2}", fullmatch=True)
_path = st.from_regex(r"(/[A-Za-z0-9_~-]{1,8}){0,4}", fullmatch=True).map(lambda p: p or "/")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_only_raise_parse_error(data: bytes) -> None:
    for candidate in (data, b"GET http://h/ HTTP/1.1\r\nHost: h\r\n" + data + b"\r\n\r\n"):
        try:
            end = find_head_end(candidate)
            if end > 0:
                parse_request_head(candidate[:end], origin_ok=True)
        except ParseError:
            pass
        try:
            parse_response_head(candidate)
        except ParseError:
            pass
        try:
            ChunkedDecoder().feed(candidate)
        except ParseError:
            pass


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "X-CUSTOM"]),
    host=_host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=_path,
    query=st.from_regex(r"(\?[a-z0-9=&]{0,10})?", fullmatch=True),
    headers=st.lists(st.tuples(_token, _value), max_size=8),
    body=st.one_of(st.none(), st.integers(0, 10**9), st.just("chunked")),
)
def test_accepted_heads_round_trip(
    method: str,
    host: str,
    port: int | None,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    body: int | str | None,
) -> None:
    authority = host if port is None else f"{host}:{port}"
    hdrs = [
        (n, v)
        for n, v in headers
        if n.lower() not in ("host", "content-length", "transfer-encoding", "connection")
    ]
    hdrs.insert(0, ("Host", authority))
    if body == "chunked":
        hdrs.append(("Transfer-Encoding", "chunked"))
    elif body is not None:
        hdrs.append(("Content-Length", str(body)))
    raw = serialize_head(f"{method} http://{authority}{path}{query} HTTP/1.1", hdrs)
    try:
        first = parse_request_head(raw)
    except ParseError:
        return  # e.g. a generated dot segment; rejection is always allowed
    again = parse_request_head(
        serialize_head(f"{first.method} {first.target} {first.version}", first.headers)
    )
    assert again == first
    assert find_head_end(raw) == len(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=50), max_size=6), st.integers(1, 40))
def test_chunked_round_trip(pieces: list[bytes], step: int) -> None:
    raw = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    dec = ChunkedDecoder()
    out = b""
    for i in range(0, len(raw), step):
        out += b"".join(dec.feed(raw[i : i + step]))
    assert dec.done and out == b"".join(pieces)


def test_http10_connect_without_host_is_accepted() -> None:
    """Python's http.client tunnels with a bare HTTP/1.0 CONNECT (no Host)."""
    from supervisor.proxy.http1 import parse_request_head

    req = parse_request_head(b"CONNECT api.example.com:443 HTTP/1.0\r\n\r\n")
    assert (req.method, req.host, req.port) == ("CONNECT", "api.example.com", 443)


@pytest.mark.parametrize(
    "head",
    [
        b"CONNECT api.example.com:443 HTTP/1.1\r\n\r\n",
        b"GET http://api.example.com/ HTTP/1.0\r\n\r\n",
        b"GET http://api.example.com/ HTTP/1.1\r\n\r\n",
        b"CONNECT a.example.com:443 HTTP/1.0\r\nHost: b.example.com:443\r\n\r\n",
    ],
)
def test_host_still_required_elsewhere(head: bytes) -> None:
    from supervisor.proxy.http1 import ParseError, parse_request_head

    with pytest.raises(ParseError):
        parse_request_head(head)
