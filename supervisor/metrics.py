"""The Prometheus endpoint of ``run --metrics-address HOST:PORT`` (ARCHITECTURE.md 8).

Imported only when the option is given: ``prometheus_client`` (its import is ~0.1-0.3 s)
never loads otherwise. The exposition is the library's; the values come from the plain
counters of ``supervisor.telemetry``, read at scrape time by one custom collector, so the
proxy's hot path never calls into the library.

The listener is bound by the proxy's thread, which lives in the supervisor's network
namespace: the agent's namespace has its own loopback and no route to it.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from supervisor.settings import SetupError
from supervisor.telemetry import (
    CACHE_RESULTS,
    FROM_UPSTREAM,
    GRANT_OUTCOMES,
    TO_UPSTREAM,
    GrantStats,
    Histogram,
    ProxyStats,
)

PREFIX = "openshell_supervisor_"
PATH = "/metrics"


@dataclass(frozen=True)
class Sources:
    """Where each value is read at scrape time (callables: the objects may come later)."""

    proxy: Callable[[], ProxyStats | None]
    agent_connections: Callable[[], int]
    grants: Callable[[], GrantStats | None]
    token_cache_evictions: Callable[[], int]
    audit_events_dropped: Callable[[], int]


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if b == float("inf") else repr(b), float(n)) for b, n in h.cumulative()]


class SupervisorCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self._s = sources

    def collect(self) -> Iterator[Metric]:
        s = self._s
        proxy = s.proxy()
        grants = s.grants()
        yield from _proxy_families(proxy)
        yield GaugeMetricFamily(PREFIX + "agent_connections",
                                "Agent connections being served (tunnels included).",
                                value=s.agent_connections())
        yield from _grant_families(grants, s.token_cache_evictions())
        yield CounterMetricFamily(PREFIX + "audit_events_dropped",
                                  "Audit events that could not be written.",
                                  value=s.audit_events_dropped())


def _proxy_families(proxy: ProxyStats | None) -> list[Metric]:
    """Requests, their duration, relayed bytes and upstream connections (empty before the
    proxy exists: the families are still exposed, with no samples)."""
    requests = CounterMetricFamily(
        PREFIX + "requests", "Agent requests by the proxy's decision and the code: an "
        "error code when denied, the upstream's status class (or 'tunnel') when allowed.",
        labels=["decision", "code"])
    duration = HistogramMetricFamily(
        PREFIX + "request_duration_seconds",
        "From a parsed request head to the end of its response (upgraded relays excluded).")
    relayed = CounterMetricFamily(
        PREFIX + "relayed_bytes", "Bytes exchanged with upstreams on the wire, per "
        "direction (TLS records and upstream-proxy CONNECTs included).",
        labels=["direction"])
    upstreams = GaugeMetricFamily(
        PREFIX + "upstream_connections", "Open upstream connections, in use or pooled.")
    if proxy is not None:
        for (decision, code), n in sorted(dict(proxy.requests).items()):
            requests.add_metric([decision, code], n)
        d = proxy.duration
        duration.add_metric([], _buckets(d), d.total)
        relayed.add_metric([TO_UPSTREAM], proxy.bytes_to_upstream)
        relayed.add_metric([FROM_UPSTREAM], proxy.bytes_from_upstream)
        upstreams.add_metric([], proxy.upstream_open)
    return [requests, duration, relayed, upstreams]


def _grant_families(grants: GrantStats | None, evictions: int) -> list[Metric]:
    """Grant outcomes, token cache results and Workload API calls (empty before the grant
    manager exists, as for the proxy's families)."""
    granted = CounterMetricFamily(
        PREFIX + "grants", "Token grants by outcome ('backoff': refused at once during "
        "the backoff after a failure).", labels=["outcome"])
    cache = CounterMetricFamily(
        PREFIX + "token_cache", "Token cache lookups (hit, miss) and evictions.",
        labels=["result"])
    calls = CounterMetricFamily(
        PREFIX + "workload_api_calls", "Workload API (FetchJWTSVID) calls by outcome.",
        labels=["outcome"])
    seconds = HistogramMetricFamily(
        PREFIX + "workload_api_seconds", "Duration of Workload API calls.")
    if grants is not None:
        for outcome in GRANT_OUTCOMES:
            granted.add_metric([outcome], grants.grants[outcome])
        for result in CACHE_RESULTS:
            value = evictions if result == "eviction" else grants.cache[result]
            cache.add_metric([result], value)
        failed = grants.workload_api_failures
        calls.add_metric(["success"], grants.workload_api_calls - failed)
        calls.add_metric(["failure"], failed)
        w = grants.workload_api_seconds
        seconds.add_metric([], _buckets(w), w.total)
    return [granted, cache, calls, seconds]


class MetricsServer:
    """``GET /metrics`` on its own daemon thread; every other path is a 404."""

    def __init__(self, address: tuple[str, int], sources: Sources) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SupervisorCollector(sources))
        self.registry = registry

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != PATH:
                    self.send_error(404)
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes are not news; nothing of a request is logged

        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        try:
            self._server = Server((host, port), Handler)
        except OSError as exc:
            raise SetupError("--metrics-address",
                             f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
