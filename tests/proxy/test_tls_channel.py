"""TlsChannel's reads: every record already received comes out in one read (up to the
size asked), a read never waits for more than one complete record, and an error or
close_notify behind some data comes after that data."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.proxy.channel import TlsChannel
from tests.proxy.tlscerts import make_pki

RECORD = 16 * 1024


class FakeRaw:
    """A raw channel fed by the test: each ``read`` hands out the next queued chunk."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.sent = bytearray()
        self.reads = 0
        self.eof = False
        self.closed = False
        self._more = asyncio.Event()

    def feed(self, data: bytes) -> None:
        self.chunks.append(data)
        self._more.set()

    async def read(self, n: int) -> bytes:
        self.reads += 1
        while not self.chunks:
            self._more.clear()
            await self._more.wait()
        data = self.chunks.popleft()
        if len(data) > n:
            self.chunks.appendleft(data[n:])
            data = data[:n]
        return data

    def write(self, data: bytes) -> None:
        if self.eof:  # as asyncio's transports do
            raise RuntimeError("Cannot call write() after write_eof()")
        self.sent += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def usable(self) -> bool:
        return True


class Peer:
    """The other end, driven by hand over memory BIOs (the TLS client)."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="127.0.0.1")

    def records(self, data: bytes) -> bytes:
        """``data`` as TLS records, on the wire."""
        self.obj.write(data)
        return self.out.read()


@pytest.fixture(scope="module")
def contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    pki = make_pki(Path(tmp_path_factory.mktemp("tlsch")))
    client = ssl.create_default_context(cafile=str(pki.ca_path))
    return pki.agent_side, client


async def connected(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> tuple[TlsChannel, FakeRaw, Peer]:
    server_ctx, client_ctx = contexts
    raw, peer = FakeRaw(), Peer(client_ctx)
    tls = TlsChannel(raw, server_ctx)
    hs = asyncio.create_task(tls.handshake())
    for _ in range(10):
        try:
            peer.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        if peer.out.pending:
            raw.feed(peer.out.read())
        await asyncio.sleep(0)
        if raw.sent:
            peer.inc.write(bytes(raw.sent))
            raw.sent.clear()
        if hs.done():
            break
    await hs
    peer.obj.do_handshake()
    raw.reads = 0
    return tls, raw, peer


def test_every_received_record_comes_out_in_one_read(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        data = bytes(range(256)) * 320  # 80 KiB: five records
        raw.feed(peer.records(data))
        assert await tls.read(1 << 18) == data
        assert raw.reads == 1

    asyncio.run(scenario())


def test_a_read_returns_at_most_what_was_asked(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        data = bytes(range(256)) * 200
        raw.feed(peer.records(data))
        first = await tls.read(RECORD + 1000)  # across a record boundary
        assert first == data[: RECORD + 1000]
        assert await tls.read(1 << 18) == data[RECORD + 1000 :]

    asyncio.run(scenario())


def test_a_read_never_waits_for_the_next_record(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """An event stream: one event must go out while the next is still on its way."""

    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        event = b"data: 1\n\n"
        wire = peer.records(event) + peer.records(b"data: 2\n\n")[:10]  # and part of the next
        raw.feed(wire)
        assert await asyncio.wait_for(tls.read(1 << 18), 2) == event
        assert raw.reads == 1

    asyncio.run(scenario())


def test_close_notify_behind_data_ends_the_stream_after_it(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        wire = peer.records(b"x" * 40000)
        with pytest.raises(ssl.SSLWantReadError):
            peer.obj.unwrap()  # sends close_notify, waits for ours
        raw.feed(wire + peer.out.read())
        assert await tls.read(1 << 18) == b"x" * 40000
        assert await tls.read(1 << 18) == b""

    asyncio.run(scenario())


def test_a_broken_record_behind_data_fails_after_the_data(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        good = peer.records(b"a" * 20000)
        bad = bytearray(peer.records(b"b" * 100))
        bad[-1] ^= 1  # the record's authentication tag no longer matches
        raw.feed(good + bytes(bad))
        assert await tls.read(1 << 18) == b"a" * 20000
        with pytest.raises(ssl.SSLError):
            await tls.read(1 << 18)

    asyncio.run(scenario())


def test_close_after_our_half_close_and_the_peers_bare_close_writes_nothing(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """We sent close_notify and ended our side; the peer then closed TCP without one.
    OpenSSL's unwrap in close() makes another alert: it must not reach the ended stream
    (asyncio raises), and the raw stream must still be closed."""

    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        raw.feed(peer.records(b"z" * 100))
        tls.write_eof()
        assert raw.eof
        raw.feed(b"")  # the peer's FIN, no close_notify
        assert await tls.read(1 << 18) == b"z" * 100
        assert await tls.read(1 << 18) == b""
        tls.close()
        assert raw.closed

    asyncio.run(scenario())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(1, 3 * RECORD), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 40000), max_size=6),
    asks=st.lists(st.integers(1, 5 * RECORD), min_size=1, max_size=5),
)
def test_reads_give_back_the_stream_in_order_and_within_the_asked_size(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    sizes: list[int],
    cuts: list[int],
    asks: list[int],
) -> None:
    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        plain = b"".join(bytes([i % 251]) * n for i, n in enumerate(sizes))
        wire = peer.records(plain)
        at = 0
        for cut in cuts:  # the wire in arbitrary pieces, as TCP delivers it
            raw.feed(wire[at : at + cut])
            at += cut
        raw.feed(wire[at:])
        got = bytearray()
        i = 0
        while len(got) < len(plain):
            ask = asks[i % len(asks)]
            i += 1
            data = await asyncio.wait_for(tls.read(ask), 2)
            assert 0 < len(data) <= ask
            got += data
        assert got == plain

    asyncio.run(scenario())


def test_after_both_close_notifies_every_read_answers_at_once(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    """We half-closed first, then the peer's data and close_notify came: the data, then
    the end, again and again, without waiting on the (still open) raw stream."""

    async def scenario() -> None:
        tls, raw, peer = await connected(contexts)
        tls.write_eof()
        peer.inc.write(bytes(raw.sent))
        wire = peer.records(b"q" * 100)
        peer.obj.unwrap()  # ours was received: this completes the shutdown
        raw.feed(wire + peer.out.read())
        assert await asyncio.wait_for(tls.read(1 << 18), 2) == b"q" * 100
        for _ in range(3):
            assert await asyncio.wait_for(tls.read(1 << 18), 2) == b""

    asyncio.run(scenario())
