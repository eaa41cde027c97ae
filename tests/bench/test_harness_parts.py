"""The bench's profile loads with the product's loader; the report renders and serializes."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from integration.bench import metrics
from integration.bench.certs import BenchPKI
from integration.bench.legs import StreamPorts
from integration.bench.nginx import Upstream, nginx_config
from integration.bench.ours import write_profile
from integration.bench.report import BenchReport, render
from integration.bench.startup import StartupSample
from integration.bench.wrk import LoadResult

UP = Upstream(bound_port=18081, plain_port=18082, tls_port=18443, tunnel_port=18444)
STREAMS = StreamPorts(plain=18091, tls=18092, tunnel=18093)


def test_bench_profile_binds_exactly_the_bound_servers(tmp_path: Path) -> None:
    from supervisor.profiles.loader import load_profiles
    from supervisor.proxy.tls_names import hosts_to_intercept

    path = write_profile(tmp_path / "p.yaml", UP, "http://127.0.0.1:18099/token", STREAMS)
    profiles = load_profiles([str(path)])
    assert sorted(b.port for b in profiles.bindings) == sorted(
        [UP.bound_port, UP.tls_port, STREAMS.plain, STREAMS.tls]
    )
    assert {p.id for p in profiles.profiles} == {"bench-bound", "bench-open"}
    assert hosts_to_intercept(profiles.profiles)


def test_start_up_profile_without_interception_has_nothing_to_intercept(tmp_path: Path) -> None:
    from supervisor.profiles.loader import load_profiles
    from supervisor.proxy.tls_names import hosts_to_intercept

    url = "http://127.0.0.1:18099/token"
    path = write_profile(tmp_path / "p.yaml", UP, url, STREAMS, intercept=False)
    profiles = load_profiles([str(path)])
    assert not profiles.bindings
    assert not hosts_to_intercept(profiles.profiles)
    assert {p.id for p in profiles.profiles} == {"bench-open"}


def test_nginx_config_guards_bound_servers_only(tmp_path: Path) -> None:
    pki = BenchPKI(tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s.key")
    conf = nginx_config(tmp_path, UP, pki)
    assert conf.count("return 401") == 3
    assert f"listen 127.0.0.1:{UP.tls_port} ssl" in conf
    assert f"listen 127.0.0.1:{UP.tunnel_port} ssl" in conf
    assert "0.0.0.0" not in conf
    assert "/bulk/" not in conf
    with_bulk = nginx_config(tmp_path, replace(UP, bulk_dir=tmp_path / "bulk"), pki)
    # every guarded server guards its bulk location too
    assert with_bulk.count("return 401") == 6
    assert with_bulk.count(f"alias {tmp_path / 'bulk'}/;") == 4


def _result(target: str, conns: int, rps: float) -> LoadResult:
    return LoadResult(target, "wrk", conns, 5.0, int(rps * 5), rps, {"p50": 100.0, "p99": 900.0})


def test_report_renders_and_serializes() -> None:
    report = BenchReport(config={"connections": [1, 32]})
    report.http = [_result(metrics.DIRECT, 1, 20000), _result(metrics.OURS_INJECT, 1, 5000)]
    report.startup = [
        StartupSample("python", ["python", "-c", "pass"], [20.0, 22.0], 0, shown="python"),
        StartupSample("run", ["x"], [], 125, error="bad profile", shown="run"),
    ]
    report.grants = {"requests": 100, "statuses": {"200": 100}, "issued": 1}
    report.unavailable["our proxy"] = "ImportError: nope"
    report.rss = {"idle_mib": 70.0, "max_mib": 81.25}
    report.rss_baselines = {metrics.MITMPROXY: 123.5}
    out = io.StringIO()
    render(report, Console(file=out, width=160))
    text = out.getvalue()
    assert "our proxy: not available: ImportError: nope" in text
    assert ("0.25x" not in text and "4.00x" not in text) or "ours-inject" in text
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["ratios"]["ours-inject-direct.p50_ms.c1"] == 0.0
    grant = next(t for t in doc["targets"] if t["name"].startswith("grants"))
    assert grant["met"] is True
    # `run` failed: no number, no pass
    assert doc["startup_over_python_ms"] == {"run": None, "run-intercept": None}
    startup = [t for t in doc["targets"] if t["name"].startswith("`run")]
    assert [t["met"] for t in startup] == [None, None]


def test_busy_warning() -> None:
    from integration.bench.report import busy_warning

    # the end value includes the bench's own load: it does not count
    assert busy_warning({"cpus": 2, "loadavg_start": (0.2, 0, 0), "loadavg_end": (3.0, 0, 0)}) == ""
    assert "busy" in busy_warning({"cpus": 2, "loadavg_start": (3.3, 0, 0)})
