"""sock_diag: the request encoding and answer decoding (hypothesis), and the kernel's
answer equals the socket's own inode, IPv4 and dual-stack (root for netlink? no: any user)."""

from __future__ import annotations

import errno
import os
import socket
import struct
from contextlib import closing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.binaries import diag

ports = st.integers(0, 65535)


def answer(seq: int, state: int, inode: int) -> bytes:
    body = struct.pack("=BBBB48sIIIII", socket.AF_INET, state, 0, 0, bytes(48), 0, 0, 0, 0, inode)
    return struct.pack("=IHHII", 16 + len(body), diag.SOCK_DIAG_BY_FAMILY, 0, seq, 0) + body


@given(st.ip_addresses(v=4).map(str), ports, ports, st.integers(1, 2**32 - 1))
def test_request_names_the_exact_tuple(ip: str, sport: int, dport: int, seq: int) -> None:
    req = diag.build_request((ip, sport), ("127.0.0.1", dport), seq)
    length, kind, flags, got_seq, _ = struct.unpack_from("=IHHII", req)
    assert (length, kind, flags, got_seq) == (len(req), diag.SOCK_DIAG_BY_FAMILY,
                                              diag.NLM_F_REQUEST, seq)  # not a dump
    family, proto, _, _, states = struct.unpack_from("=BBBBI", req, 16)
    assert (family, proto, states) == (socket.AF_INET, socket.IPPROTO_TCP, diag.TCPF_ESTABLISHED)
    assert struct.unpack_from("!HH", req, 24) == (sport, dport)
    assert req[28:32] == socket.inet_aton(ip)


@given(st.integers(1, 2**32 - 1), st.integers(0, 12), st.integers(0, 2**32 - 1))
def test_answer_decoding(seq: int, state: int, inode: int) -> None:
    got = diag.parse_response(answer(seq, state, inode), seq)
    assert got == (inode if state == 1 and inode else None)
    with pytest.raises(ValueError):
        diag.parse_response(answer(seq, state, inode), seq + 1)


def test_not_found_and_errors() -> None:
    def error(code: int) -> bytes:
        return struct.pack("=IHHIIi", 20, diag.NLMSG_ERROR, 0, 7, 0, -code)

    assert diag.parse_response(error(errno.ENOENT), 7) is None
    with pytest.raises(ValueError):
        diag.parse_response(error(errno.EPERM), 7)


@given(st.binary(max_size=200) | st.binary(min_size=72, max_size=80), st.integers(0, 2**32 - 1),
       st.sampled_from([None, diag.SOCK_DIAG_BY_FAMILY, diag.NLMSG_ERROR]))
def test_garbage_never_yields_an_inode_silently(data: bytes, seq: int, kind: int | None) -> None:
    if kind is not None:  # a header for this request over garbage, so parsing goes deeper
        data = struct.pack("=IHHII", 16 + len(data), kind, 0, seq, 0) + data
    try:
        got = diag.parse_response(data, seq)
    except ValueError:
        return
    if got is not None:  # only an answer to this request, for an established socket
        _, got_kind, _, got_seq, _ = struct.unpack_from("=IHHII", data)
        assert (got_kind, got_seq) == (diag.SOCK_DIAG_BY_FAMILY, seq)
        assert data[17] == 1 and got == struct.unpack_from("=I", data, 16 + 68)[0] != 0


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_kernel_answer_is_the_sockets_inode(family: int) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    host = "127.0.0.1" if family == socket.AF_INET else "::ffff:127.0.0.1"
    with listener, socket.socket(family) as client, closing(diag.open_diag_socket()) as sock:
        client.connect((host, listener.getsockname()[1]))
        accepted, _ = listener.accept()
        with accepted:
            local = ("127.0.0.1", client.getsockname()[1])
            assert diag.lookup(sock, local, listener.getsockname(), 1) == \
                os.fstat(client.fileno()).st_ino
            assert diag.lookup(sock, ("127.0.0.1", 1), listener.getsockname(), 2) is None
