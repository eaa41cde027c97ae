"""One bench run's shared state: output paths, the load plan, failure isolation.

Loads run interleaved: every target is measured once per round, and rounds repeat. On a
machine shared with other work the disturbance then spreads over all targets alike
instead of falling on whichever target happened to run during it, so ratios hold up.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from integration.bench.report import BenchReport
from integration.bench.tlsload import run_tls_load
from integration.bench.wrk import LoadResult, pick_representative, run_wrk

ROOT = Path(__file__).resolve().parents[2]
# Wide enough for the tables when the output is a pipe (make, CI logs).
console = Console(width=None if sys.stdout.isatty() else 150)

Measure = Callable[[int, float], LoadResult]  # (connections, seconds) -> result


@dataclass
class Series:
    """One target under load: measured at every connection count in every round."""

    target: str
    kind: str  # "http" (wrk) or "https" (the Python TLS client)
    measure: Measure


class Bench:
    """Where to write, how long to load, what to measure, and what was measured."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.logs = self.out / "logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.work = Path(tempfile.mkdtemp(prefix="openshell-bench-"))
        self.work.chmod(0o755)  # nginx and tinyproxy workers run as nobody
        self.conns: list[int] = args.connections
        self.plan: list[Series] = []
        self.report = BenchReport(
            config={
                "duration_s": args.duration, "connections": self.conns,
                "repeat": args.repeat, "order": "interleaved rounds",
                "repeat_pick": "highest valid req/s", "warmup_s": args.warmup,
                "startup_runs": args.startup_runs, "cpus": len(os.sched_getaffinity(0)),
                "address": "127.0.0.1",
            }
        )  # fmt: skip
        self.bench_python: Path | None = None

    @contextlib.contextmanager
    def component(self, name: str, rule: bool = True) -> Iterator[None]:
        """Run one part; on failure record why and carry on with the next part."""
        if rule:
            console.rule(name)
        try:
            yield
        except Exception as err:  # a bench reports a gap, it does not stop at it
            self.report.unavailable[name] = f"{type(err).__name__}: {err}"
            console.print(f"[yellow]{name}: not available: {err}[/]")

    def add_http(
        self, target: str, connect_port: int, target_port: int, via_proxy: bool,
        client_auth: bool = False,
    ) -> None:  # fmt: skip
        """wrk; ``client_auth``: the client sends the token itself (nothing injects)."""
        work = self.work
        self.plan.append(
            Series(target, "http", lambda c, d: run_wrk(
                target, connect_port, target_port, via_proxy, c, d, work, client_auth))
        )  # fmt: skip

    def add_https(
        self, target: str, connect_port: int, target_port: int, via_proxy: bool, ca: Path,
        client_auth: bool = False,
    ) -> None:  # fmt: skip
        """The Python TLS client (CONNECT first when ``via_proxy``)."""
        self.plan.append(
            Series(target, "https", lambda c, d: run_tls_load(
                target, connect_port, target_port, via_proxy, ca, c, d, client_auth))
        )  # fmt: skip

    def run_plan(self) -> None:
        """Warm every target up, then ``repeat`` interleaved rounds; keep one run per cell."""
        console.rule(f"load: {len(self.plan)} targets x {self.conns} connections x "
                     f"{self.args.repeat} rounds x {self.args.duration:g} s")  # fmt: skip
        live = list(self.plan)
        if self.args.warmup > 0:  # connections, caches, the first token
            live = [s for s in live if self._try(s, max(self.conns), self.args.warmup)]
        runs: dict[tuple[str, int], list[LoadResult]] = {}
        for round_no in range(1, self.args.repeat + 1):
            for series in list(live):
                for c in self.conns:
                    result = self._try(series, c, self.args.duration)
                    if result is None:
                        live.remove(series)
                        break
                    runs.setdefault((series.target, c), []).append(result)
                    self._show(result, round_no)
        for series in self.plan:
            into = self.report.http if series.kind == "http" else self.report.https
            for c in self.conns:
                if (series.target, c) in runs:
                    into.append(pick_representative(runs[(series.target, c)]))

    def _try(self, series: Series, connections: int, seconds: float) -> LoadResult | None:
        with self.component(series.target, rule=False):
            return series.measure(connections, seconds)
        return None  # the component recorded why

    def _show(self, r: LoadResult, round_no: int) -> None:
        flag = "" if r.valid else f"  [red]INVALID ({r.errors})[/]"
        console.print(
            f"round {round_no}  {r.target:<16} {r.client:<14} c={r.connections:<3} "
            f"{r.rps:>10,.0f} req/s  p50 {r.latency_us.get('p50', 0) / 1000:.3f} ms  "
            f"p99 {r.latency_us.get('p99', 0) / 1000:.3f} ms{flag}"
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
