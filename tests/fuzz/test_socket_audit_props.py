"""Workload API address rules and audit scrubbing on generated input."""

from __future__ import annotations

import json
import os
import posixpath
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import audit
from supervisor.sandbox.socket_path import SHARED_ROOTS, parse_socket_address, resolve_socket_path
from supervisor.settings import SetupError

_schemes = st.sampled_from(["", "unix:", "unix://", "UNIX://", "Unix:", "tcp:", "tcp://", "TCP://",
                            "http://", "unix:///", "unix:tcp:", "tcp:unix://", "u:", ":"])
_path_parts = st.lists(st.sampled_from(["", "/", "run", "spire", "..", ".", "agent.sock", "tmp",
                                        "127.0.0.1:8081", "a b", "\x00", "//"]), max_size=6)
_addresses = st.one_of(
    st.tuples(_schemes, _path_parts).map(lambda t: t[0] + "/".join(t[1])),
    st.text(max_size=30),
)


@settings(max_examples=300, deadline=None)
@given(_addresses)
def test_socket_address_never_tcp_or_relative(address: str) -> None:
    try:
        path = parse_socket_address(address)
    except SetupError as err:
        assert err.step == "--spiffe-socket"
        return
    assert path.startswith("/") and "\0" not in path and path == posixpath.normpath(path)
    scheme, sep, _ = address.partition(":")
    if sep and not address.startswith("/"):
        assert scheme.lower() == "unix"  # tcp:, http:, anything else: refused
    assert not address.lower().startswith("tcp")


@settings(max_examples=200, deadline=None)
@given(_addresses, st.sampled_from([*sorted(SHARED_ROOTS), "/run/spire", "/x"]))
def test_resolved_directory_is_never_a_shared_root(address: str, symlink_target: str) -> None:
    """Whatever the real path is (a symlink may point anywhere), its directory is dedicated."""

    def realpath(p: str) -> str:
        return posixpath.join(symlink_target, posixpath.basename(p))

    for rp in (realpath, posixpath.normpath):
        try:
            sock = resolve_socket_path(address, realpath=rp, isdir=lambda _: True)
        except SetupError:
            continue
        assert sock.directory not in SHARED_ROOTS and sock.directory == posixpath.dirname(sock.path)
        assert posixpath.dirname(parse_socket_address(address)) not in SHARED_ROOTS


_text = st.text(st.one_of(st.characters(), st.sampled_from(list("?#&=\r\n\x00\x1b\x85\u2028"))),
                max_size=80)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(_text, st.integers(0, 600))
def test_scrub_has_no_control_characters(value: str, limit: int) -> None:
    out = audit.scrub(value, limit)
    assert len(out) == min(len(value), limit)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in out)


@settings(max_examples=200, deadline=None)
@given(_text, _text, _text, _text, st.integers(0, 65535))
def test_http_event_line_has_no_query_and_no_control_characters(
    path: str, host: str, message: str, reason: str, port: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = audit.AuditLog(os.path.join(tmp, "audit.jsonl"))
        log.http_event(method="GET", scheme="http", host=host, port=port, path=path,
                       allowed=False, message=message, reason=reason)  # fmt: skip
        log.close()
        with open(os.path.join(tmp, "audit.jsonl"), encoding="ascii") as f:
            line = f.read()
    assert line.endswith("\n") and line.count("\n") == 1 and line.isascii()
    event = json.loads(line)
    logged_path = event["http_request"]["url"]["path"]
    assert logged_path == audit.scrub(path.split("?", 1)[0].split("#", 1)[0])
    for value in (logged_path, event["message"], event["status_detail"],
                  event["dst_endpoint"]["hostname"]):  # fmt: skip
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value)
    if "?" in path:
        query = path.split("?", 1)[1]
        if len(query) >= 8 and query not in (message, reason, host):
            assert query not in line
