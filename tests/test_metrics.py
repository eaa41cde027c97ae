"""The metrics endpoint: the families and labels of the contract, bounded label values,
only /metrics served, and prometheus_client never imported without --metrics-address."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from supervisor.metrics import MetricsServer, Sources
from supervisor.telemetry import (
    REQUEST_BUCKETS,
    GrantStats,
    Histogram,
    ProxyStats,
    code_label,
    status_class,
)

FAMILIES = {
    "openshell_supervisor_requests": ("counter", {"decision", "code"}),
    "openshell_supervisor_grants": ("counter", {"outcome"}),
    "openshell_supervisor_token_cache": ("counter", {"result"}),
    "openshell_supervisor_workload_api_calls": ("counter", {"outcome"}),
    "openshell_supervisor_workload_api_seconds": ("histogram", set()),
    "openshell_supervisor_request_duration_seconds": ("histogram", set()),
    "openshell_supervisor_agent_connections": ("gauge", set()),
    "openshell_supervisor_upstream_connections": ("gauge", set()),
    "openshell_supervisor_relayed_bytes": ("counter", {"direction"}),
    "openshell_supervisor_audit_events_dropped": ("counter", set()),
}


def _stats() -> tuple[ProxyStats, GrantStats]:
    proxy, grants = ProxyStats(count_bytes=True), GrantStats()
    proxy.request("allowed", status_class(200))
    proxy.request("allowed", status_class(204))
    proxy.request("denied", "policy_denied")
    proxy.duration.observe(0.003)
    proxy.duration.observe(2.0)
    proxy.bytes_to_upstream, proxy.bytes_from_upstream, proxy.upstream_open = 120, 4096, 3
    grants.grants["success"] = 2
    grants.cache["hit"], grants.cache["miss"] = 5, 2
    grants.workload_api_calls, grants.workload_api_failures = 3, 1
    grants.workload_api_seconds.observe(0.004)
    return proxy, grants


def _scrape(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        return resp.read().decode()


def test_families_labels_and_values() -> None:
    proxy, grants = _stats()
    server = MetricsServer(("127.0.0.1", 0), Sources(
        proxy=lambda: proxy, agent_connections=lambda: 7, grants=lambda: grants,
        token_cache_evictions=lambda: 4, audit_events_dropped=lambda: 1))
    server.start()
    try:
        text = _scrape(server.address[1])
        with pytest.raises(urllib.error.HTTPError) as err:
            _scrape(server.address[1], "/")
        assert err.value.code == 404
    finally:
        server.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == set(FAMILIES)
    for name, (kind, labels) in FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} <= labels, (name, sample.labels)

    def value(name: str, **labels: str) -> float:
        (sample,) = [s for f in families.values() for s in f.samples
                     if s.name == name and s.labels == labels]
        return sample.value

    assert value("openshell_supervisor_requests_total", decision="allowed", code="2xx") == 2
    assert value("openshell_supervisor_requests_total", decision="denied",
                 code="policy_denied") == 1
    assert value("openshell_supervisor_grants_total", outcome="success") == 2
    assert value("openshell_supervisor_token_cache_total", result="eviction") == 4
    assert value("openshell_supervisor_workload_api_calls_total", outcome="failure") == 1
    assert value("openshell_supervisor_workload_api_calls_total", outcome="success") == 2
    assert value("openshell_supervisor_relayed_bytes_total", direction="from_upstream") == 4096
    assert value("openshell_supervisor_agent_connections") == 7
    assert value("openshell_supervisor_upstream_connections") == 3
    assert value("openshell_supervisor_audit_events_dropped_total") == 1
    assert value("openshell_supervisor_request_duration_seconds_count") == 2
    assert value("openshell_supervisor_request_duration_seconds_bucket", le="0.005") == 1
    assert value("openshell_supervisor_request_duration_seconds_bucket", le="+Inf") == 2


def test_no_provider_yet() -> None:
    server = MetricsServer(("127.0.0.1", 0), Sources(
        proxy=lambda: None, agent_connections=lambda: 0, grants=lambda: None,
        token_cache_evictions=lambda: 0, audit_events_dropped=lambda: 0))
    server.start()
    try:
        names = {f.name for f in text_string_to_metric_families(_scrape(server.address[1]))}
    finally:
        server.close()
    assert names == set(FAMILIES)


def test_busy_port_is_a_setup_error_naming_the_option() -> None:
    from supervisor.settings import SetupError

    first = MetricsServer(("127.0.0.1", 0), Sources(
        proxy=lambda: None, agent_connections=lambda: 0, grants=lambda: None,
        token_cache_evictions=lambda: 0, audit_events_dropped=lambda: 0))
    try:
        with pytest.raises(SetupError) as err:
            MetricsServer(first.address, Sources(
                proxy=lambda: None, agent_connections=lambda: 0, grants=lambda: None,
                token_cache_evictions=lambda: 0, audit_events_dropped=lambda: 0))
        assert err.value.step == "--metrics-address"
    finally:
        first.close()


@given(st.text(max_size=60))
def test_code_labels_are_identifiers_or_other(code: str) -> None:
    label = code_label(code)
    assert label == "other" or (label == code and label.isascii() and len(label) <= 40
                                and all(c.islower() or c.isdigit() or c == "_" for c in label))


@given(st.integers(min_value=-1000, max_value=100000))
def test_status_classes_are_six_values(status: int) -> None:
    assert status_class(status) in {"1xx", "2xx", "3xx", "4xx", "5xx", "other"}


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=50))
def test_histogram_is_cumulative(values: list[float]) -> None:
    h = Histogram(REQUEST_BUCKETS)
    for v in values:
        h.observe(v)
    buckets = h.cumulative()
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and counts[-1] == len(values) == h.count
    for bound, n in buckets:
        assert n == sum(1 for v in values if v <= bound)


@pytest.mark.parametrize("module", ["supervisor.cli", "supervisor.runner", "supervisor.services",
                                    "supervisor.proxy.server", "supervisor.grants.provider"])
def test_prometheus_client_is_not_imported_by_the_run_path(module: str) -> None:
    code = f"import sys, {module}; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip()
    assert out == "False"
