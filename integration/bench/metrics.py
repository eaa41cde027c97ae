"""Ratios to the baselines and the pass/fail of the performance targets (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from integration.bench.wrk import LoadResult

DIRECT = "direct"
TINYPROXY = "tinyproxy"
MITMPROXY = "mitmproxy"
OURS_INJECT = "ours-inject"
OURS_NO_BINDING = "ours-no-binding"
DIRECT_TLS = "direct-tls"
MITMPROXY_TLS = "mitmproxy-tls"
OURS_TLS = "ours-tls-inject"

PROXIES = (TINYPROXY, MITMPROXY, OURS_INJECT, OURS_NO_BINDING)
TLS_PROXIES = (MITMPROXY_TLS, OURS_TLS)

# The targets.
MIN_RATIO_TINYPROXY = 2.0
MIN_RATIO_MITMPROXY = 10.0
MAX_ADDED_P50_MS = 0.3
MAX_ADDED_P99_MS = 2.0
MAX_STARTUP_OVER_PYTHON_MS = 120.0
MAX_RSS_MIB = 80.0
EXPECTED_GRANTS = 1


@dataclass(frozen=True)
class Target:
    name: str
    value: str  # measured, formatted; "-" when not measured
    limit: str
    met: bool | None  # None: could not be measured in this run
    detail: str = ""


def find(results: Iterable[LoadResult], target: str, connections: int) -> LoadResult | None:
    """The valid result for (target, connections), or None."""
    for r in results:
        if r.target == target and r.connections == connections and r.valid:
            return r
    return None


def rps_ratio(results: list[LoadResult], ours: str, base: str, connections: int) -> float | None:
    a, b = find(results, ours, connections), find(results, base, connections)
    if a is None or b is None or b.rps <= 0:
        return None
    return a.rps / b.rps


def added_latency_ms(
    results: list[LoadResult], proxy: str, base: str, connections: int, key: str
) -> float | None:
    """Latency percentile ``key`` (e.g. "p50") through ``proxy`` minus straight to ``base``."""
    a, b = find(results, proxy, connections), find(results, base, connections)
    if a is None or b is None or key not in a.latency_us or key not in b.latency_us:
        return None
    return (a.latency_us[key] - b.latency_us[key]) / 1000.0


def ratios(
    http: list[LoadResult], https: list[LoadResult], conns: Iterable[int]
) -> dict[str, float | None]:
    """Every ratio and added latency the report shows, keyed by a stable name."""
    out: dict[str, float | None] = {}
    for c in conns:
        for ours in (OURS_INJECT, OURS_NO_BINDING):
            out[f"{ours}/{TINYPROXY}.rps.c{c}"] = rps_ratio(http, ours, TINYPROXY, c)
            out[f"{ours}/{MITMPROXY}.rps.c{c}"] = rps_ratio(http, ours, MITMPROXY, c)
        for proxy in PROXIES:
            for key in ("p50", "p99"):
                out[f"{proxy}-{DIRECT}.{key}_ms.c{c}"] = added_latency_ms(
                    http, proxy, DIRECT, c, key
                )
        out[f"{OURS_TLS}/{MITMPROXY_TLS}.rps.c{c}"] = rps_ratio(https, OURS_TLS, MITMPROXY_TLS, c)
        for proxy in TLS_PROXIES:
            for key in ("p50", "p99"):
                out[f"{proxy}-{DIRECT_TLS}.{key}_ms.c{c}"] = added_latency_ms(
                    https, proxy, DIRECT_TLS, c, key
                )
    return out


def _fmt(value: float | None, unit: str, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _at_least(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


def _at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def evaluate_targets(
    http: list[LoadResult],
    startup_over_python_ms: float | None,
    rss_max_mib: float | None,
    cold_grants: int | None,
    high: int = 32,
    cold_answered: int = 0,
    cold_requests: int = 0,
) -> list[Target]:
    """The issue's targets. The grant target also needs every cold request answered 200:
    one grant while requests failed proves nothing."""
    cold_ok = cold_grants == EXPECTED_GRANTS and cold_answered == cold_requests > 0
    vs_tiny = rps_ratio(http, OURS_INJECT, TINYPROXY, high)
    vs_mitm = rps_ratio(http, OURS_INJECT, MITMPROXY, high)
    p50 = added_latency_ms(http, OURS_INJECT, DIRECT, 1, "p50")
    p99 = added_latency_ms(http, OURS_INJECT, DIRECT, 1, "p99")
    return [
        Target(f"injecting req/s vs tinyproxy, {high} conns", _fmt(vs_tiny, "x"),
               f">= {MIN_RATIO_TINYPROXY:g}x", _at_least(vs_tiny, MIN_RATIO_TINYPROXY)),
        Target(f"injecting req/s vs mitmproxy, {high} conns", _fmt(vs_mitm, "x"),
               f">= {MIN_RATIO_MITMPROXY:g}x", _at_least(vs_mitm, MIN_RATIO_MITMPROXY)),
        Target("added p50 latency over direct, 1 conn", _fmt(p50, " ms", 3),
               f"<= {MAX_ADDED_P50_MS:g} ms", _at_most(p50, MAX_ADDED_P50_MS)),
        Target("added p99 latency over direct, 1 conn", _fmt(p99, " ms", 3),
               f"<= {MAX_ADDED_P99_MS:g} ms", _at_most(p99, MAX_ADDED_P99_MS)),
        Target("`run -- /bin/true` over `python -c pass`", _fmt(startup_over_python_ms, " ms", 1),
               f"<= {MAX_STARTUP_OVER_PYTHON_MS:g} ms",
               _at_most(startup_over_python_ms, MAX_STARTUP_OVER_PYTHON_MS)),
        Target("proxy process RSS under load (max)", _fmt(rss_max_mib, " MiB", 1),
               f"<= {MAX_RSS_MIB:g} MiB", _at_most(rss_max_mib, MAX_RSS_MIB)),
        Target("grants for 100 concurrent cold requests",
               "-" if cold_grants is None else str(cold_grants), f"== {EXPECTED_GRANTS}",
               None if cold_grants is None else cold_ok,
               f"{cold_answered}/{cold_requests} answered 200" if cold_requests else ""),
    ]  # fmt: skip


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("median of nothing")
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
