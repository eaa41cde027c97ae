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
from integration.bench.bulk import DIRECTIONS, BulkResult, bulk_ratio, find_bulk
from integration.bench.conns import FirstRequestResult, IdleResult
from integration.bench.metrics import Measured, Target
from integration.bench.startup import StartupSample
from integration.bench.stats import median
from integration.bench.streams import StreamResult, added_ms
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
    bulk: list[BulkResult] = field(default_factory=list)
    bulk_rss_max_mib: float | None = None  # our proxy during the bulk legs (context)
    streams: list[StreamResult] = field(default_factory=list)
    idle: IdleResult | None = None
    first: FirstRequestResult | None = None  # in a sandbox, binary identity on
    first_plain: FirstRequestResult | None = None  # the same without binaries (context)
    unavailable: dict[str, str] = field(default_factory=dict)  # component -> why
    elapsed_s: float = 0.0

    def startup_medians(self) -> dict[str, float]:
        return {s.label: s.median_ms for s in self.startup if s.median_ms is not None}

    def measured(self) -> Measured:
        grants = self.grants.get("issued")
        statuses = self.grants.get("statuses", {})
        return Measured(
            http=self.http,
            startup_ms=self.startup_medians(),
            startup_cpu_ms={
                s.label: s.median_cpu_ms for s in self.startup if s.median_cpu_ms is not None
            },
            rss_load_mib=self.rss.get("max_mib"),
            cold_grants=grants if isinstance(grants, int) else None,
            cold_answered=statuses.get("200", 0) if isinstance(statuses, dict) else 0,
            cold_requests=int(self.grants.get("requests", 0)),
            bulk=self.bulk,
            streams=self.streams,
            idle=self.idle,
            first=self.first,
        )

    def targets(self) -> list[Target]:
        return metrics.evaluate_targets(self.measured())

    def to_json(self) -> dict[str, Any]:
        conns = self.config.get("connections", [1, 32])
        return {
            "config": self.config,
            "versions": self.versions,
            "http": [dataclasses.asdict(r) for r in self.http],
            "https": [dataclasses.asdict(r) for r in self.https],
            "startup": [
                {**dataclasses.asdict(s), "median_ms": s.median_ms, "median_cpu_ms": s.median_cpu_ms}
                for s in self.startup
            ],
            "startup_over_python_ms": {
                label: metrics.over_python(self.startup_medians(), label)
                for label in (metrics.STARTUP_PLAIN, metrics.STARTUP_INTERCEPT)
            },
            "bulk": [
                {**dataclasses.asdict(b), "gbps": b.gbps, "cpu_per_gib": b.cpu_per_gib}
                for b in self.bulk
            ],
            "bulk_rss_max_mib": self.bulk_rss_max_mib,
            "streams": [
                {**dataclasses.asdict(s), "median_p50_us": s.median_p50_us,
                 "median_p99_us": s.median_p99_us}
                for s in self.streams
            ],
            "idle_connections": None if self.idle is None else {
                **dataclasses.asdict(self.idle), "cost_mib": self.idle.cost_mib,
                "per_connection_kib": self.idle.per_connection_kib,
            },
            "first_request": {
                name: None if r is None else {**dataclasses.asdict(r), "added_ms": r.added_ms}
                for name, r in (("binary_identity", self.first), ("no_binaries", self.first_plain))
            },
            "rss": self.rss,
            "rss_baselines_max_mib": self.rss_baselines,
            "grants": self.grants,
            "ratios": metrics.ratios(self.http, self.https, conns),
            "targets": [{**dataclasses.asdict(t), "status": t.status} for t in self.targets()],
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


def _bulk_table(report: BenchReport) -> Table:
    size = report.bulk[0].size if report.bulk else 0
    table = Table(
        title=f"Bulk, one {size / 2**30:g} GiB transfer per round, client: curl; median GB/s "
        "(10^9 B/s) of the rounds; ratios of ours to the group's baseline and ceiling",
        title_justify="left",
    )  # fmt: skip
    for col in ("leg", "download", "upload", "proxy CPU s/GiB", "rounds", "note"):
        table.add_column(col, justify="left" if col in ("leg", "note") else "right")
    legs = list(dict.fromkeys(b.leg for b in report.bulk))
    notes = {
        ours: f"vs {base}: " + " / ".join(
            metrics._fmt(bulk_ratio(report.bulk, ours, base, d), "x") for d in DIRECTIONS
        ) + f"; vs {ceiling}: " + " / ".join(
            metrics._fmt(bulk_ratio(report.bulk, ours, ceiling, d), "x") for d in DIRECTIONS
        )
        for ours, base, ceiling, _ in metrics.BULK_GROUPS
    }  # fmt: skip
    for leg in legs:
        cells = [find_bulk(report.bulk, leg, d) for d in DIRECTIONS]
        shown = [
            "-" if c is None else (f"failed: {c.error[:60]}" if c.error else
                                   metrics._fmt(c.gbps, ""))
            for c in cells
        ]  # fmt: skip
        cpu = [None if c is None else c.cpu_per_gib for c in cells]
        cpu_shown = "-" if cpu == [None, None] else " / ".join(metrics._fmt(x, "") for x in cpu)
        rounds = "/".join(str(len(c.seconds)) for c in cells if c is not None)
        table.add_row(leg, *shown, cpu_shown, rounds, notes.get(leg, ""))
    return table


def _stream_table(report: BenchReport) -> Table:
    table = Table(
        title="Streams: latency per server-sent event (server stamp to receipt) and per "
        "WebSocket message round trip; medians of the rounds' p50/p99, ms",
        title_justify="left",
    )  # fmt: skip
    for col in ("kind", "leg", "p50", "p99", "+p50", "+p99", "samples"):
        table.add_column(col, justify="left" if col in ("kind", "leg") else "right")
    bases = dict(metrics.STREAM_PAIRS)
    for r in report.streams:
        if r.error:
            table.add_row(r.kind, r.leg, r.error, "", "", "", "", style="yellow")
            continue
        base = bases.get(r.leg)
        added = ["-" if base is None else metrics._fmt(added_ms(report.streams, r.leg, base,
                 r.kind, k), "", 3) for k in ("p50", "p99")]  # fmt: skip
        p50, p99 = r.median_p50_us, r.median_p99_us
        table.add_row(
            r.kind, r.leg, metrics._fmt(None if p50 is None else p50 / 1000, "", 3),
            metrics._fmt(None if p99 is None else p99 / 1000, "", 3), *added, str(r.samples),
        )  # fmt: skip
    return table


def _connections_lines(report: BenchReport) -> list[str]:
    lines = []
    if report.idle is not None:
        i = report.idle
        lines.append(
            f"idle keep-alive connections: {i.connections} open ({i.answered} answered 200): "
            f"RSS {i.before_kib / 1024:.1f} -> {i.idle_kib / 1024:.1f} MiB "
            f"(+{i.cost_mib:.1f} MiB, {i.per_connection_kib:.1f} KiB each), "
            f"{i.after_close_kib / 1024:.1f} MiB after closing them"
        )
    for what, f in (("binary identity", report.first), ("no binaries", report.first_plain)):
        if f is None:
            continue
        lines.append(
            f"first request on a fresh connection inside a sandbox ({what}): median "
            f"{median(f.cold_ms):.3f} ms, on a warm one {median(f.warm_ms):.3f} ms "
            f"(+{f.added_ms:.3f} ms; {len(f.cold_ms)} each)"
        )
    if report.bulk_rss_max_mib is not None:
        lines.append(f"our proxy's RSS during the bulk legs: max {report.bulk_rss_max_mib:.1f} MiB")
    return lines


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
    if report.bulk:
        console.print(_bulk_table(report))
    if report.streams:
        console.print(_stream_table(report))
    for line in _connections_lines(report):
        console.print(line)
    if report.startup:
        table = Table(title="Start-up (median of interleaved runs)", title_justify="left")
        for col in ("command", "median ms", "min ms", "max ms", "CPU ms (median)", "runs"):
            table.add_column(col, justify="left" if col == "command" else "right")
        for s in report.startup:
            if s.error:
                table.add_row(s.shown, f"failed: {s.error}", "", "", "", "", style="red")
                continue
            cpu = s.median_cpu_ms
            table.add_row(
                s.shown, f"{s.median_ms:.1f}", f"{min(s.samples_ms):.1f}",
                f"{max(s.samples_ms):.1f}", "-" if cpu is None else f"{cpu:.1f}",
                str(len(s.samples_ms)),
            )  # fmt: skip
        console.print(table)
    if report.rss or report.rss_baselines:
        table = Table(title="Proxy process memory (VmRSS)", title_justify="left")
        for col in ("process", "idle MiB", "max under load MiB"):
            table.add_column(col, justify="left" if col == "process" else "right")
        if report.rss:
            idle, peak = report.rss.get("idle_mib"), report.rss.get("max_mib")
            table.add_row(
                "ours (start_services, after one grant; max during the req/s loads)",
                "-" if idle is None else f"{idle:.1f}", "-" if peak is None else f"{peak:.1f}",
            )  # fmt: skip
        for name, peak in report.rss_baselines.items():
            table.add_row(name, "-", "-" if peak is None else f"{peak:.1f}")
        console.print(table)
    table = Table(title="Targets", title_justify="left")
    for col in ("target", "measured", "limit", "status", "detail"):
        table.add_column(col)
    for t in report.targets():
        colour = {True: "green", False: "red", None: "yellow"}[t.met]
        table.add_row(t.name, t.value, t.limit, f"[{colour}]{t.status}[/]", t.detail)
    console.print(table)
    busy = busy_warning(report.config)
    if busy:
        console.print(f"[yellow]{busy}[/]")
    for component, why in report.unavailable.items():
        console.print(f"[yellow]{component}: not available: {why}[/]")
    console.print(f"bench finished in {report.elapsed_s:.0f} s")
