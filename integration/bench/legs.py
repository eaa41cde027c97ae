"""Which bulk and stream legs a run has: built from the endpoints that actually started.

A leg whose proxy or server did not start is left out (its component already reported
why); the targets that need it then read "not measured".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from integration.bench import metrics as m
from integration.bench.bulk import BulkLeg
from integration.bench.nginx import Upstream
from integration.bench.procs import LOOPBACK
from integration.bench.streams import StreamLeg

PAYLOAD_NAME = "payload.bin"


@dataclass(frozen=True)
class StreamPorts:
    """The stream server's listeners: plain (bound), TLS (bound, intercepted), TLS
    (declared ``tls: skip``, tunnelled)."""

    plain: int
    tls: int
    tunnel: int


@dataclass
class Endpoints:
    up: Upstream
    bench_ca: Path
    streams: StreamPorts | None = None
    tinyproxy: int | None = None
    mitmproxy: int | None = None
    mitm_ca: Path | None = None
    ours: int | None = None
    ours_ca: Path | None = None
    ours_pid: int | None = None  # our proxy's process: its CPU time per bulk transfer


def _proxy(port: int) -> str:
    return f"http://{LOOPBACK}:{port}"


def bulk_legs(ep: Endpoints) -> list[BulkLeg]:
    up, s = ep.up, ep.streams
    down_http = f"http://{LOOPBACK}:{up.bound_port}/bulk/{PAYLOAD_NAME}"
    down_tls = f"https://{LOOPBACK}:{up.tls_port}/bulk/{PAYLOAD_NAME}"
    down_tunnel = f"https://{LOOPBACK}:{up.tunnel_port}/bulk/{PAYLOAD_NAME}"
    up_http = f"http://{LOOPBACK}:{s.plain}/sink" if s else ""
    up_tls = f"https://{LOOPBACK}:{s.tls}/sink" if s else ""
    up_tunnel = f"https://{LOOPBACK}:{s.tunnel}/sink" if s else ""
    legs = [
        BulkLeg(m.B_DIRECT_HTTP, down_http, up_http, client_auth=True),
        BulkLeg(m.B_DIRECT_TLS, down_tls, up_tls, cacert=ep.bench_ca, client_auth=True),
    ]
    if ep.tinyproxy is not None:
        tiny = _proxy(ep.tinyproxy)
        legs += [
            BulkLeg(m.B_TINY_FORWARD, down_http, up_http, tiny, client_auth=True),
            BulkLeg(m.B_TINY_CONNECT, down_tunnel, up_tunnel, tiny, ep.bench_ca, True),
        ]
    if ep.mitmproxy is not None and ep.mitm_ca is not None:
        mitm = _proxy(ep.mitmproxy)
        legs += [
            BulkLeg(m.B_MITM_FORWARD, down_http, up_http, mitm),
            BulkLeg(m.B_MITM_INTERCEPT, down_tls, up_tls, mitm, ep.mitm_ca),
        ]
    if ep.ours is not None:
        ours = _proxy(ep.ours)
        legs += [
            BulkLeg(m.B_OURS_FORWARD, down_http, up_http, ours, cpu_pid=ep.ours_pid),
            BulkLeg(m.B_OURS_CONNECT, down_tunnel, up_tunnel, ours, ep.bench_ca, True,
                    cpu_pid=ep.ours_pid),
        ]  # fmt: skip
        if ep.ours_ca is not None:
            legs.append(BulkLeg(m.B_OURS_INTERCEPT, down_tls, up_tls, ours, ep.ours_ca,
                                cpu_pid=ep.ours_pid))  # fmt: skip
    return legs


def stream_legs(ep: Endpoints) -> list[StreamLeg]:
    s = ep.streams
    if s is None:
        return []
    legs = [
        StreamLeg(m.B_DIRECT_HTTP, s.plain, client_auth=True),
        StreamLeg(m.B_DIRECT_TLS, s.tls, tls_ca=ep.bench_ca, client_auth=True),
    ]
    if ep.ours is not None:
        legs.append(StreamLeg(m.B_OURS_FORWARD, s.plain, proxy_port=ep.ours))
        if ep.ours_ca is not None:
            legs.append(StreamLeg(m.B_OURS_INTERCEPT, s.tls, tls_ca=ep.ours_ca, proxy_port=ep.ours))
    return legs
