"""Properties of the strict HTTP/1.1 parser that tests/proxy/test_http1.py does not cover:
mutated valid heads, what the upstream would read, split-independent chunked decoding of
arbitrary streams, response heads."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.oracles import check_chunked_body, check_request_head
from supervisor.proxy.http1 import (
    ParseError,
    echo_method,
    find_head_end,
    parse_response_head,
    response_body_mode,
    serialize_head,
)
from tests.fuzz.seeds import REQUEST_HEADS

_INTERESTING = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b",", b"\0", b"\x7f", b"\xff", b";", b"=",
     b"?", b"#", b"/", b".", b"..", b"%2e", b"%2F", b"\\", b"@", b"[", b"]", b"0", b"9", b"f",
     b"a", b"Z", b"-", b"chunked", b"Content-Length: 1\r\n", b"Transfer-Encoding: chunked\r\n", b"Host: h\r\n",
     b"HTTP/1.0", b"CONNECT", b"https://"]
)  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        piece = draw(st.one_of(_INTERESTING, st.binary(min_size=1, max_size=3)))
        if op == "insert":
            data[pos:pos] = piece
        elif op == "replace":
            data[pos : pos + len(piece)] = piece
        else:
            del data[pos : pos + draw(st.integers(1, 4))]
    return bytes(data)


_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_seed_heads_hold_the_invariants() -> None:
    accepted = [seed for seed in REQUEST_HEADS if check_request_head(seed) is not None]
    assert len(accepted) >= 6  # the valid seeds parse; the smuggling ones do not
    assert check_request_head(REQUEST_HEADS[7]) is None  # CL + TE


@_FAST
@given(mutated(REQUEST_HEADS))
def test_mutated_heads_only_parse_error_and_invariants(data: bytes) -> None:
    """Only ParseError; an accepted head is unambiguous, round-trips, and the head built
    for the upstream reads as the same request (no injection, no second request)."""
    check_request_head(data)


@_FAST
@given(st.lists(st.binary(max_size=40), max_size=6), st.binary(max_size=20))
def test_head_end_is_split_independent(pieces: list[bytes], tail: bytes) -> None:
    """The server re-scans a growing buffer: the head end found once all bytes are in must
    not depend on earlier (shorter) scans, and a prefix never reports a later end."""
    data = b"".join(pieces) + tail
    try:
        final = find_head_end(data)
    except ParseError:
        return
    seen = b""
    for piece in pieces:
        seen += piece
        try:
            end = find_head_end(seen)
        except ParseError:
            raise AssertionError("a prefix was refused but the whole was not") from None
        assert end < 0 or end == final


_chunk_alphabet = st.sampled_from(
    [b"0", b"1", b"5", b"a", b"F", b"\r\n", b"\n", b"\r", b";", b"x=y", b'"q"', b"hello",
     b" ", b"\t", b"T: v", b":", b"ffffffffffffffffff", b"\x00"]
)  # fmt: skip


@_FAST
@given(st.lists(_chunk_alphabet, max_size=20).map(b"".join), st.integers(0, 300))
def test_chunked_any_split_same_result(body: bytes, cut: int) -> None:
    check_chunked_body(body, cut)


@_FAST
@given(
    st.lists(st.binary(min_size=1, max_size=30), max_size=5),
    st.lists(st.tuples(st.sampled_from(["T", "X-A"]), st.text("abc ", max_size=5)), max_size=2),
    st.binary(max_size=10),
    st.integers(0, 200),
)
def test_valid_chunked_with_trailers_and_leftover(
    pieces: list[bytes], trailers: list[tuple[str, str]], after: bytes, cut: int
) -> None:
    raw = b"".join(b"%x;e=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n"
    raw += b"".join(f"{n}: {v.strip()}\r\n".encode() for n, v in trailers) + b"\r\n" + after
    check_chunked_body(raw, cut)


@_FAST
@given(
    status=st.integers(100, 599),
    reason=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["Content-Length", "Transfer-Encoding", "Connection", "X-A"]),
            st.sampled_from(["0", "12", "chunked", "close", "keep-alive", "gzip, chunked", "v"]),
        ),
        max_size=4,
    ),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
)
def test_response_heads_round_trip_and_frame_once(
    status: int, reason: str, headers: list[tuple[str, str]], method: str
) -> None:
    raw = serialize_head(f"HTTP/1.1 {status} {reason}".rstrip(" "), headers)
    try:
        resp = parse_response_head(raw)
    except ParseError:
        return
    assert not (resp.chunked and resp.content_length is not None)
    again = parse_response_head(
        serialize_head(f"{resp.version} {resp.status} {resp.reason}".rstrip(" "), resp.headers)
    )
    assert again == resp
    mode = response_body_mode(method, resp)
    if method == "HEAD" or status < 200 or status in (204, 304):
        assert mode == "none"
    elif resp.chunked:
        assert mode == "chunked"


@_FAST
@given(mutated([b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"]))
def test_mutated_response_heads_only_parse_error(data: bytes) -> None:
    try:
        resp = parse_response_head(data)
    except ParseError:
        return
    assert 100 <= resp.status <= 999 and not (resp.chunked and resp.content_length is not None)


_NOMINABLE = ["host", "HOST", "content-length", "transfer-encoding", "authorization",
              "expect", "max-forwards", "x-a", "te", "close", "keep-alive"]  # fmt: skip
_EXTRA = ["X-A: 1", "Authorization: Bearer agent", "Expect: 100-continue", "Keep-Alive: 5",
          "TE: trailers"]  # fmt: skip


@_FAST
@given(
    method=st.sampled_from(["GET", "POST", "OPTIONS", "PUT"]),
    authority=st.sampled_from(["h.example", "H.Example:443", "h.example:8443", "[::1]:80"]),
    scheme=st.sampled_from(["http", "https"]),
    nominated=st.lists(st.sampled_from(_NOMINABLE), max_size=4),
    forwards=st.none() | st.integers(0, 30),
    framing=st.sampled_from(["", "Content-Length: 3\r\n", "Transfer-Encoding: chunked\r\n"]),
    extra=st.lists(st.sampled_from(_EXTRA), max_size=3),
)
def test_upstream_head_keeps_host_credential_and_framing(
    method: str,
    authority: str,
    scheme: str,
    nominated: list[str],
    forwards: int | None,
    framing: str,
    extra: list[str],
) -> None:
    """Whatever ``Connection`` nominates (issue 12 item 7), the upstream head has exactly one
    Host equal to the judged authority, exactly the injected credential, the request's own
    framing, and OPTIONS' Max-Forwards decremented (checked by the oracle)."""
    lines = [f"{method} {scheme}://{authority}/p?q HTTP/1.1", f"Host: {authority}"]
    if nominated:
        lines.append("Connection: " + ", ".join(nominated))
    if forwards is not None:
        lines.append(f"Max-Forwards: {forwards}")
    raw = ("\r\n".join(lines + extra) + "\r\n" + framing + "\r\n").encode()
    req = check_request_head(raw)
    assert req is not None  # every generated head is valid
    assert req.max_forwards == (forwards if method == "OPTIONS" else None)


@_FAST
@given(
    st.sampled_from(["TRACE", "TRACK"]).flatmap(
        lambda m: st.tuples(*(st.sampled_from([c.lower(), c]) for c in m)).map("".join)
    ),
    st.booleans(),
)
def test_echo_methods_are_found_in_any_case_and_as_overrides(spelled: str, as_override: bool) -> None:
    """A TRACE in any spelling, on the request line or in a method-override header."""
    if as_override:
        headers = [("Host", "h"), ("X-HTTP-Method-Override", f"GET, {spelled}")]
        assert echo_method("POST", headers) == spelled
    else:
        assert echo_method(spelled, [("Host", "h")]) == spelled
    assert echo_method("GET", [("X-Trace", spelled), ("Host", "h")]) is None
