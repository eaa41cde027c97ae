"""The bench's results: one JSON document and rich tables on the terminal."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from integration.bench import metrics
from integration.bench.metrics import Target
from integration.bench.startup import StartupSample
from integration.bench.wrk import LoadResult


@dataclass
class BenchReport:
    config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    http: list[LoadResult] = field(default_factory=list)
    https: list[LoadResult] = field(default_factory=list)
    startup: list[StartupSample] = field(default_factory=list)
    rss: dict[str, Any] = field(default_factory=dict)  # our proxy's process
    rss_baselines: dict[str, float | None] = field(default_factory=dict)  # max MiB, by target
    grants: dict[str, Any] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)  # component -> why
    elapsed_s: float = 0.0

    def startup_over_python_ms(self) -> float | None:
        by_label = {s.label: s.median_ms for s in self.startup}
        run, py = by_label.get("run"), by_label.get("python")
        return None if run is None or py is None else run - py

    def targets(self) -> list[Target]:
        grants = self.grants.get("issued")
        statuses = self.grants.get("statuses", {})
        answered = statuses.get("200", 0) if isinstance(statuses, dict) else 0
        return metrics.evaluate_targets(
            self.http,
            self.startup_over_python_ms(),
            self.rss.get("max_mib"),
            grants if isinstance(grants, int) else None,
            cold_answered=answered,
            cold_requests=int(self.grants.get("requests", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        conns = self.config.get("connections", [1, 32])
        return {
            "config": self.config,
            "versions": self.versions,
            "http": [dataclasses.asdict(r) for r in self.http],
            "https": [dataclasses.asdict(r) for r in self.https],
            "startup": [{**dataclasses.asdict(s), "median_ms": s.median_ms} for s in self.startup],
            "startup_over_python_ms": self.startup_over_python_ms(),
            "rss": self.rss,
            "rss_baselines_max_mib": self.rss_baselines,
            "grants": self.grants,
            "ratios": metrics.ratios(self.http, self.https, conns),
            "targets": [dataclasses.asdict(t) for t in self.targets()],
            "unavailable": self.unavailable,
            "elapsed_s": round(self.elapsed_s, 1),
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def busy_warning(config: dict[str, Any]) -> str:
    """A warning when other work shared the CPUs: tails (p99) are then mostly that noise.

    Only the load average taken before the bench started counts: afterwards it includes
    the bench's own load generator and servers.
    """
    cpus = int(config.get("cpus") or 1)
    start = config.get("loadavg_start")
    one_minute = float(start[0]) if start else 0.0
    if one_minute <= 0.5 * cpus:
        return ""
    return (
        f"the machine was busy before the bench started (1-min load average {one_minute:.1f} "
        f"on {cpus} CPUs): p99 figures and small added latencies are unreliable; re-run on "
        "an idle machine"
    )


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000.0:.3f}"


def _load_table(title: str, results: list[LoadResult], base: str, ours: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("target", "conns", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms",
                f"{ours} / this", "errors"):  # fmt: skip
        table.add_column(col, justify="left" if col == "target" else "right")
    for r in results:
        b = metrics.find(results, base, r.connections)
        o = metrics.find(results, ours, r.connections)
        added = [
            "-"
            if b is None or r.target == base or k not in r.latency_us
            else f"{(r.latency_us[k] - b.latency_us.get(k, 0.0)) / 1000.0:+.3f}"
            for k in ("p50", "p99")
        ]
        ratio = "-" if o is None or r.rps <= 0 or r.target == ours else f"{o.rps / r.rps:.2f}x"
        errors = ", ".join(f"{k} {v}" for k, v in r.errors.items() if v) or "0"
        style = None if r.valid else "red"
        table.add_row(
            r.target + ("" if r.valid else " (INVALID)"), str(r.connections), f"{r.rps:,.0f}",
            _ms(r.latency_us.get("p50")), _ms(r.latency_us.get("p99")), *added, ratio, errors,
            style=style,
        )  # fmt: skip
    return table


def render(report: BenchReport, console: Console | None = None) -> None:
    console = console or Console()
    if report.http:
        console.print(_load_table(
            "HTTP, client: wrk (1 thread), keep-alive; +pNN = added over direct",
            report.http, metrics.DIRECT, metrics.OURS_INJECT,
        ))  # fmt: skip
        console.print(
            "  tinyproxy closes every client connection: wrk counts each close as a read "
            "error and reconnects."
        )
    if report.https:
        console.print(_load_table(
            "HTTPS via CONNECT, client: Python asyncio (a different, slower client than wrk:"
            " compare only within this table)",
            report.https, metrics.DIRECT_TLS, metrics.OURS_TLS,
        ))  # fmt: skip
    if report.startup:
        table = Table(title="Start-up (median of runs)", title_justify="left")
        for col in ("command", "median ms", "min ms", "max ms", "runs"):
            table.add_column(col, justify="left" if col == "command" else "right")
        for s in report.startup:
            if s.error:
                table.add_row(s.shown, f"failed: {s.error}", "", "", "", style="red")
                continue
            table.add_row(
                s.shown, f"{s.median_ms:.1f}", f"{min(s.samples_ms):.1f}",
                f"{max(s.samples_ms):.1f}", str(len(s.samples_ms)),
            )  # fmt: skip
        console.print(table)
    if report.rss or report.rss_baselines:
        table = Table(title="Proxy process memory (VmRSS)", title_justify="left")
        for col in ("process", "idle MiB", "max under load MiB"):
            table.add_column(col, justify="left" if col == "process" else "right")
        if report.rss:
            idle, peak = report.rss.get("idle_mib"), report.rss.get("max_mib")
            table.add_row(
                "ours (start_services, after one grant)",
                "-" if idle is None else f"{idle:.1f}", "-" if peak is None else f"{peak:.1f}",
            )  # fmt: skip
        for name, peak in report.rss_baselines.items():
            table.add_row(name, "-", "-" if peak is None else f"{peak:.1f}")
        console.print(table)
    table = Table(title="Targets", title_justify="left")
    for col in ("target", "measured", "limit", "status", "detail"):
        table.add_column(col)
    for t in report.targets():
        status = {True: "[green]MET[/]", False: "[red]MISSED[/]", None: "[yellow]not measured[/]"}
        table.add_row(t.name, t.value, t.limit, status[t.met], t.detail)
    console.print(table)
    busy = busy_warning(report.config)
    if busy:
        console.print(f"[yellow]{busy}[/]")
    for component, why in report.unavailable.items():
        console.print(f"[yellow]{component}: not available: {why}[/]")
    console.print(f"bench finished in {report.elapsed_s:.0f} s")
