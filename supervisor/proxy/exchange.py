"""One request/response exchange: its context, its outcome, and the steps that do no I/O.

The server fills an ``Exchange`` state by state (see ``supervisor.proxy.server``); the
pure steps here read it: which origin a request addresses, and the bytes that open the
upstream request. Anything that must change what goes upstream (a rewritten header, path
or body) changes the context before ``prepare_upstream_request`` reads it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from supervisor.profiles.model import IPNetwork
from supervisor.proxy import errors
from supervisor.proxy.channel import Conn
from supervisor.proxy.decision import Decision
from supervisor.proxy.egress import IPAddress
from supervisor.proxy.errors import ProxyError
from supervisor.proxy.http1 import (
    ChunkedDecoder,
    Headers,
    RequestHead,
    default_port,
    host_header,
    upstream_request_head,
)
from supervisor.proxy.upstream import Upstream
from supervisor.proxy.ws_creds import ClientMessages


class Outcome(enum.Enum):
    """What is left of the agent connection once an exchange is over."""

    REUSABLE = "reusable"  # the next request may follow on the same connection
    CLOSE = "close"  # it must close: asked for, framing unknown or broken, or an error
    SWITCHED = "switched"  # it became a two-way relay (a protocol switch), now finished


class Target(NamedTuple):
    """The origin a request goes to; fixed by the tunnel for requests inside one."""

    scheme: str
    host: str
    port: int

    @property
    def dest(self) -> tuple[str, int]:
        return self.host, self.port


def absolute_target(req: RequestHead) -> Target:
    """The origin named by an absolute-form request (the forward proxy's case)."""
    scheme = req.scheme or "http"
    return Target(scheme, req.host, req.port or default_port(scheme))


def check_tunnel_authority(req: RequestHead, tunnel: Target) -> None:
    """A request inside a tunnel may not name another origin than the tunnel's."""
    scheme = req.scheme or tunnel.scheme
    port = req.port or default_port(scheme)
    if (scheme, req.host, port) != (tunnel.scheme, tunnel.host, tunnel.port):
        raise ProxyError(
            errors.AUTHORITY_MISMATCH,
            f"request names {req.host}:{port} inside a tunnel to {tunnel.host}:{tunnel.port}",
        )


@dataclass(slots=True, eq=False)
class Exchange:
    """Everything known about one request while it is served, filled in as it advances."""

    agent: Conn
    req: RequestHead
    target: Target
    in_tunnel: bool
    decision: Decision | None = None  # set once the policy admitted the request
    upgrade: str | None = None  # protocol the agent asks to switch to, when relayed
    body_start: bytes = b""  # body bytes already read, sent right after the head
    decoder: ChunkedDecoder | None = None  # a chunked body part-way through decoding
    body_left: int = 0  # Content-Length bytes still to relay from the agent
    slot_held: bool = False  # a destination slot is held (released when the exchange ends)
    upstream: Upstream | None = None  # pooled connection taken, then the one in use
    addr: IPAddress | None = None  # the checked address to connect to
    credential: tuple[str, str] | None = None  # the one header to inject (name, value)
    # Static credentials (ARCHITECTURE.md 9): the request as it goes on the wire, with its
    # placeholders replaced (``req`` stays as the agent sent it: it is what gets logged),
    # and the SigV4 signer applied to the final head.
    wire: RequestHead | None = None
    sign: Callable[[str, str, Headers], Headers] | None = None
    body_buffered: bool = False  # the whole body is in ``body_start`` (rewritten or signed)
    agent_body: bytes | None = None  # that body as the agent sent it (what L7 rules judge)
    reflected: tuple[tuple[str, str], ...] = ()  # values sent, hidden in the response head
    substituted: bool = False  # a static credential went into this request
    ws_messages: ClientMessages | None = None  # parsed client messages once switched

    @property
    def close_on_error(self) -> bool:
        """A refusal must close the connection: an unread body, or the agent asked to."""
        return self.req.has_body or not self.req.keep_alive

    @property
    def binding_id(self) -> str | None:
        d = self.decision
        return d.binding.id if d is not None and d.binding is not None else None

    @property
    def allowed_ips(self) -> tuple[IPNetwork, ...]:
        assert self.decision is not None
        return self.decision.endpoint.allowed_ips


def prepare_upstream_request(ex: Exchange) -> bytes:
    """The bytes that open the upstream request: the head, then the body bytes already read.

    Host is regenerated from the judged target; the agent's own copies of the credential
    header are removed and the injected one added (exactly one). Pure: a rewrite of
    headers, path, query or a buffered body belongs in the context before this step, so
    what is decided, audited and sent stay the same.
    """
    t = ex.target
    authority = host_header(t.host, t.port, t.scheme)
    req = ex.wire if ex.wire is not None else ex.req
    head = upstream_request_head(req, authority, ex.credential, upgrade=ex.upgrade, sign=ex.sign)
    return head + ex.body_start if ex.body_start else head
