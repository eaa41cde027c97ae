"""The asyncio proxy server: agent connections, CONNECT tunnels, interception, forwarding.

Every request goes through ``_serve_request`` whether it came in absolute-form, as plain
HTTP inside a CONNECT tunnel, or inside an intercepted TLS tunnel; the tunnel fixes scheme
and authority. Order per request: strict parse → egress decision → checked address
(pooled or resolved once) → token (before any upstream byte or connection) → forward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.audit import SEVERITY_MEDIUM, AuditLog
from supervisor.grants.errors import GrantError
from supervisor.grants.source import TokenSource
from supervisor.profiles.model import IPNetwork
from supervisor.proxy import errors
from supervisor.proxy.channel import (
    Channel,
    Conn,
    PeerClosed,
    PlainChannel,
    TlsServerChannel,
    relay_chunked,
    relay_length,
    relay_until_eof,
    start_chunked,
)
from supervisor.proxy.decision import credential_header, decide
from supervisor.proxy.egress import CONTROL_PLANE_PORTS, IPAddress, check_destination
from supervisor.proxy.errors import ProxyError, error_response, sanitize
from supervisor.proxy.http1 import (
    ChunkedDecoder,
    ParseError,
    RequestHead,
    default_port,
    forwardable,
    host_header,
    parse_request_head,
    parse_response_head,
    response_body_mode,
    serialize_head,
    upstream_request_head,
)
from supervisor.proxy.policy import Interceptor, RoutePolicy, connect_needs_inspection
from supervisor.proxy.slots import DestinationSlots
from supervisor.proxy.upstream import (
    Pool,
    PoolKey,
    Resolver,
    Upstream,
    open_upstream,
    resolve_checked,
    system_resolver,
)

log = logging.getLogger("supervisor.proxy")

_CONNECT_OK = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# OPTIONS with Max-Forwards: 0 (RFC 9110 7.6.2): the proxy is the final recipient.
_OPTIONS_HERE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_OPTIONS_HERE_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_SMALL_BODY = 64 * 1024
_MAX_RESPONSE_HEAD = 64 * 1024  # upstreams send larger heads (cookies) than we accept
_MAX_LINGERING = 256  # refused connections kept open briefly so the 503 arrives
_FD_HEADROOM = 64  # descriptors kept for listeners, the audit log, pools, grants


def _fd_bounded(cap: int) -> int:
    """``cap`` held below RLIMIT_NOFILE: an agent connection can hold two descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(1, min(cap, (soft - _FD_HEADROOM) // 2))


@dataclass(frozen=True, slots=True)
class Limits:
    """Timeouts and resource caps.

    Caps (floods): at most ``max_agent_connections`` agent connections are served at once
    (tunnels included); one more is answered ``503 proxy_overloaded`` with
    ``Connection: close`` before any of its bytes is read, and closed. The cap is also
    held below what RLIMIT_NOFILE allows (two descriptors per connection plus headroom),
    so a flood cannot make ``accept`` fail for everyone. At most
    ``max_active_per_destination`` upstream connections per (host, port) are in use at
    once (idle pooled ones do not count; CONNECT tunnels do); a request over the cap waits
    its turn up to ``destination_wait`` seconds, then gets ``503 upstream_busy``.
    """

    idle_timeout: float = 60.0  # keep-alive wait for the next request
    head_timeout: float = 10.0  # from the first byte of a head to its end (slowloris)
    body_timeout: float = 60.0  # between two reads of a body
    connect_timeout: float = 10.0
    response_timeout: float = 120.0  # upstream response head after the request was sent
    tunnel_idle_timeout: float = 300.0
    max_idle_per_destination: int = 128
    pool_idle_seconds: float = 30.0
    close_grace: float = 5.0
    backlog: int = 4096
    max_agent_connections: int = 4096
    max_active_per_destination: int = 256
    destination_wait: float = 10.0


@dataclass(slots=True)
class Counters:
    connections: int = 0
    active: int = 0
    requests: int = 0
    connects: int = 0
    tunnels: int = 0
    intercepted: int = 0
    denied: int = 0
    parse_errors: int = 0
    grant_failures: int = 0
    upstream_errors: int = 0
    upstream_new: int = 0
    upstream_reused: int = 0
    timeouts: int = 0
    refused_connections: int = 0  # over max_agent_connections
    busy: int = 0  # 503 upstream_busy


@dataclass(frozen=True, slots=True)
class Tunnel:
    scheme: str
    host: str
    port: int


@dataclass(slots=True)
class _Exchange:
    """Mutable per-request outcome used for the final audit event."""

    status: int | None = None
    upstream: Upstream | None = None
    ips: list[str] = field(default_factory=list)


class ProxyServer:
    def __init__(
        self,
        listen_sock: socket.socket,
        policy: Callable[[], RoutePolicy],
        tokens: TokenSource,
        audit: AuditLog,
        *,
        upstream_ssl: ssl.SSLContext | None = None,
        interceptor: Interceptor | None = None,
        resolver: Resolver = system_resolver,
        limits: Limits | None = None,
    ) -> None:
        self._sock = listen_sock
        self._policy = policy
        self._tokens = tokens
        self._audit = audit
        self._upstream_ssl = upstream_ssl
        self._interceptor = interceptor
        self._resolver = resolver
        self.limits = limits or Limits()
        self.counters = Counters()
        self._pool = Pool(self.limits.max_idle_per_destination, self.limits.pool_idle_seconds)
        self._slots = DestinationSlots(self.limits.max_active_per_destination)
        self._max_agents = _fd_bounded(self.limits.max_agent_connections)
        self._last_refusal_log = -1e9
        self._lingering = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pruner: asyncio.Task[None] | None = None
        self._idle_tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        # start_server re-listens the handed socket: keep a deep accept queue for bursts.
        self._server = await asyncio.start_server(
            self._on_client, sock=self._sock, limit=1 << 18, backlog=self.limits.backlog
        )
        self._pruner = asyncio.create_task(self._prune_loop())

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        """Stop accepting, let in-flight exchanges finish for ``close_grace``, then cut."""
        if self._server is not None:
            self._server.close()
        if self._pruner is not None:
            self._pruner.cancel()
        self._closing = True
        for task in list(self._idle_tasks):
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.limits.close_grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        self._pool.close_all()

    def drop_idle_upstreams(self) -> int:
        """Close every idle pooled upstream connection (e.g. after a policy reload)."""
        n = self._pool.idle_count()
        self._pool.close_all()
        return n

    @property
    def max_agent_connections(self) -> int:
        """The effective cap (``Limits.max_agent_connections`` bounded by RLIMIT_NOFILE)."""
        return self._max_agents

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.limits.pool_idle_seconds / 2, 0.5))
            self._pool.prune()

    def _upstream_tls(self) -> ssl.SSLContext:
        if self._upstream_ssl is None:
            ctx = ssl.create_default_context()
            ctx.set_alpn_protocols(["http/1.1"])
            self._upstream_ssl = ctx
        return self._upstream_ssl

    # -- agent connections -----------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        c = self.counters
        if c.active >= self._max_agents:
            await self._refuse(reader, writer)
            return
        self._tasks.add(task)
        c.connections += 1
        c.active += 1
        agent = Conn(PlainChannel(reader, writer))
        try:
            await self._serve(agent, None)
        except (
            ConnectionError,
            TimeoutError,
            PeerClosed,
            ssl.SSLError,
            asyncio.IncompleteReadError,
        ):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("proxy connection failed")
        finally:
            c.active -= 1
            self._tasks.discard(task)
            agent.release()
            agent.ch.close()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Over the connection cap: a 503 without reading the request, then close.

        The write side is shut first and the agent's bytes drained briefly, so the 503 is
        not destroyed by a reset (closing with unread input would send one at once).
        """
        c = self.counters
        c.refused_connections += 1
        if self._lingering >= _MAX_LINGERING:
            writer.transport.abort()  # refusals pile up: no courtesy, just the fd back
            return
        self._lingering += 1
        loop = asyncio.get_running_loop()
        if loop.time() - self._last_refusal_log > 10.0:  # a flood must not flood the log
            self._last_refusal_log = loop.time()
            log.warning("agent connection cap (%d) reached: refusing with 503", self._max_agents)
        try:
            writer.write(
                error_response(
                    503,
                    errors.PROXY_OVERLOADED,
                    "too many concurrent connections to the proxy",
                    close=True,
                )
            )
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(1.0):
                while await reader.read(1 << 16):
                    pass
        except (ConnectionError, OSError, TimeoutError, RuntimeError):
            pass
        finally:
            self._lingering -= 1
            writer.close()

    async def _serve(self, agent: Conn, tunnel: Tunnel | None) -> None:
        """Serve requests on one agent connection (or tunnel) until it must close."""
        lim = self.limits
        task = asyncio.current_task()
        while True:
            try:
                # Between requests the connection is idle: close() may cut it at once.
                idle = not agent.buf
                if idle and task is not None:
                    if self._closing:
                        return
                    self._idle_tasks.add(task)
                try:
                    head = await agent.read_head(lim.idle_timeout, lim.head_timeout)
                finally:
                    if idle and task is not None:
                        self._idle_tasks.discard(task)
                if head is None:
                    return
                req = parse_request_head(head, origin_ok=tunnel is not None)
            except ParseError as exc:
                self._reject(agent.ch, exc)
                return
            except TimeoutError:
                self.counters.timeouts += 1
                return
            self.counters.requests += 1
            if req.method == "CONNECT":
                if tunnel is not None:
                    self._reject(agent.ch, ParseError("CONNECT inside a tunnel"))
                    return
                await self._connect(agent, req)
                return
            if not await self._serve_request(agent, req, tunnel):
                return

    def _reject(self, ch: Channel, exc: ParseError) -> None:
        self.counters.parse_errors += 1
        self._audit.parse_rejection(reason=exc.reason, status_code=exc.status)
        ch.write(error_response(exc.status, errors.BAD_REQUEST, exc.reason, close=True))

    def _tunnel_refused(self, host: str, port: int, message: str, exc: BaseException) -> None:
        """An intercepted tunnel that could not be opened: logged and audited, then closed."""
        log.warning("%s (%s:%d): %s", message, host, port, sanitize(str(exc)))
        self._audit.http_event(
            method="CONNECT",
            scheme="https",
            host=host,
            port=port,
            path="",
            allowed=False,
            message=message,
            reason=sanitize(type(exc).__name__),
        )

    def _deny_request(
        self,
        agent: Conn,
        exc: ProxyError,
        req: RequestHead,
        scheme: str,
        host: str,
        port: int,
        binding_id: str | None,
        close: bool,
    ) -> None:
        self._deny(
            agent.ch,
            exc,
            method=req.method,
            scheme=scheme,
            host=host,
            port=port,
            path=req.path,
            close=close,
            binding_id=binding_id,
        )

    def _deny(
        self,
        ch: Channel,
        exc: ProxyError,
        *,
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        close: bool,
        binding_id: str | None = None,
    ) -> None:
        c = self.counters
        if exc.code == errors.TOKEN_GRANT_FAILED:
            c.grant_failures += 1
        elif exc.code == errors.UPSTREAM_UNREACHABLE:
            c.upstream_errors += 1
        else:
            c.denied += 1
        self._audit.http_event(
            method=method,
            scheme=scheme,
            host=host,
            port=port,
            path=path,
            allowed=False,
            message=exc.code,
            status_code=exc.status,
            reason=exc.detail,
            binding_id=binding_id,
        )
        ch.write(error_response(exc.status, exc.code, exc.detail, close=close))

    # -- one request -----------------------------------------------------------------

    async def _serve_request(self, agent: Conn, req: RequestHead, tunnel: Tunnel | None) -> bool:
        """Handle one non-CONNECT request; True when the agent connection stays usable."""
        if tunnel is not None:
            scheme, host, port = tunnel.scheme, tunnel.host, tunnel.port
        else:
            scheme = req.scheme or "http"
            host, port = req.host, req.port or default_port(scheme)
        close_on_error = req.has_body or not req.keep_alive
        binding_id: str | None = None
        dest = (host, port)
        held = False
        try:
            try:
                if tunnel is not None:
                    req_scheme = req.scheme or scheme
                    req_port = req.port or default_port(req_scheme)
                    if (req_scheme, req.host, req_port) != (scheme, host, port):
                        raise ProxyError(
                            errors.AUTHORITY_MISMATCH,
                            f"request names {req.host}:{req_port} inside a tunnel to {host}:{port}",
                        )
                d = decide(
                    self._policy(),
                    method=req.method,
                    scheme=scheme,
                    host=host,
                    port=port,
                    path=req.path,
                    headers=req.headers,
                )
                if req.max_forwards == 0:  # a body, never read, ends the connection
                    keep = req.keep_alive and not req.has_body
                    agent.ch.write(_OPTIONS_HERE if keep else _OPTIONS_HERE_CLOSE)
                    return keep
                binding = d.binding
                binding_id = binding.id if binding is not None else None
                if d.audit_violation is not None:
                    self._audit.http_event(
                        method=req.method,
                        scheme=scheme,
                        host=host,
                        port=port,
                        path=req.path,
                        allowed=True,
                        message="access rule violated (enforcement: audit)",
                        reason=d.audit_violation,
                        severity=SEVERITY_MEDIUM,  # a violation let through, not routine
                    )
                decoder: ChunkedDecoder | None = None
                first = b""
                if req.expect_continue and req.has_body:
                    agent.ch.write(_CONTINUE)
                if req.chunked:
                    try:
                        decoder, first = await start_chunked(agent, self.limits.head_timeout)
                    except ParseError as exc:
                        self._reject(agent.ch, exc)
                        return False
                elif req.content_length:
                    # Body bytes already buffered (the common small case) go out with the head.
                    first = agent.take(min(req.content_length, _SMALL_BODY))
                held = self._slots.try_acquire(dest) or await self._slots.acquire(
                    dest, self.limits.destination_wait
                )
                if not held:
                    self.counters.busy += 1
                    raise ProxyError(
                        errors.UPSTREAM_BUSY,
                        f"{host}:{port}: too many concurrent upstream connections",
                    )
                key: PoolKey = (scheme, host, port)
                nets = d.endpoint.allowed_ips
                up = self._pool.take(key)
                if (
                    up is not None
                    and up.checked_for is not nets
                    and check_destination(up.addr, port, nets)
                ):
                    up.close()  # the policy changed since this connection was checked
                    up = None
                addr = (
                    up.addr
                    if up is not None
                    else await resolve_checked(self._resolver, host, port, nets)
                )
                if up is not None:
                    up.checked_for = nets
                extra: tuple[str, str] | None = None
                if binding is not None:
                    try:
                        extra = credential_header(binding, await self._tokens.token_for(binding))
                    except GrantError as exc:
                        raise ProxyError(errors.TOKEN_GRANT_FAILED, exc.reason) from None
                    finally:
                        if extra is None and up is not None:
                            self._pool.give(up)  # no token: nothing is written upstream
            except ProxyError as exc:
                self._deny_request(agent, exc, req, scheme, host, port, binding_id, close_on_error)
                return not close_on_error

            # Build the upstream head once; the credential header is the only one we add.
            head = upstream_request_head(req, host_header(host, port, scheme), extra)
            del extra

            try:
                return await self._exchange(
                    agent, req, head + first, decoder, key, addr, up, nets, scheme, binding_id
                )
            except ProxyError as exc:
                self._deny_request(agent, exc, req, scheme, host, port, binding_id, True)
                return False
        finally:
            if held:
                self._slots.release(dest)

    async def _open(
        self, key: PoolKey, addr: IPAddress, up: Upstream | None, nets: tuple[IPNetwork, ...]
    ) -> Upstream:
        if up is not None:
            self.counters.upstream_reused += 1
            return up
        tls = self._upstream_tls() if key[0] == "https" else None
        up = await open_upstream(key, addr, tls=tls, timeout=self.limits.connect_timeout)
        up.checked_for = nets  # ``addr`` came from resolve_checked under these networks
        self.counters.upstream_new += 1
        return up

    async def _exchange(
        self,
        agent: Conn,
        req: RequestHead,
        head: bytes,
        decoder: ChunkedDecoder | None,
        key: PoolKey,
        addr: IPAddress,
        up: Upstream | None,
        nets: tuple[IPNetwork, ...],
        scheme: str,
        binding_id: str | None,
    ) -> bool:
        lim = self.limits
        host, port = key[1], key[2]
        # ``head`` already carries the start of the body; the rest is streamed.
        body_left = 0
        if req.content_length:
            body_left = req.content_length - (len(head) - head.index(b"\r\n\r\n") - 4)
        retry = up is not None and not req.has_body
        while True:
            up = await self._open(key, addr, up, nets)
            upc = up.ch
            try:
                upc.write(head)
                if decoder is not None and not decoder.done:
                    await relay_chunked(agent, upc, lim.body_timeout, decoder=decoder)
                elif body_left:
                    await relay_length(agent, upc, body_left, lim.body_timeout)
                else:
                    await upc.drain()
                resp_head = await up.conn.read_head(
                    lim.response_timeout, lim.response_timeout, _MAX_RESPONSE_HEAD
                )
            except (PeerClosed, TimeoutError) as exc:
                up.close()
                if isinstance(exc, TimeoutError) and not req.has_body:
                    raise ProxyError(errors.UPSTREAM_UNREACHABLE, "upstream timed out") from None
                return False  # the agent stopped sending its body: nothing sensible to answer
            except (ConnectionError, OSError, ParseError) as exc:
                up.close()
                if retry and not isinstance(exc, ParseError):
                    retry, up = False, None
                    continue
                raise ProxyError(
                    errors.UPSTREAM_UNREACHABLE, f"{host}:{port}: connection failed"
                ) from None
            if resp_head is None:
                up.close()
                if retry:
                    retry, up = False, None
                    continue
                raise ProxyError(
                    errors.UPSTREAM_UNREACHABLE, f"{host}:{port}: closed without response"
                )
            break
        try:
            resp = parse_response_head(resp_head)
            while 100 <= resp.status < 200:
                if resp.status == 101:
                    raise ParseError("unexpected protocol switch")
                # Interim responses are dropped: we answered Expect ourselves.
                got = await up.conn.read_head(
                    lim.response_timeout, lim.response_timeout, _MAX_RESPONSE_HEAD
                )
                if got is None:
                    raise ParseError("closed without final response")
                resp = parse_response_head(got)
        except (ParseError, TimeoutError, ConnectionError) as exc:
            up.close()
            detail = exc.reason if isinstance(exc, ParseError) else "no response"
            raise ProxyError(
                errors.UPSTREAM_UNREACHABLE, f"invalid upstream response: {detail}"
            ) from None

        if binding_id is not None and self._audit.enabled:
            self._audit.http_event(
                method=req.method,
                scheme=scheme,
                host=host,
                port=port,
                path=req.path,
                allowed=True,
                message="credential injected",
                status_code=resp.status,
                binding_id=binding_id,
                dst_ip=str(up.addr),
            )

        mode = response_body_mode(req.method, resp)
        agent11 = req.version == "HTTP/1.1"
        keep = req.keep_alive and mode != "close" and (agent11 or mode != "chunked")
        headers = forwardable(resp.headers, resp.connection_tokens, frozenset())
        if mode == "chunked" and agent11:
            headers.append(("Transfer-Encoding", "chunked"))
        elif resp.content_length is not None and (
            mode != "none" or req.method == "HEAD" or resp.status == 304
        ):
            headers.append(("Content-Length", str(resp.content_length)))
        elif mode == "none" and resp.status >= 200 and resp.status not in (204, 304):
            headers.append(("Content-Length", "0"))
        if not keep:
            headers.append(("Connection", "close"))
        elif not agent11:
            headers.append(("Connection", "keep-alive"))
        out = serialize_head(f"HTTP/1.1 {resp.status} {resp.reason}", headers)
        ach = agent.ch
        try:
            if mode == "length":
                assert resp.content_length is not None
                first_resp = up.conn.take(min(resp.content_length, _SMALL_BODY))
                rest = resp.content_length - len(first_resp)
                if rest:
                    await relay_length(up.conn, ach, rest, lim.body_timeout, first=out + first_resp)
                else:  # the whole small response is buffered: one write, head and body
                    ach.write(out + first_resp)
            elif mode == "chunked":
                await relay_chunked(up.conn, ach, lim.body_timeout, encode=agent11, first=out)
            elif mode == "close":
                await relay_until_eof(up.conn, ach, lim.body_timeout, first=out)
            else:
                ach.write(out)
            await ach.drain()
        except ParseError:
            up.close()
            return False  # framing broke after the head went out: cut the agent connection
        except BaseException:
            up.close()
            raise
        if resp.keep_alive and mode != "close":
            self._pool.give(up)
        else:
            up.close()
        return keep

    # -- CONNECT ---------------------------------------------------------------------

    async def _connect(self, agent: Conn, req: RequestHead) -> None:
        host, port = req.host, req.port or 443
        self.counters.connects += 1
        policy = self._policy()
        dest = (host, port)
        held = False
        try:
            if port in CONTROL_PLANE_PORTS:
                raise ProxyError(errors.SSRF_DENIED, f"port {port} is a control-plane port")
            if not policy.declares(host, port):
                raise ProxyError(errors.POLICY_DENIED, f"{host}:{port} is not a declared endpoint")
            endpoint = policy.match_endpoint(host, port, "/")
            skip = endpoint is not None and endpoint.tls == "skip"
            if connect_needs_inspection(policy, host, port) and not skip:
                if self._interceptor is None:
                    raise ProxyError(
                        errors.POLICY_DENIED,
                        f"{host}:{port} needs request inspection but interception is off",
                    )
                await self._intercept(agent, host, port)
                return
            if endpoint is None:
                raise ProxyError(
                    errors.POLICY_DENIED, f"{host}:{port} is declared for some paths only"
                )
            addr = await resolve_checked(self._resolver, host, port, endpoint.allowed_ips)
            # A tunnel holds its upstream connection for its whole life: it takes a slot.
            held = self._slots.try_acquire(dest) or await self._slots.acquire(
                dest, self.limits.destination_wait
            )
            if not held:
                self.counters.busy += 1
                raise ProxyError(
                    errors.UPSTREAM_BUSY, f"{host}:{port}: too many concurrent upstream connections"
                )
            up = await open_upstream(
                ("tcp", host, port), addr, tls=None, timeout=self.limits.connect_timeout
            )
        except BaseException as exc:
            if held:
                self._slots.release(dest)
            if not isinstance(exc, ProxyError):
                raise
            self._deny(
                agent.ch,
                exc,
                method="CONNECT",
                scheme="tcp",
                host=host,
                port=port,
                path="",
                close=True,
            )
            return
        try:
            self.counters.tunnels += 1
            agent.ch.write(_CONNECT_OK)
            await self._splice(agent, up)
        finally:
            self._slots.release(dest)

    async def _splice(self, agent: Conn, up: Upstream) -> None:
        """Relay raw bytes both ways until both sides are done or the tunnel idles out."""
        loop = asyncio.get_running_loop()
        last = [loop.time()]
        if agent.buf:
            up.ch.write(bytes(agent.buf))
            agent.buf.clear()

        async def pump(src: Channel, dst: PlainChannel | Channel) -> None:
            try:
                while True:
                    data = await src.read(1 << 18)
                    if not data:
                        break
                    last[0] = loop.time()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError, ssl.SSLError):
                pass
            if isinstance(dst, PlainChannel):
                with contextlib.suppress(OSError, RuntimeError):
                    dst.write_eof()

        tasks = {
            asyncio.create_task(pump(agent.ch, up.ch)),
            asyncio.create_task(pump(up.ch, agent.ch)),
        }
        idle = self.limits.tunnel_idle_timeout
        try:
            while tasks:
                _done, tasks = await asyncio.wait(tasks, timeout=idle / 4)
                if tasks and loop.time() - last[0] > idle:
                    self.counters.timeouts += 1
                    break
        finally:
            for t in tasks:
                t.cancel()
            up.close()

    async def _intercept(self, agent: Conn, host: str, port: int) -> None:
        assert self._interceptor is not None
        self.counters.intercepted += 1
        agent.ch.write(_CONNECT_OK)
        lim = self.limits
        try:
            if not agent.buf:
                async with asyncio.timeout(lim.head_timeout):
                    if not await agent.fill():
                        return
        except TimeoutError:
            self.counters.timeouts += 1
            return
        if agent.buf[0] != 0x16:  # not a TLS handshake record: plain HTTP in the tunnel
            await self._serve(agent, Tunnel("http", host, port))
            return
        try:
            ctx = self._interceptor.server_context(host)
        except Exception as exc:  # no leaf for this host: refuse the tunnel, fail closed
            self._tunnel_refused(host, port, "no interception certificate for host", exc)
            return
        try:
            tls = TlsServerChannel(agent.ch, ctx, bytes(agent.buf))
            agent.buf.clear()
            async with asyncio.timeout(lim.head_timeout):
                await tls.handshake()
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as exc:
            self._tunnel_refused(host, port, "agent TLS handshake failed", exc)
            return
        inner = Conn(tls)
        try:
            await self._serve(inner, Tunnel("https", host, port))
        finally:
            inner.release()
            with contextlib.suppress(Exception):
                tls.close()
