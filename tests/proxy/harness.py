"""Test harness: fake policy and token source, a recording upstream, and a proxy running
on its own event loop thread so tests can talk raw bytes over blocking sockets."""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import socket
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from supervisor.audit import AuditLog
from supervisor.grants.errors import GrantError
from supervisor.profiles.model import JWT_BEARER, Binding, Endpoint, GrantSpec
from supervisor.proxy.server import Limits, ProxyServer

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
SECRET = "s3cr3t-T0KEN-value.abc~def+ghi/jkl=="


def endpoint(
    host: str = "127.0.0.1",
    port: int = 80,
    *,
    path: str | None = None,
    access: str = "full",
    enforcement: str = "enforce",
    tls: str = "none",
    allowed_ips: tuple[Any, ...] = LOOPBACK,
) -> Endpoint:
    return Endpoint(
        host=host,
        ports=(port,),
        path=path,
        protocol="rest",
        tls=tls,
        access=access,  # type: ignore[arg-type]
        enforcement=enforcement,  # type: ignore[arg-type]
        allowed_ips=allowed_ips,
    )


def binding(
    ep: Endpoint, *, header: str = "Authorization", style: str = "bearer", path: str | None = None
) -> Binding:
    return Binding(
        id=f"p/cred@{ep.host}:{ep.ports[0]}{path or ''}",
        profile_id="p",
        credential_name="cred",
        host=ep.host,
        port=ep.ports[0],
        path=path,
        auth_style=style,  # type: ignore[arg-type]
        header_name=header,
        grant=GrantSpec("https://issuer.test/token", "aud", JWT_BEARER, "", (), None),
        endpoint=ep,
    )


def _path_ok(pattern: str | None, path: str) -> bool:
    if pattern is None:
        return True
    if pattern.endswith("/**"):
        base = pattern[:-3]
        return path == base or path.startswith(base + "/")
    return fnmatch.fnmatchcase(path, pattern)


@dataclass
class FakePolicy:
    endpoints: list[Endpoint] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)

    def declares(self, host: str, port: int) -> bool:
        return any(e.host == host and port in e.ports for e in self.endpoints)

    def match_endpoint(self, host: str, port: int, path: str) -> Endpoint | None:
        found = [
            e
            for e in self.endpoints
            if e.host == host and port in e.ports and _path_ok(e.path, path)
        ]
        found.sort(key=lambda e: len(e.path or ""), reverse=True)
        return found[0] if found else None

    def match_binding(self, host: str, port: int, path: str) -> Binding | None:
        found = [
            b for b in self.bindings if b.host == host and b.port == port and _path_ok(b.path, path)
        ]
        found.sort(key=lambda b: len(b.path or ""), reverse=True)
        return found[0] if found else None


class FakeTokens:
    def __init__(self, token: str = SECRET, error: GrantError | None = None) -> None:
        self.token = token
        self.error = error
        self.calls = 0

    async def token_for(self, binding: Binding) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.token


