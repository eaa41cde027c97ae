"""Monitoring manifests: the scrape annotations, the metrics Service and the ServiceMonitor
agree with each other and with the supervisor's options, and the Grafana dashboard queries
only series and labels the supervisor exposes."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.metrics import MetricsServer, Sources
from supervisor.settings import parse_metrics_address
from supervisor.telemetry import GrantStats, ProxyStats
from tests.deploy.conftest import KUBE, NAMESPACE, find
from tests.deploy.kustomize import Resource, render

DASHBOARD = KUBE / "monitoring" / "grafana-dashboard.json"
# The contract's labels, plus what Prometheus and the ServiceMonitor add.
LABELS = {"decision", "code", "outcome", "result", "direction", "le", "namespace", "pod"}


def _metrics_env(container: dict[str, Any]) -> str:
    (value,) = [e["value"] for e in container["env"]
                if e["name"] == "OPENSHELL_SUPERVISOR_METRICS_ADDRESS"]
    return str(value)


def test_pod_annotations_port_and_option_agree(sandbox_pod: dict[str, Any],
                                               sandbox_container: dict[str, Any],
                                               base: list[Resource]) -> None:
    host, port = parse_metrics_address(_metrics_env(sandbox_container))
    assert host == "0.0.0.0"  # the pod's network namespace is the supervisor's, not the agent's
    (container_port,) = [p for p in sandbox_container["ports"] if p["name"] == "metrics"]
    assert container_port["containerPort"] == port
    deployment = find(base, "Deployment", "openshell-sandbox")
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": "/metrics"}
    assert sandbox_container["ports"] == [container_port]  # nothing else is exposed


def test_service_and_servicemonitor_select_the_sandbox(base: list[Resource],
                                                      sandbox_container: dict[str, Any]) -> None:
    service = find(base, "Service", "openshell-sandbox-metrics")
    deployment = find(base, "Deployment", "openshell-sandbox")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "metrics"
    assert port["port"] == parse_metrics_address(_metrics_env(sandbox_container))[1]
    monitoring = render(KUBE / "monitoring")
    (monitor,) = [r.doc for r in monitoring if r.doc["kind"] == "ServiceMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"


def _exposed_series() -> set[str]:
    proxy, grants = ProxyStats(), GrantStats()
    proxy.request("allowed", "2xx")
    server = MetricsServer(("127.0.0.1", 0), Sources(
        proxy=lambda: proxy, agent_connections=lambda: 0, grants=lambda: grants,
        token_cache_evictions=lambda: 0, audit_events_dropped=lambda: 0))
    try:
        from prometheus_client.exposition import generate_latest

        text = generate_latest(server.registry).decode()
    finally:
        server.close()
    return {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_queries_only_what_the_supervisor_exposes() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    series = _exposed_series()
    exprs = _exprs(dashboard)
    assert len(exprs) >= 12
    used: set[str] = set()
    for expr in exprs:
        names = set(re.findall(r"\bopenshell_supervisor_[a-z_]+", expr))
        assert names, expr
        assert names <= series, (expr, names - series)
        used |= names
        labels = set(re.findall(r"([a-z_]+)\s*=~?\s*\"", expr))
        for group in re.findall(r"by \(([^)]*)\)", expr):
            labels |= {g.strip() for g in group.split(",")}
        labels |= set(re.findall(r"label_values\([^,]+,\s*([a-z_]+)\)", expr))
        assert labels <= LABELS, (expr, labels - LABELS)
    # Every family of the contract is on the dashboard.
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in series}
    assert {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in used} == families


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in dashboard["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, p["title"]  # no two panels overlap
        cells |= area
        assert p["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("bad", ['openshell_supervisor_nope_total', 'sum by (host) (x)'])
def test_the_dashboard_check_can_fail(bad: str) -> None:
    series = _exposed_series()
    names = set(re.findall(r"\bopenshell_supervisor_[a-z_]+", bad))
    labels = {g.strip() for grp in re.findall(r"by \(([^)]*)\)", bad) for g in grp.split(",")}
    assert not names <= series or not labels <= LABELS
