"""Ratios, added latency, target evaluation and the small statistics helpers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.bench import metrics
from integration.bench.rss import vmrss_kib
from integration.bench.runner_io import parse_line
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


def test_targets() -> None:
    targets = {
        t.name: t
        for t in metrics.evaluate_targets(
            HTTP, 130.0, 60.0, 1, cold_answered=100, cold_requests=100
        )
    }
    assert targets["injecting req/s vs tinyproxy, 32 conns"].met is True
    assert targets["injecting req/s vs mitmproxy, 32 conns"].met is True
    assert targets["added p50 latency over direct, 1 conn"].met is True
    assert targets["added p99 latency over direct, 1 conn"].met is True
    assert targets["`run -- /bin/true` over `python -c pass`"].met is False
    assert targets["proxy process RSS under load (max)"].met is True
    assert targets["grants for 100 concurrent cold requests"].met is True


def test_invalid_results_are_not_measured() -> None:
    broken = [*HTTP[:4], result(metrics.OURS_INJECT, 32, 30_000, 100, 200, status=150_000)]
    targets = metrics.evaluate_targets(broken, None, None, None)
    assert all(t.met is None for t in targets)
    assert metrics.evaluate_targets(HTTP, None, None, 3, 32, 100, 100)[-1].met is False
    # one grant but failed requests: not met
    assert metrics.evaluate_targets(HTTP, None, None, 1, 32, 60, 100)[-1].met is False


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
