"""Upstream side: resolution, checked connections, and the keep-alive pool."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable

from supervisor.profiles.model import IPNetwork
from supervisor.proxy import errors
from supervisor.proxy.channel import READ_SIZE, Channel, Conn, PlainChannel, TlsChannel
from supervisor.proxy.egress import IPAddress, check_destination
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import ParseError
from supervisor.proxy.upstream_proxy import UpstreamProxy, check_connect_response, connect_request
from supervisor.telemetry import ProxyStats

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
PoolKey = tuple[str, str, int]  # scheme, host, port
_PROXY_ANSWER = 10.0  # seconds for the upstream proxy's answer to CONNECT (within timeout)
_MAX_PROXY_HEAD = 16 * 1024


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Addresses for ``host`` via getaddrinfo (in the executor), IP literals directly."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if addr not in out:
            out.append(addr)
    return out


async def resolve_checked(
    resolver: Resolver, host: str, port: int, allowed_ips: Iterable[IPNetwork],
    *, private_ok: bool = False,
) -> IPAddress:
    """Resolve once and return the first address the SSRF rules admit (we connect to it)."""
    try:
        addrs = await resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise ProxyError(errors.UPSTREAM_UNREACHABLE, f"cannot resolve {host}") from exc
    if not addrs:
        raise ProxyError(errors.UPSTREAM_UNREACHABLE, f"cannot resolve {host}")
    nets = tuple(allowed_ips)
    refused: list[str] = []
    for addr in addrs:
        reason = check_destination(addr, port, nets, private_ok=private_ok)
        if reason is None:
            return addr
        refused.append(f"{addr}: {reason}" if str(addr) not in reason else reason)
    # Where a name points is for the audit log: told to the agent, a refusal would be a
    # DNS oracle for every name under a wildcard host (internal addresses, metadata;
    # ARCHITECTURE.md S13).
    raise ProxyError(
        errors.SSRF_DENIED,
        f"{host}: resolves to an address this endpoint may not reach",
        audit_detail=f"{host}: " + "; ".join(refused[:4]),
    )


class Upstream:
    """One upstream connection: its buffered reader and the address it was checked for."""

    __slots__ = ("addr", "ch", "checked_for", "conn", "idle_since", "key", "stats")

    def __init__(
        self, key: PoolKey, addr: IPAddress, ch: Channel, stats: ProxyStats | None = None
    ) -> None:
        self.key = key
        self.addr = addr
        self.ch = ch  # a PlainChannel, or a TlsChannel over one for https
        self.conn = Conn(ch)
        self.idle_since = 0.0
        # The allowed_ips tuple ``addr`` was last admitted under: the SSRF check is a pure
        # function of (addr, port, networks), so a reuse under the same tuple skips it.
        self.checked_for: tuple[IPNetwork, ...] | None = None
        self.stats = stats  # counts this connection in ``upstream_open`` until closed
        if stats is not None:
            stats.upstream_open += 1

    def close(self) -> None:
        stats, self.stats = self.stats, None  # close() may run more than once
        if stats is not None:
            stats.upstream_open -= 1
        self.conn.release()
        self.ch.close()


async def open_upstream(
    key: PoolKey,
    addr: IPAddress,
    *,
    tls: ssl.SSLContext | None,
    timeout: float,
    send_timeout: float | None = None,
    via: UpstreamProxy | None = None,
    via_tls: ssl.SSLContext | None = None,
    stats: ProxyStats | None = None,
) -> Upstream:
    """Connect to the checked ``addr`` (and do TLS for ``host``) within ``timeout``;
    ``send_timeout`` bounds every later wait for the upstream to read (``PlainChannel``).

    ``via``: a CONNECT tunnel through the upstream proxy to ``addr`` instead of a direct
    connection (``via_tls`` when the proxy itself speaks TLS); what follows is the same.
    ``stats``: the connection is counted while open, its bytes too when asked for.
    """
    _scheme, host, port = key
    plain: PlainChannel | None = None
    try:
        async with asyncio.timeout(timeout):
            counted = stats is not None and stats.count_bytes
            if via is None:
                reader, writer = await asyncio.open_connection(str(addr), port, limit=READ_SIZE)
                plain = _new_plain(reader, writer, send_timeout, stats if counted else None)
                raw: Channel = plain
                early = b""
            else:
                reader, writer = await _dial_proxy(via)
                plain = _new_plain(reader, writer, send_timeout, stats if counted else None)
                raw, early = await _tunnel(plain, via, via_tls, addr, port)
            if tls is None:
                return Upstream(key, addr, _Prefixed(raw, early) if early else raw, stats)
            ch = TlsChannel(raw, tls, early, server_side=False, server_hostname=host)
            await ch.handshake()
            return Upstream(key, addr, ch, stats)
    except ssl.SSLCertVerificationError as exc:
        _close(plain)
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE,
            f"{host}:{port}: certificate verification failed ({exc.verify_message})",
        ) from exc
    except ssl.SSLError as exc:
        _close(plain)
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE, f"{host}:{port}: TLS handshake failed ({exc.reason})"
        ) from exc
    except TimeoutError as exc:
        _close(plain)
        raise ProxyError(errors.UPSTREAM_UNREACHABLE, f"{host}:{port}: connect timed out") from exc
    except OSError as exc:
        _close(plain)
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE, f"{host}:{port}: {exc.strerror or 'connect failed'}"
        ) from exc
    except BaseException:
        _close(plain)
        raise


def _new_plain(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    send_timeout: float | None,
    stats: ProxyStats | None,
) -> PlainChannel:
    if stats is None:
        return PlainChannel(reader, writer, send_timeout)
    return CountingChannel(reader, writer, send_timeout, stats)


class CountingChannel(PlainChannel):
    """A ``PlainChannel`` that adds what crosses it to ``ProxyStats`` (bytes on the wire to
    and from upstreams: TLS records and CONNECT heads included). Only used when metrics
    are served: it costs one Python call per read and write."""

    __slots__ = ("_raw_read", "_raw_write", "_stats")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        send_timeout: float | None,
        stats: ProxyStats,
    ) -> None:
        super().__init__(reader, writer, send_timeout)
        self._stats = stats
        self._raw_read, self._raw_write = self.read, self.write
        self.read = self._counted_read
        self.write = self._counted_write

    async def _counted_read(self, n: int = -1) -> bytes:
        data = await self._raw_read(n)
        self._stats.bytes_from_upstream += len(data)
        return data

    def _counted_write(self, data: bytes | bytearray | memoryview) -> None:
        self._stats.bytes_to_upstream += len(data)
        self._raw_write(data)

    def account(self, received: int, sent: int) -> None:
        self._stats.bytes_from_upstream += received
        self._stats.bytes_to_upstream += sent


async def _dial_proxy(
    via: UpstreamProxy,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_connection(via.host, via.port, limit=READ_SIZE)
    except OSError as exc:
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE,
            f"upstream proxy unreachable ({exc.strerror or 'connect failed'})",
        ) from exc


async def _tunnel(
    plain: PlainChannel,
    via: UpstreamProxy,
    via_tls: ssl.SSLContext | None,
    addr: IPAddress,
    port: int,
) -> tuple[Channel, bytes]:
    """CONNECT through the proxy; the channel to the destination and any bytes the proxy
    relayed from it right behind its answer (a server that speaks first)."""
    ch: Channel = plain
    try:
        if via.scheme == "https":
            if via_tls is None:
                raise ProxyError(errors.UPSTREAM_UNREACHABLE, "no TLS context for the proxy")
            proxy_tls = TlsChannel(plain, via_tls, server_side=False, server_hostname=via.host)
            await proxy_tls.handshake()
            ch = proxy_tls
        ch.write(connect_request(addr, port, via.authorization))
        await ch.drain()
        reader = Conn(ch)
        try:
            head = await reader.read_head(_PROXY_ANSWER, _PROXY_ANSWER, _MAX_PROXY_HEAD)
        finally:
            reader.release()
    except ssl.SSLCertVerificationError as exc:
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE,
            f"upstream proxy: certificate verification failed ({exc.verify_message})",
        ) from exc
    except ssl.SSLError as exc:
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE, f"upstream proxy: TLS handshake failed ({exc.reason})"
        ) from exc
    except ParseError as exc:
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE, f"upstream proxy sent an invalid answer ({exc.reason})"
        ) from exc
    except (ConnectionError, OSError) as exc:
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE, "upstream proxy closed the connection"
        ) from exc
    destination = f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
    if head is None:
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE,
            f"upstream proxy closed before answering CONNECT {destination}",
        )
    check_connect_response(head, destination)
    return ch, bytes(reader.buf)


class _Prefixed:
    """A channel whose first reads return bytes already received (behind a CONNECT answer)."""

    __slots__ = ("_early", "_raw")

    def __init__(self, raw: Channel, early: bytes) -> None:
        self._raw = raw
        self._early = early

    async def read(self, n: int) -> bytes:
        if self._early:
            data, self._early = self._early[:n], self._early[n:]
            return data
        return await self._raw.read(n)

    def write(self, data: bytes) -> None:
        self._raw.write(data)

    async def drain(self) -> None:
        await self._raw.drain()

    def close(self) -> None:
        self._raw.close()

    def write_eof(self) -> None:
        self._raw.write_eof()

    def usable(self) -> bool:
        return self._raw.usable()


def _close(plain: PlainChannel | None) -> None:
    if plain is not None:
        plain.close()


class Pool:
    """Idle keep-alive upstream connections, bounded per destination, in total (the
    longest idle goes first: many destinations cannot pile up descriptors) and in age."""

    def __init__(
        self, max_idle_per_key: int = 16, max_idle_seconds: float = 30.0, max_idle_total: int = 256
    ) -> None:
        self._idle: dict[PoolKey, collections.deque[Upstream]] = {}
        self._order: dict[Upstream, None] = {}  # every idle connection, longest idle first
        self._max = max_idle_per_key
        self._max_total = max(max_idle_total, 0)
        self._max_age = max_idle_seconds

    def take(self, key: PoolKey) -> Upstream | None:
        dq = self._idle.get(key)
        if not dq:
            return None
        now = time.monotonic()
        while dq:
            up = dq.pop()  # most recently used: the likeliest to be alive
            del self._order[up]
            if now - up.idle_since < self._max_age and up.ch.usable() and not up.conn.buf:
                if not dq:
                    del self._idle[key]
                return up
            up.close()
        del self._idle[key]
        return None

    def give(self, up: Upstream) -> None:
        if not up.ch.usable() or up.conn.buf or not self._max_total:
            up.close()
            return
        dq = self._idle.setdefault(up.key, collections.deque())
        up.idle_since = time.monotonic()
        dq.append(up)
        self._order[up] = None
        while len(dq) > self._max:
            self._drop(dq[0])
        while len(self._order) > self._max_total:
            self._drop(next(iter(self._order)))

    def _drop(self, up: Upstream) -> None:
        del self._order[up]
        dq = self._idle[up.key]
        dq.remove(up)  # the oldest of its deque in practice: found at once
        if not dq:
            del self._idle[up.key]
        up.close()

    def prune(self) -> None:
        now = time.monotonic()
        for up in [
            u for u in self._order if not (now - u.idle_since < self._max_age and u.ch.usable())
        ]:
            self._drop(up)

    def close_all(self) -> None:
        for up in self._order:
            up.close()
        self._idle.clear()
        self._order.clear()

    def idle_count(self) -> int:
        return len(self._order)
