"""Ratios, added latency, target evaluation and the small statistics helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.bench import metrics
from integration.bench.bulk import DOWN, UP, BulkResult
from integration.bench.conns import FirstRequestResult, IdleResult
from integration.bench.rss import vmrss_kib
from integration.bench.runner_io import parse_line
from integration.bench.streams import SSE, WS, StreamResult
from integration.bench.tlsload import parse_head, percentile, summarize
from integration.bench.wrk import LoadResult


def result(
    target: str, conns: int, rps: float, p50: float, p99: float, **errors: int
) -> LoadResult:
    return LoadResult(
        target=target,
        client="wrk",
        connections=conns,
        duration_s=5.0,
        requests=int(rps * 5),
        rps=rps,
        latency_us={"p50": p50, "p99": p99},
        errors=dict(errors),
    )


HTTP = [
    result(metrics.DIRECT, 1, 10_000, 80, 180),
    result(metrics.DIRECT, 32, 40_000, 700, 1500),
    result(metrics.TINYPROXY, 32, 5_000, 5000, 10000, read=25_000),
    result(metrics.MITMPROXY, 32, 700, 40_000, 99_000),
    result(metrics.OURS_INJECT, 1, 4_000, 300, 900),
    result(metrics.OURS_INJECT, 32, 12_000, 2500, 6000),
]


def test_ratios_and_added_latency() -> None:
    assert metrics.rps_ratio(HTTP, metrics.OURS_INJECT, metrics.TINYPROXY, 32) == pytest.approx(2.4)
    assert metrics.rps_ratio(HTTP, metrics.OURS_INJECT, metrics.MITMPROXY, 1) is None
    assert metrics.added_latency_ms(HTTP, metrics.OURS_INJECT, metrics.DIRECT, 1, "p50") == (
        pytest.approx(0.22)
    )
    r = metrics.ratios(HTTP, [], [1, 32])
    assert r["ours-inject/mitmproxy.rps.c32"] == pytest.approx(12_000 / 700)
    assert r["ours-inject-direct.p99_ms.c1"] == pytest.approx(0.72)


def _bulk(leg: str, down_s: float, up_s: float, error: str = "") -> list[BulkResult]:
    size = 2**30
    return [
        BulkResult(leg, DOWN, size, [down_s, down_s * 2, down_s * 0.9], error),
        BulkResult(leg, UP, size, [up_s], error),
    ]


def _stream(leg: str, kind: str, p50: float, p99: float, error: str = "") -> StreamResult:
    return StreamResult(leg, kind, [p50, p50 + 5, p50 - 5], [p99, p99 * 3, p99], 990, error)


MEASURED = metrics.Measured(
    http=HTTP,
    startup_ms={"python": 20.0, "run": 65.0, "run-intercept": 110.0},
    rss_load_mib=58.0,
    cold_grants=1, cold_answered=100, cold_requests=100,
    bulk=[
        *_bulk(metrics.B_DIRECT_HTTP, 0.4, 0.5), *_bulk(metrics.B_TINY_FORWARD, 2.0, 2.0),
        *_bulk(metrics.B_OURS_FORWARD, 0.9, 1.1), *_bulk(metrics.B_DIRECT_TLS, 1.0, 1.0),
        *_bulk(metrics.B_TINY_CONNECT, 2.0, 2.0), *_bulk(metrics.B_OURS_CONNECT, 1.1, 1.1),
        *_bulk(metrics.B_MITM_INTERCEPT, 3.0, 3.0), *_bulk(metrics.B_OURS_INTERCEPT, 2.0, 1.0),
    ],
    streams=[
        _stream(metrics.B_DIRECT_HTTP, SSE, 100.0, 300.0),
        _stream(metrics.B_OURS_FORWARD, SSE, 200.0, 1200.0),
        _stream(metrics.B_DIRECT_TLS, SSE, 150.0, 400.0),
        _stream(metrics.B_OURS_INTERCEPT, SSE, 250.0, 1600.0),
        _stream(metrics.B_DIRECT_HTTP, WS, 30.0, 100.0),
        _stream(metrics.B_OURS_FORWARD, WS, 0, 0, "not available: answered 400"),
    ],
    idle=IdleResult(1000, 1000, 50_000, 60_000, 52_000),
    first=FirstRequestResult([0.5, 0.6, 0.7], [0.2, 0.25, 0.3]),
)  # fmt: skip


def test_targets() -> None:
    targets = {t.name: t for t in metrics.evaluate_targets(MEASURED)}
    assert targets["injecting req/s vs tinyproxy, 32 conns"].met is True
    assert targets["injecting req/s vs mitmproxy, 32 conns"].met is True
    assert targets["added p50 latency over direct, 1 conn"].met is True
    assert targets["added p99 latency over direct, 1 conn"].met is True
    plain = targets["`run -- /bin/true` over `python -c pass`, nothing to intercept"]
    assert (plain.value, plain.met) == ("45.0 ms", True)
    icpt = targets["`run -- /bin/true` over `python -c pass`, an interceptable endpoint"]
    assert (icpt.value, icpt.met) == ("90.0 ms", False)
    assert targets["proxy process RSS under the req/s loads (max)"].met is True
    assert targets["grants for 100 concurrent cold requests"].met is True
    # bulk: medians of the rounds (down: 0.4/0.9 s of 2.0 s), ratios to the baseline
    fwd = targets["bulk download, forward path, token injected, vs tinyproxy-forward"]
    assert (fwd.value, fwd.met) == ("2.22x", True)
    assert "0.44x of direct-http" in fwd.detail
    up = targets["bulk upload, forward path, token injected, vs tinyproxy-forward"]
    assert (up.value, up.met) == ("1.82x", False)
    assert targets["bulk upload, interception, token injected, vs mitmproxy-intercept"].met
    assert not targets["bulk download, interception, token injected, vs mitmproxy-intercept"].met
    # streams: added median p99 over the same transport's direct leg
    sse = targets["sse added p99 per event, ours-forward over direct-http"]
    assert (sse.value, sse.met) == ("0.900 ms", True)
    assert not targets["sse added p99 per event, ours-intercept over direct-tls"].met
    ws = targets["websocket added p99 per message round trip, ours-forward over direct-http"]
    assert ws.met is None and "not available" in ws.detail
    idle = targets["RSS cost of 1000 idle keep-alive connections"]
    assert (idle.value, idle.met) == ("9.8 MiB", True)
    first = targets["first request on a cold connection over a warm one, binary identity"]
    assert (first.value, first.met) == ("0.350 ms", True)


def test_a_bulk_limit_above_the_direct_ceiling_says_so() -> None:
    """2x the baseline above the same run's direct leg cannot be met: MISSED says why and
    the detail gives the limit as a multiple of the ceiling; the targets stay as they are."""
    m = metrics.Measured(bulk=[
        *_bulk(metrics.B_DIRECT_HTTP, 1.0, 1.0), *_bulk(metrics.B_TINY_FORWARD, 2.5, 0.9),
        *_bulk(metrics.B_OURS_FORWARD, 1.5, 1.1),
    ])  # fmt: skip
    targets = {t.name: t for t in metrics.evaluate_targets(m)}
    down = targets["bulk download, forward path, token injected, vs tinyproxy-forward"]
    assert (down.met, down.status, down.unreachable) == (False, "MISSED", "")  # 1.67x
    assert "limit" not in down.detail  # 2x tinyproxy is 0.8x direct: reachable
    up = targets["bulk upload, forward path, token injected, vs tinyproxy-forward"]
    assert up.met is False and up.value == "0.82x"
    assert up.status == "MISSED (2x tinyproxy-forward is above direct-http)"
    assert "the limit is 2.22x direct-http" in up.detail and "0.91x of direct-http" in up.detail
    met = metrics.Target("x", "3x", ">= 2x", True, unreachable="ignored when met")
    assert met.status == "MET" and metrics.Target("y", "-", "", None).status == "not measured"
    assert metrics.bulk_limit_over_ceiling(m.bulk, metrics.B_TINY_FORWARD,
                                           metrics.B_DIRECT_HTTP, UP) == pytest.approx(2 / 0.9)


def test_bulk_detail_shows_the_proxy_cpu_per_gib() -> None:
    cells = [*_bulk(metrics.B_TINY_FORWARD, 2.0, 2.0), *_bulk(metrics.B_OURS_FORWARD, 1.0, 1.0)]
    cells[2].cpu_seconds = [0.5, 0.3, 0.4]  # ours, download; 1 GiB each
    targets = {t.name: t for t in metrics.evaluate_targets(metrics.Measured(bulk=cells))}
    down = targets["bulk download, forward path, token injected, vs tinyproxy-forward"]
    assert down.detail.endswith("proxy CPU 0.40 s/GiB")
    assert "CPU" not in targets["bulk upload, forward path, token injected, vs tinyproxy-forward"].detail


def test_unanswered_idle_connections_measure_nothing() -> None:
    m = metrics.Measured(idle=IdleResult(1000, 990, 50_000, 51_000, 50_000))
    t = next(t for t in metrics.evaluate_targets(m) if t.name.startswith("RSS cost"))
    assert t.met is None and "990/1000" in t.detail


def test_invalid_results_are_not_measured() -> None:
    broken = [*HTTP[:4], result(metrics.OURS_INJECT, 32, 30_000, 100, 200, status=150_000)]
    targets = metrics.evaluate_targets(metrics.Measured(http=broken))
    assert all(t.met is None for t in targets)
    failed_bulk = metrics.Measured(bulk=[*_bulk(metrics.B_TINY_FORWARD, 1, 1),
                                         *_bulk(metrics.B_OURS_FORWARD, 1, 1, "curl exited 7")])  # fmt: skip
    t = next(t for t in metrics.evaluate_targets(failed_bulk) if t.name.startswith("bulk down"))
    assert t.met is None and t.detail == "curl exited 7"

    def grants(n: int, answered: int) -> bool | None:
        m = metrics.Measured(cold_grants=n, cold_answered=answered, cold_requests=100)
        return metrics.evaluate_targets(m)[-1].met

    assert grants(3, 100) is False
    assert grants(1, 60) is False  # one grant but failed requests: not met
    assert grants(1, 100) is True


def test_median() -> None:
    assert metrics.median([3.0, 1.0, 2.0]) == 2.0
    assert metrics.median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):
        metrics.median([])


@settings(max_examples=60)
@given(
    st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200),
    st.floats(min_value=0.01, max_value=100),
)
def test_percentile_is_an_element_and_monotonic(values: list[float], p: float) -> None:
    ordered = sorted(values)
    got = percentile(ordered, p)
    assert got in ordered
    assert percentile(ordered, 100) == ordered[-1]
    assert percentile(ordered, min(100.0, p + 1)) >= got


def test_summarize() -> None:
    r = summarize("direct-tls", 2, [1000 * i for i in range(1, 101)], {"io": 0}, 2.0)
    assert r.requests == 100 and r.rps == 50.0
    assert r.latency_us["p50"] == 50.0 and r.latency_us["p99"] == 99.0
    assert r.client == "python-asyncio"


def test_parse_head() -> None:
    assert parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n") == (200, 12, True)
    assert parse_head(b"HTTP/1.1 502 Bad\r\nConnection: close\r\n\r\n") == (502, 0, False)
    assert parse_head(b"HTTP/1.0 200 OK\r\n\r\n")[2] is False
    with pytest.raises(ValueError):
        parse_head(b"SSH-2.0-x\r\n\r\n")


def test_vmrss_and_protocol_lines() -> None:
    assert vmrss_kib("Name:\tpython\nVmRSS:\t   81234 kB\nThreads: 3\n") == 81234
    assert vmrss_kib("Name:\tzombie\n") is None
    assert parse_line('READY {"pid": 7}\n') == ("READY", {"pid": 7})
    assert parse_line("openshell-supervisor: WARNING: x\n") is None