class Upstream:
    """A tiny HTTP/1.1 origin on 127.0.0.1 that records every byte it receives.

    Paths: /headers (echo the received head), /download/<n> (n bytes, Content-Length),
    /chunked/<n> (n bytes chunked), /upload (consume the body, answer its length),
    /nobody/<status>, /stray[/<s>] ('ok', then after s seconds an unasked-for response),
    anything else: 'ok'. TRACE and TRACK on any path are echoed as
    Apache does by default (``message/http``, the received head as the body).
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, ssl_ctx: Any = None) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.received += head
                self.requests += 1
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ")
                hdrs = {}
                for ln in lines[1:]:
                    if ln:
                        k, _, v = ln.partition(":")
                        hdrs[k.strip().lower()] = v.strip()
                n = 0
                if "content-length" in hdrs:
                    left = int(hdrs["content-length"])
                    while left:
                        d = await r.read(min(left, 1 << 18))
                        if not d:
                            return
                        n += len(d)
                        left -= len(d)
                elif hdrs.get("transfer-encoding") == "chunked":
                    while True:
                        size = int((await r.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                        if size == 0:
                            await r.readuntil(b"\r\n")
                            break
                        left = size
                        while left:
                            d = await r.read(min(left, 1 << 18))
                            n += len(d)
                            left -= len(d)
                        await r.readexactly(2)
                await self._respond(w, method, target, head, n)
                await w.drain()
        finally:
            w.close()

    async def _respond(
        self, w: asyncio.StreamWriter, method: str, target: str, head: bytes, n: int
    ) -> None:
        parts = target.split("?")[0].split("/")
        if method in ("TRACE", "TRACK"):
            w.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: %d\r\n\r\n%s"
                % (len(head), head)
            )
            return
        if parts[1] == "headers":
            body = head
        elif parts[1] == "upload":
            body = str(n).encode()
        elif parts[1] == "download":
            total = int(parts[2])
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            block = b"x" * (1 << 18)
            while total:
                piece = block[: min(total, len(block))]
                w.write(piece)
                total -= len(piece)
                await w.drain()
            return
        elif parts[1] == "chunked":
            total = int(parts[2])
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while total:
                piece = min(total, 1000)
                w.write(b"%x\r\n%s\r\n" % (piece, b"y" * piece))
                total -= piece
            w.write(b"0\r\n\r\n")
            return
        elif parts[1] == "nobody":
            w.write(b"HTTP/1.1 %s X\r\n\r\n" % parts[2].encode())
            return
        elif parts[1] == "stray":
            # A whole response, then (once the proxy has read it) another nobody asked for.
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            await asyncio.sleep(float(parts[2]) if len(parts) > 2 else 0.05)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY")
            return
        else:
            body = b"ok"
        if method == "HEAD":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        else:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class Env:
    """Proxy + upstream on a private loop thread."""

    def __init__(
        self,
        policy: FakePolicy,
        tokens: FakeTokens,
        audit_path: str | None,
        limits: Limits | None = None,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
        **proxy_kw: Any,
    ) -> None:
        self.policy = policy
        self.tokens = tokens
        self.audit_path = audit_path
        self.audit = AuditLog(audit_path)
        self.loop = loop_factory()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.upstream = Upstream()
        self.call(self.upstream.start())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        sock.setblocking(False)
        self.proxy = ProxyServer(
            sock, lambda: self.policy, tokens, self.audit, limits=limits, **proxy_kw
        )
        self.call(self.proxy.start())
        self.proxy_port = sock.getsockname()[1]

    def call(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)  # type: ignore[arg-type]

    def run(self, fn: Callable[[], Any]) -> Any:
        async def go() -> Any:
            return fn()

        return self.call(go())

    def close(self) -> None:
        self.call(self.proxy.close())

        async def shutdown() -> None:
            if self.upstream.server is not None:
                self.upstream.server.close()
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        self.audit.close()

    def connect(self, timeout: float = 10.0) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.proxy_port), timeout=timeout)
        return s


_LEFT: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def recv_response(
    s: socket.socket, *, head_only: bool = False
) -> tuple[int, dict[str, str], bytes]:
    """Read one response (Content-Length, chunked or until close) from a blocking socket;
    bytes past it are kept for the next call (pipelining)."""
    buf = _LEFT.pop(s, b"")
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise ConnectionError(f"closed; got {buf!r}")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs: dict[str, str] = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if head_only or status in (204, 304) or 100 <= status < 200:
        _LEFT[s] = rest
        return status, hdrs, b""
    if "content-length" in hdrs:
        n = int(hdrs["content-length"])
        while len(rest) < n:
            d = s.recv(65536)
            if not d:
                raise ConnectionError("short body")
            rest += d
        _LEFT[s] = rest[n:]
        return status, hdrs, rest[:n]
    if hdrs.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in rest:
                rest += s.recv(65536)
            line, _, rest = rest.partition(b"\r\n")
            size = int(line, 16)
            while len(rest) < size + 2:
                rest += s.recv(65536)
            if size == 0:
                _LEFT[s] = rest[2:]
                return status, hdrs, body
            body += rest[:size]
            rest = rest[size + 2 :]
    while True:
        d = s.recv(65536)
        if not d:
            return status, hdrs, rest
        rest += d


def closed(s: socket.socket) -> bool:
    """True when the peer closed (after draining whatever it sent)."""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def rss() -> int:
    """Resident set size of this process (the proxy runs in it), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def upload(s: socket.socket, port: int, size: int, block: bytes, sample_every: int) -> int:
    """POST ``size`` bytes to the harness upstream through the proxy on ``s``; assert the
    upstream counted them all; return the peak RSS sampled while sending."""
    s.sendall(
        f"POST http://127.0.0.1:{port}/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Length: {size}\r\n\r\n".encode()
    )
    peak = rss()
    for i in range(size // len(block)):
        s.sendall(block)
        if i % sample_every == 0:
            peak = max(peak, rss())
    status, _, body = recv_response(s)
    assert status == 200 and int(body) == size
    return peak
