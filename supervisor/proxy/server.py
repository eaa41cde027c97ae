"""The asyncio proxy server: agent connections, CONNECT tunnels, interception, forwarding.

Every request goes through ``_serve_request`` whether it came in absolute-form, as plain
HTTP inside a CONNECT tunnel, or inside an intercepted TLS tunnel; the tunnel fixes scheme
and authority. One request is an ``Exchange`` (``supervisor.proxy.exchange``) that moves
through these states, each a short method filling in the context:

1. admit     ``_admit``: authority check, ``decide()`` (policy), audit-only violations.
1b. static   ``_substitute_static``: static credentials' placeholders replaced, or a
             SigV4 re-signing prepared (the rewrite seam in use, see below).
2. body      ``_read_body_start``: 100-continue, the chunked body's first line, the
             buffered start of a body; or ``_inspect_body`` when an L7 rule judges the
             body (read whole, bounded). Nothing has gone upstream yet.
3. route     ``_wait_slot`` (only when none is free), ``_take_pooled`` or a resolved,
             checked address.
4. credential ``_fetch_credential``: the token, before any upstream byte or connection.
5. prepare   ``prepare_upstream_request(ex)`` (pure): the head and body start to send.
6. send      ``_send``: open or reuse the upstream, write, relay the body, first head.
7. respond   ``_after_interim`` (1xx) then ``_respond`` (relay) or ``_switch`` (101).

Seams for what hooks into this path: a rule that needs the request body (a bounded read)
or that only audits runs in ``_admit`` after ``decide()`` or right after step 2; a rewrite
of header values, path, query or a bounded body changes the ``Exchange`` before step 5,
which is the only place the upstream head is built. The outcome of an exchange is an
``Outcome``: the agent connection is reusable, must close, or was switched.
CONNECT is decided by ``decide_connect()`` beside ``decide()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from supervisor.audit import SEVERITY_MEDIUM, AuditLog
from supervisor.binaries.identity import ConnectionIdentity
from supervisor.binaries.judge import ConnectionJudge
from supervisor.credentials.placeholders import MISMATCH, UNAVAILABLE
from supervisor.credentials.rewrite import hide_in_head
from supervisor.credentials.store import State as StaticState
from supervisor.grants.errors import GrantError
from supervisor.grants.source import TokenSource
from supervisor.profiles.model import Endpoint
from supervisor.proxy import errors
from supervisor.proxy.body import read_bounded_body, within_limit
from supervisor.proxy.channel import (
    AgentGone,
    AgentReader,
    Channel,
    Conn,
    PeerClosed,
    PlainChannel,
    TlsServerChannel,
    relay_chunked,
    start_chunked,
)
from supervisor.proxy.decision import (
    CredentialHeaders,
    Decision,
    decide,
    decide_connect,
    grant_audit,
    judge_l7,
)
from supervisor.proxy.egress import IPAddress, check_destination
from supervisor.proxy.errors import ProxyError, error_response, sanitize
from supervisor.proxy.exchange import (
    Exchange,
    Outcome,
    Target,
    absolute_target,
    check_tunnel_authority,
    prepare_upstream_request,
)
from supervisor.proxy.http1 import (
    AgentResponse,
    ParseError,
    RequestHead,
    ResponseHead,
    agent_response,
    is_event_stream,
    parse_request_head,
    parse_response_head,
    requested_upgrade,
    switch_accepted,
    switch_response_head,
)
from supervisor.proxy.policy import BinaryJudge, Interceptor, RoutePolicy
from supervisor.proxy.relay import Relay
from supervisor.proxy.slots import DestinationSlots
from supervisor.proxy.splice import SpliceGate, relay_length, relay_until_eof
from supervisor.proxy.static_creds import prepare as prepare_static
from supervisor.proxy.upstream import (
    Pool,
    Resolver,
    Upstream,
    open_upstream,
    resolve_checked,
    system_resolver,
)
from supervisor.proxy.upstream_proxy import UpstreamProxy
from supervisor.proxy.ws_creds import WsRefused
from supervisor.proxy.ws_policy import FrameFilter, TextPolicy
from supervisor.telemetry import ALLOWED, DENIED, ProxyStats, status_class

log = logging.getLogger("supervisor.proxy")


class _DialOptions(TypedDict, total=False):
    via: UpstreamProxy
    via_tls: ssl.SSLContext | None
    stats: ProxyStats


_CONNECT_OK = b"HTTP/1.1 200 Connection Established\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# OPTIONS with Max-Forwards: 0 (RFC 9110 7.6.2): the proxy is the final recipient.
_OPTIONS_HERE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_OPTIONS_HERE_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_SMALL_BODY = 64 * 1024
_MAX_RESPONSE_HEAD = 64 * 1024  # upstreams send larger heads (cookies) than we accept
_MAX_LINGERING = 256  # refused connections kept open briefly so the 503 arrives
_FD_HEADROOM = 64  # descriptors kept for listeners, the audit log, pools, grants

# (client address, proxy address) -> who opened the connection; raises IdentityError.
Identify = Callable[[tuple[str, int], tuple[str, int]], ConnectionIdentity]


def _fd_bounded(cap: int) -> int:
    """``cap`` held below RLIMIT_NOFILE: an agent connection can hold two descriptors."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return cap
    return max(1, min(cap, (soft - _FD_HEADROOM) // 2))


def _spare_fds(agents: int) -> int:
    """Descriptors left when ``agents`` connections hold two each (and the headroom):
    what zero-copy relays may hold (``SpliceGate``); none, and everything is copied."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, soft - _FD_HEADROOM - 2 * agents)


@dataclass(frozen=True, slots=True)
class Limits:
    """Timeouts and resource caps.

    Caps (floods): at most ``max_agent_connections`` agent connections are served at once
    (tunnels included); one more is answered ``503 proxy_overloaded`` with
    ``Connection: close`` before any of its bytes is read, and closed. The cap is also
    held below what RLIMIT_NOFILE allows (two descriptors per connection plus headroom),
    so a flood cannot make ``accept`` fail for everyone. At most
    ``max_active_per_destination`` upstream connections per (host, port) are in use at
    once (idle pooled ones do not count; CONNECT tunnels and switched WebSocket connections
    do, for their whole life); a request over the cap waits
    its turn up to ``destination_wait`` seconds, then gets ``503 upstream_busy``.
    """

    idle_timeout: float = 60.0  # keep-alive wait for the next request
    head_timeout: float = 10.0  # from the first byte of a head to its end (slowloris)
    body_timeout: float = 60.0  # between two reads of the agent's request body
    connect_timeout: float = 10.0
    # A response: its first byte within response_timeout of the request; then no total
    # deadline, at most upstream_idle_timeout between bytes (none for text/event-stream
    # while the agent stays connected). Long reasoning calls pause for minutes.
    response_timeout: float = 600.0
    upstream_idle_timeout: float = 600.0
    tunnel_idle_timeout: float = 300.0
    upgraded_idle_timeout: float = 600.0  # a switched (WebSocket) connection, both ways
    max_idle_per_destination: int = 128
    pool_idle_seconds: float = 30.0
    close_grace: float = 5.0
    backlog: int = 4096
    max_agent_connections: int = 4096
    max_active_per_destination: int = 256
    destination_wait: float = 10.0
    send_timeout: float = 60.0  # a peer that reads none of our pending bytes for this long
    max_idle_total: int = 256  # idle pooled upstream connections, all destinations together
    # Large plain bodies and raw tunnels move socket to socket in the kernel (splice):
    # behaviour and limits as copied, without ~1 s of CPU per GiB (supervisor.proxy.splice).
    zero_copy: bool = True


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
    upgrades: int = 0  # exchanges switched to another protocol (WebSocket)
    agent_gone: int = 0  # agents that left while their response was awaited or streamed


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
        upstream_proxy: UpstreamProxy | None = None,
        upstream_proxy_tls: ssl.SSLContext | None = None,
        identify: Identify | None = None,
        static_credentials: Callable[[], StaticState | None] | None = None,
        stats: ProxyStats | None = None,
    ) -> None:
        self._sock = listen_sock
        self._static = static_credentials
        self._policy = policy
        self._tokens = tokens
        self._credential_headers = CredentialHeaders()
        self._audit = audit
        self._upstream_ssl = upstream_ssl
        self._interceptor = interceptor
        self._resolver = resolver
        self._upstream_proxy = upstream_proxy
        self._upstream_proxy_tls = upstream_proxy_tls
        self._identify = identify  # binary identity of a connection (ARCHITECTURE.md 11)
        self.limits = limits or Limits()
        self.counters = Counters()
        self.stats = stats if stats is not None else ProxyStats()  # for the metrics
        self._pool = Pool(
            self.limits.max_idle_per_destination,
            self.limits.pool_idle_seconds,
            self.limits.max_idle_total,
        )
        self._slots = DestinationSlots(self.limits.max_active_per_destination)
        self._max_agents = _fd_bounded(self.limits.max_agent_connections)
        self._zero_copy = (
            SpliceGate(_spare_fds(self._max_agents)) if self.limits.zero_copy else None
        )
        self._last_refusal_log = -1e9
        self._lingering = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pruner: asyncio.Task[None] | None = None
        self._idle_tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> asyncio.StreamReaderProtocol:
            # asyncio.start_server's own factory, with a reader that reports the agent's
            # end (see channel.EofWatch).
            return asyncio.StreamReaderProtocol(AgentReader(1 << 18, loop), self._on_client)

        # create_server re-listens the handed socket: keep a deep accept queue for bursts.
        self._server = await loop.create_server(
            protocol, sock=self._sock, backlog=self.limits.backlog
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

    def _via(self, host: str, addr: IPAddress) -> _DialOptions:
        """``open_upstream``'s arguments: the statistics, and the upstream proxy when this
        destination uses it (ARCHITECTURE.md 7)."""
        proxy = self._upstream_proxy
        if proxy is None or not proxy.routes(host, addr):
            return {"stats": self.stats}
        return {"via": proxy, "via_tls": self._upstream_proxy_tls, "stats": self.stats}

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
        watch = reader.watch if isinstance(reader, AgentReader) else None
        agent = Conn(
            PlainChannel(reader, writer, self.limits.send_timeout), self._judge(writer), watch
        )
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

    def _judge(self, writer: asyncio.StreamWriter) -> ConnectionJudge | None:
        """The connection's binary judge; the lookup itself waits for an endpoint with
        ``binaries`` (connections that never meet one cost nothing)."""
        if self._identify is None:
            return None
        identify = self._identify
        peer = writer.get_extra_info("peername")
        ours = writer.get_extra_info("sockname")
        return ConnectionJudge(
            lambda: identify((str(peer[0]), int(peer[1])), (str(ours[0]), int(ours[1])))
        )

    async def _judge_ready(self, judge: BinaryJudge | None) -> None:
        """Look the connecting executable up off the loop, once per connection, when some
        endpoint is restricted to binaries: the first sight of a binary hashes it."""
        if self._lookup_due(judge):
            assert isinstance(judge, ConnectionJudge)
            await asyncio.to_thread(judge.prime)

    def _lookup_due(self, judge: BinaryJudge | None) -> bool:
        """``_judge_ready`` has a lookup to wait for (callers skip the await otherwise)."""
        return (
            isinstance(judge, ConnectionJudge)
            and not judge.looked_up
            and getattr(self._policy(), "binaries_enforced", False)
        )

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

    async def _serve(self, agent: Conn, tunnel: Target | None) -> None:
        """Serve requests on one agent connection (or tunnel) until it must close."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        while True:
            req = await self._next_request(agent, tunnel, task)
            if req is None:
                return
            self.counters.requests += 1
            if req.method == "CONNECT":
                if tunnel is not None:
                    self._reject(agent.ch, ParseError("CONNECT inside a tunnel"))
                    return
                await self._connect(agent, req)
                return
            started = loop.time()
            outcome = await self._serve_request(agent, req, tunnel)
            if outcome is not Outcome.SWITCHED:  # a relay's life is not a request's duration
                self.stats.duration.observe(loop.time() - started)
            if outcome is not Outcome.REUSABLE:
                return

    async def _next_request(
        self, agent: Conn, tunnel: Target | None, task: asyncio.Task[Any] | None
    ) -> RequestHead | None:
        """The next parsed request head; None when the connection is to close (EOF, idle
        or head timeout, a rejected head: answered here)."""
        lim = self.limits
        # Between requests the connection is idle: close() may cut it at once.
        idle = None if agent.buf else task
        try:
            # Answers the agent has not read yet (refusals are written without waiting)
            # stop us reading more requests: bounded by send_timeout, then cut.
            await agent.ch.drain()
            if idle is not None:
                if self._closing:
                    return None
                self._idle_tasks.add(idle)
            try:
                head = await agent.read_head(lim.idle_timeout, lim.head_timeout)
            finally:
                if idle is not None:
                    self._idle_tasks.discard(idle)
            if head is None:
                return None
            return parse_request_head(head, origin_ok=tunnel is not None)
        except ParseError as exc:
            self._reject(agent.ch, exc)
        except TimeoutError:
            self.counters.timeouts += 1
        return None

    def _reject(self, ch: Channel, exc: ParseError) -> None:
        self.counters.parse_errors += 1
        self.stats.request(DENIED, errors.BAD_REQUEST)
        self._audit.parse_rejection(reason=exc.reason, status_code=exc.status)
        ch.write(error_response(exc.status, errors.BAD_REQUEST, exc.reason, close=True))

    def _tunnel_refused(self, host: str, port: int, message: str, exc: BaseException) -> None:
        """An intercepted tunnel that could not be opened: logged and audited, then closed."""
        self.stats.request(DENIED, "interception_failed")
        log.warning("%s (%s:%d): %s", message, host, port, sanitize(str(exc)))
        self._audit_connect("https", host, port, message, reason=sanitize(type(exc).__name__))

    def _audit_connect(self, scheme: str, host: str, port: int, message: str, **kw: Any) -> None:
        """The OCSF event of a refused CONNECT (no path: the tunnel never carried one)."""
        self._audit.http_event(
            method="CONNECT",
            scheme=scheme,
            host=host,
            port=port,
            path="",
            allowed=False,
            message=message,
            **kw,
        )

    def _count_denial(self, exc: ProxyError) -> None:
        self.stats.request(DENIED, exc.code)
        c = self.counters
        if exc.code == errors.TOKEN_GRANT_FAILED:
            c.grant_failures += 1
        elif exc.code == errors.UPSTREAM_UNREACHABLE:
            c.upstream_errors += 1
        else:
            c.denied += 1

    def _audit_exchange(self, ex: Exchange, *, allowed: bool, message: str, **kw: Any) -> None:
        """The one OCSF event shape of an exchange (method, origin, path, binding)."""
        t = ex.target
        self._audit.http_event(
            method=ex.req.method,
            scheme=t.scheme,
            host=t.host,
            port=t.port,
            path=ex.req.path,
            allowed=allowed,
            message=message,
            binding_id=ex.binding_id,
            **kw,
        )

    def _deny_exchange(self, ex: Exchange, exc: ProxyError, *, close: bool) -> None:
        self._count_denial(exc)
        self._audit_exchange(
            ex, allowed=False, message=exc.code, status_code=exc.status, reason=exc.audit_detail,
            process=getattr(exc, "binary", None),
        )
        ex.agent.ch.write(error_response(exc.status, exc.code, exc.detail, close=close))

    def _deny_connect(self, agent: Conn, exc: ProxyError, host: str, port: int) -> None:
        self._count_denial(exc)
        # audit_detail may say more than the agent is told
        self._audit_connect(
            "tcp",
            host,
            port,
            exc.code,
            status_code=exc.status,
            reason=exc.audit_detail,
            process=getattr(exc, "binary", None),
        )
        agent.ch.write(error_response(exc.status, exc.code, exc.detail, close=True))

    # -- one request -----------------------------------------------------------------

    async def _serve_request(self, agent: Conn, req: RequestHead, tunnel: Target | None) -> Outcome:
        """Handle one non-CONNECT request through the exchange states (module docstring)."""
        ex = Exchange(agent, req, tunnel or absolute_target(req), tunnel is not None)
        try:
            try:
                answered = await self._prepare(ex)
                if answered is not None:
                    return answered
            except ProxyError as exc:
                return self._refuse_before_upstream(ex, exc)
            except ParseError as exc:  # the start of a chunked body
                self._reject(agent.ch, exc)
                return Outcome.CLOSE
            try:
                return await self._forward(ex, prepare_upstream_request(ex))
            except ProxyError as exc:
                self._deny_exchange(ex, exc, close=True)
                return Outcome.CLOSE
        finally:
            if ex.slot_held:
                self._slots.release(ex.target.dest)

    async def _prepare(self, ex: Exchange) -> Outcome | None:
        """Every state before an upstream byte (admit .. credential); an Outcome when the
        proxy answered the request itself. Each awaits only when it has to: most requests
        wait for nothing before the upstream write."""
        req, dest = ex.req, ex.target.dest
        if self._lookup_due(ex.agent.judge):  # once per connection at most
            await self._judge_ready(ex.agent.judge)
        decision = self._admit(ex)
        if req.max_forwards == 0:
            return self._answer_options(ex)
        if self._static is not None:
            await self._substitute_static(ex)
        if decision.pending is not None:
            await self._inspect_body(ex)
        elif req.has_body:
            await self._read_body_start(ex)
        if not self._slots.try_acquire(dest):
            await self._wait_slot(dest)
        ex.slot_held = True
        if not self._take_pooled(ex):
            ex.addr = await resolve_checked(
                self._resolver, dest[0], dest[1], ex.allowed_ips, private_ok=decision.private_ok
            )
        if decision.binding is not None:
            await self._fetch_credential(ex)
        return None

    def _refuse_before_upstream(self, ex: Exchange, exc: ProxyError) -> Outcome:
        req, t = ex.req, ex.target
        if exc.code in (MISMATCH, UNAVAILABLE):
            self._audit.detection_finding(
                code=exc.code, method=req.method, host=t.host, port=t.port, path=req.path
            )
        # A path refused as malformed closes like a parse rejection (ARCHITECTURE.md 6).
        close = ex.close_on_error or exc.code == errors.BAD_REQUEST
        self._deny_exchange(ex, exc, close=close)
        return Outcome.CLOSE if close else Outcome.REUSABLE

    def _admit(self, ex: Exchange) -> Decision:
        """The policy decision; an access rule broken under ``enforcement: audit`` is logged."""
        req, t = ex.req, ex.target
        if ex.in_tunnel:
            check_tunnel_authority(req, t)
        d = ex.decision = decide(
            self._policy(),
            method=req.method,
            scheme=t.scheme,
            host=t.host,
            port=t.port,
            path=req.path,
            headers=req.headers,
            binary=ex.agent.judge,
            query=req.query,
            has_body=req.has_body,
        )
        if "upgrade" in req.connection_tokens:  # the common case skips the call
            ex.upgrade = requested_upgrade(req)
        if d.path is not None:
            req.path = d.path  # the canonical path: what was judged is what is sent
        self._audit_violation(ex, d.audit_violation)
        return d

    def _audit_violation(self, ex: Exchange, violation: str | None) -> None:
        """A request denied by rules but only audited (``enforcement: audit``): forwarded."""
        if violation is not None:
            self._audit_exchange(
                ex,
                allowed=True,
                message="access rule violated (enforcement: audit)",
                reason=violation,
                severity=SEVERITY_MEDIUM,  # a violation let through, not routine
            )
            log.warning("audit: would deny %s %s:%d (%s)", ex.req.method, ex.target.host,
                        ex.target.port, sanitize(violation))

    async def _inspect_body(self, ex: Exchange) -> None:
        """A GraphQL/JSON-RPC/MCP request: read the whole body (bounded), judge it, and
        forward exactly the bytes judged (re-framed with Content-Length)."""
        d, req = ex.decision, ex.req
        assert d is not None and d.pending is not None
        plan = d.pending
        if ex.body_buffered:  # static credentials read it whole: judge the agent's bytes
            agent_body = ex.agent_body if ex.agent_body is not None else ex.body_start
            body = within_limit(agent_body, plan.body_limit)
        else:
            if req.expect_continue and req.has_body:
                ex.agent.ch.write(_CONTINUE)
            body = await read_bounded_body(
                ex.agent, req, plan.body_limit, self.limits.body_timeout
            )
            ex.body_start, ex.body_left, ex.decoder = body, 0, None
            ex.body_buffered = True
            length = len(body) if req.has_body else None
            req.chunked, req.content_length = False, length
            if ex.wire is not None:
                ex.wire = dataclasses.replace(ex.wire, chunked=False, content_length=length)
        self._audit_violation(ex, judge_l7(plan, req.method, body, req.headers))

    def _answer_options(self, ex: Exchange) -> Outcome:
        """OPTIONS with Max-Forwards: 0 is answered here; a body, never read, ends the
        connection."""
        keep = ex.req.keep_alive and not ex.req.has_body
        self.stats.request(ALLOWED, "answered_by_proxy")
        ex.agent.ch.write(_OPTIONS_HERE if keep else _OPTIONS_HERE_CLOSE)
        return Outcome.REUSABLE if keep else Outcome.CLOSE

    async def _substitute_static(self, ex: Exchange) -> None:
        """Static credentials (ARCHITECTURE.md 9): placeholders the agent sent are replaced
        for the declaring profiles' endpoints, SigV4 endpoints re-signed; refused otherwise
        (403 credential_endpoint_mismatch, 500 credential_unavailable), before any upstream
        byte or connection."""
        state = self._static() if self._static is not None else None
        if state is None:
            return
        t = ex.target
        prepared = await prepare_static(
            state, ex.agent, ex.req, scheme=t.scheme, host=t.host, port=t.port,
            body_timeout=self.limits.body_timeout, upgrade=ex.upgrade,
        )
        if prepared is None:
            return
        ex.ws_messages = prepared.ws
        wire = dataclasses.replace(
            ex.req, path=prepared.path, query=prepared.query, headers=prepared.headers
        )
        if prepared.body is not None:  # read whole: sent with a Content-Length
            wire = dataclasses.replace(
                wire, content_length=len(prepared.body), chunked=False, expect_continue=False
            )
            ex.body_start, ex.body_buffered = prepared.body, True
            ex.agent_body = prepared.agent_body
        ex.wire, ex.sign, ex.substituted = wire, prepared.signer, prepared.substituted
        ex.reflected = prepared.reflected

    async def _read_body_start(self, ex: Exchange) -> None:
        """Validate the start of the body before anything goes upstream."""
        if ex.body_buffered:
            return
        req, agent = ex.req, ex.agent
        if req.expect_continue:
            agent.ch.write(_CONTINUE)
        if req.chunked:
            ex.decoder, ex.body_start = await start_chunked(agent, self.limits.head_timeout)
        elif req.content_length:
            # Body bytes already buffered (the common small case) go out with the head.
            ex.body_start = agent.take(min(req.content_length, _SMALL_BODY))
            ex.body_left = req.content_length - len(ex.body_start)

    async def _wait_slot(self, dest: tuple[str, int]) -> None:
        """Wait for a destination slot (``Limits.max_active_per_destination``) when none
        was free at once, or 503 upstream_busy."""
        if await self._slots.acquire(dest, self.limits.destination_wait):
            return
        self.counters.busy += 1
        raise ProxyError(
            errors.UPSTREAM_BUSY, f"{dest[0]}:{dest[1]}: too many concurrent upstream connections"
        )

    def _take_pooled(self, ex: Exchange) -> bool:
        """A pooled connection still admitted by the policy (then ``ex.addr`` is its)."""
        t, nets = ex.target, ex.allowed_ips
        up = self._pool.take((t.scheme, t.host, t.port))
        if up is None:
            return False
        if up.checked_for is not nets:
            private_ok = ex.decision is not None and ex.decision.private_ok
            if check_destination(up.addr, t.port, nets, private_ok=private_ok):
                up.close()  # the policy changed since this connection was checked
                return False
            up.checked_for = nets
        self.counters.upstream_reused += 1
        ex.upstream, ex.addr = up, up.addr
        return True

    async def _fetch_credential(self, ex: Exchange) -> None:
        assert ex.decision is not None and ex.decision.binding is not None
        binding = ex.decision.binding
        try:
            ex.credential = self._credential_headers.header(
                binding, await self._tokens.token_for(binding)
            )
        except GrantError as exc:  # the agent: step and status, never the issuer's text
            raise ProxyError(
                errors.TOKEN_GRANT_FAILED, str(exc), audit_detail=grant_audit(exc)
            ) from None
        finally:
            if ex.credential is None and ex.upstream is not None:
                self._pool.give(ex.upstream)  # no token: nothing is written upstream
                ex.upstream = None

    async def _open(self, ex: Exchange) -> Upstream:
        """A new upstream connection to the checked address."""
        t = ex.target
        assert ex.addr is not None
        tls = self._upstream_tls() if t.scheme == "https" else None
        up = await open_upstream(
            (t.scheme, t.host, t.port),
            ex.addr,
            tls=tls,
            timeout=self.limits.connect_timeout,
            send_timeout=self.limits.send_timeout,
            **self._via(t.host, ex.addr),
        )
        up.checked_for = ex.allowed_ips  # ``addr`` came from resolve_checked under these
        self.counters.upstream_new += 1
        ex.upstream = up
        return up

    async def _forward(self, ex: Exchange, opening: bytes) -> Outcome:
        """Send the request, then relay the final response (the exchange's last states)."""
        head = await self._send(ex, opening)
        up = ex.upstream
        if head is None or up is None:
            return Outcome.CLOSE  # the agent stopped sending its body: nothing to answer
        resp = self._response_head(up, head)
        if resp.status < 200:
            resp = await self._after_interim(ex, up, resp)
        self.stats.request(ALLOWED, status_class(resp.status))
        if resp.status == 101:
            return await self._switch(ex, up, resp)
        if (ex.credential is not None or ex.substituted) and self._audit.enabled:
            self._audit_exchange(
                ex,
                allowed=True,
                message="credential injected" if ex.credential else "credential substituted",
                status_code=resp.status,
                dst_ip=str(up.addr),
            )
        return await self._respond(ex, up, resp)

    async def _send(self, ex: Exchange, opening: bytes) -> bytes | None:
        """Write the request upstream and read the first response head (None: the agent
        stopped sending its body). A reused connection that turns out closed is replaced
        once by a new one when the request has no body (a body is consumed as relayed)."""
        lim, t, req = self.limits, ex.target, ex.req
        retry = ex.upstream is not None and not req.has_body
        while True:
            up = ex.upstream or await self._open(ex)
            try:
                up.ch.write(opening)
                if ex.body_left or ex.decoder is not None:
                    await self._send_body(ex, up)
                else:
                    await up.ch.drain()
                # The first byte may take long (a model thinking): the agent may leave.
                head = await ex.agent.watch.guard(
                    up.conn.read_head(
                        lim.response_timeout, lim.response_timeout, _MAX_RESPONSE_HEAD
                    )
                )
            except (PeerClosed, TimeoutError) as exc:
                up.close()
                if isinstance(exc, AgentGone):
                    self.counters.agent_gone += 1
                if isinstance(exc, TimeoutError) and not req.has_body:
                    raise ProxyError(errors.UPSTREAM_UNREACHABLE, "upstream timed out") from None
                return None
            except (ConnectionError, OSError, ParseError) as exc:
                up.close()
                if retry and not isinstance(exc, ParseError):
                    retry, ex.upstream = False, None
                    continue
                raise ProxyError(
                    errors.UPSTREAM_UNREACHABLE, f"{t.host}:{t.port}: connection failed"
                ) from None
            if head is not None:
                return head
            up.close()
            if not retry:
                raise ProxyError(
                    errors.UPSTREAM_UNREACHABLE, f"{t.host}:{t.port}: closed without response"
                )
            retry, ex.upstream = False, None

    async def _send_body(self, ex: Exchange, up: Upstream) -> None:
        """The rest of the body, relayed from the agent as it arrives."""
        timeout = self.limits.body_timeout
        if ex.decoder is not None and not ex.decoder.done:
            await relay_chunked(ex.agent, up.ch, timeout, decoder=ex.decoder)
        elif ex.body_left:
            await relay_length(ex.agent, up.ch, ex.body_left, timeout, self._zero_copy)
        else:
            await up.ch.drain()

    def _response_head(self, up: Upstream, head: bytes) -> ResponseHead:
        try:
            return parse_response_head(head)
        except ParseError as exc:
            up.close()
            raise ProxyError(
                errors.UPSTREAM_UNREACHABLE, f"invalid upstream response: {exc.reason}"
            ) from None

    async def _after_interim(self, ex: Exchange, up: Upstream, resp: ResponseHead) -> ResponseHead:
        """Past interim (1xx) heads to the final one (we answered Expect ourselves); a 101
        answering the agent's upgrade is final, any other 101 an error."""
        lim = self.limits
        while 100 <= resp.status < 200:
            if resp.status == 101:
                if switch_accepted(ex.upgrade, resp):
                    return resp
                up.close()
                raise ProxyError(
                    errors.UPSTREAM_UNREACHABLE,
                    "invalid upstream response: unexpected protocol switch",
                )
            try:
                got = await up.conn.read_head(
                    lim.response_timeout, lim.response_timeout, _MAX_RESPONSE_HEAD
                )
            except (ParseError, TimeoutError, ConnectionError):
                got = None
            if got is None:
                up.close()
                raise ProxyError(
                    errors.UPSTREAM_UNREACHABLE, "invalid upstream response: no final response"
                )
            resp = self._response_head(up, got)
        return resp

    async def _stream_body(
        self, up: Upstream, resp: ResponseHead, out: AgentResponse, ach: Channel
    ) -> None:
        """Relay a body as it arrives: no total deadline; between two reads at most
        ``upstream_idle_timeout``, except an event stream, which may pause as long as the
        agent stays connected (the caller's guard notices it leaving)."""
        idle = None if is_event_stream(resp) else self.limits.upstream_idle_timeout
        if out.mode == "length":
            assert resp.content_length is not None
            first = up.conn.take(resp.content_length)
            rest = resp.content_length - len(first)
            await relay_length(up.conn, ach, rest, idle, self._zero_copy, out.head + first)
        elif out.mode == "chunked":
            await relay_chunked(up.conn, ach, idle, encode=out.encode_chunked, first=out.head)
        else:
            await relay_until_eof(up.conn, ach, idle, self._zero_copy, out.head)

    async def _switch(self, ex: Exchange, up: Upstream, resp: ResponseHead) -> Outcome:
        """The upstream switched protocols: its 101 goes to the agent as is, then the
        connection is a two-way relay, still holding its slot, until either side is done."""
        self.counters.upgrades += 1
        self._audit_exchange(
            ex,
            allowed=True,
            message=f"protocol switched to {ex.upgrade}",
            status_code=101,
            dst_ip=str(up.addr),
        )
        try:
            if ex.reflected:  # e.g. a subprotocol echoing the one the agent offered
                resp.reason, resp.headers = hide_in_head(resp.reason, resp.headers, ex.reflected)
            ex.agent.ch.write(switch_response_head(resp))
            messages: FrameFilter | None = ex.ws_messages
            d = ex.decision
            if d is not None and d.ws_text_denied is not None:
                messages = TextPolicy(d.ws_text_denied, then=messages)
            refused = await self._relay(
                ex.agent, up.conn, self.limits.upgraded_idle_timeout, messages
            )
            if refused is not None:  # a placeholder that may not go there: 1008, both ways
                t = ex.target
                if refused.code in (MISMATCH, UNAVAILABLE):
                    self._audit.detection_finding(
                        code=refused.code, method=ex.req.method, host=t.host, port=t.port,
                        path=ex.req.path,
                    )
                self._audit_exchange(
                    ex, allowed=False, message=refused.code, reason=sanitize(refused.reason)
                )
        finally:
            up.close()
        return Outcome.SWITCHED

    async def _respond(self, ex: Exchange, up: Upstream, resp: ResponseHead) -> Outcome:
        """Relay the response head and body to the agent; pool the upstream if it may."""
        if ex.reflected:  # a value this request carried never comes back in the head
            resp.reason, resp.headers = hide_in_head(resp.reason, resp.headers, ex.reflected)
        out = agent_response(ex.req, resp)
        ach = ex.agent.ch
        try:
            if out.mode == "none":
                ach.write(out.head)
            elif out.mode == "length" and len(up.conn.buf) >= (resp.content_length or 0):
                # The whole (small) body is buffered: one write, head and body.
                ach.write(out.head + up.conn.take(resp.content_length or 0))
            else:
                await ex.agent.watch.guard(self._stream_body(up, resp, out, ach))
            await ach.drain()
        except (ParseError, AgentGone, TimeoutError) as exc:
            up.close()  # framing broke, the agent left, or a side idled: cut the agent too
            if isinstance(exc, AgentGone):
                self.counters.agent_gone += 1
            elif isinstance(exc, TimeoutError):
                self.counters.timeouts += 1
            return Outcome.CLOSE
        except BaseException:
            up.close()
            raise
        if out.upstream_reusable:
            self._pool.give(up)
        else:
            up.close()
        return Outcome.REUSABLE if out.keep_alive else Outcome.CLOSE

    # -- CONNECT ---------------------------------------------------------------------

    async def _connect(self, agent: Conn, req: RequestHead) -> None:
        host, port = req.host, req.port or 443
        self.counters.connects += 1
        await self._judge_ready(agent.judge)
        try:
            d = decide_connect(
                self._policy(),
                host=host,
                port=port,
                can_intercept=self._interceptor is not None,
                binary=agent.judge,
            )
        except ProxyError as exc:
            self._deny_connect(agent, exc, host, port)
            return
        if d.intercept or self._static_inside(host, port, d.endpoint):
            await self._intercept(agent, host, port)
        else:
            assert d.endpoint is not None
            await self._tunnel(agent, host, port, d.endpoint, d.private_ok)

    def _static_inside(self, host: str, port: int, endpoint: Endpoint | None) -> bool:
        """A tunnel to an inspected endpoint bound to static credentials is opened up: the
        agent's placeholders can only be replaced in requests the proxy reads."""
        if self._interceptor is None or endpoint is None or self._static is None:
            return False
        if endpoint.protocol is None or endpoint.tls == "skip":
            return False
        state = self._static()
        return state is not None and state.table.covers(host, port)

    async def _tunnel(
        self, agent: Conn, host: str, port: int, endpoint: Endpoint, private_ok: bool = False
    ) -> None:
        """A raw byte tunnel; it holds its upstream connection, and a slot, for its life."""
        held = False
        try:
            addr = await resolve_checked(
                self._resolver, host, port, endpoint.allowed_ips, private_ok=private_ok
            )
            if not self._slots.try_acquire((host, port)):
                await self._wait_slot((host, port))
            held = True
            up = await open_upstream(
                ("tcp", host, port),
                addr,
                tls=None,
                timeout=self.limits.connect_timeout,
                send_timeout=self.limits.send_timeout,
                **self._via(host, addr),
            )
        except BaseException as exc:
            if held:
                self._slots.release((host, port))
            if not isinstance(exc, ProxyError):
                raise
            self._deny_connect(agent, exc, host, port)
            return
        try:
            self.counters.tunnels += 1
            self.stats.request(ALLOWED, "tunnel")
            agent.ch.write(_CONNECT_OK)
            await self._relay(agent, up.conn, self.limits.tunnel_idle_timeout)
        finally:
            up.close()
            self._slots.release((host, port))

    async def _relay(
        self, agent: Conn, up: Conn, idle: float, messages: FrameFilter | None = None
    ) -> WsRefused | None:
        """Bytes both ways (``relay.Relay``) until done; ``messages`` filters the agent's
        WebSocket messages. An idle or stalled relay counts as a timeout."""
        relay = Relay(agent, up, messages, self._zero_copy)
        if await relay.run(idle):
            self.counters.timeouts += 1
        return relay.refused

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
            await self._serve(agent, Target("http", host, port))
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
        inner = Conn(tls, agent.judge, agent.watch)  # the same connection, the same process
        try:
            await self._serve(inner, Target("https", host, port))
        finally:
            inner.release()
            with contextlib.suppress(Exception):
                tls.close()
