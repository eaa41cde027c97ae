"""One bench run's shared state and helpers: output paths, load series, failure isolation."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console

from integration.bench.report import BenchReport
from integration.bench.tlsload import run_tls_load
from integration.bench.wrk import LoadResult, pick_representative, run_wrk

ROOT = Path(__file__).resolve().parents[2]
# Wide enough for the tables when the output is a pipe (make, CI logs).
console = Console(width=None if sys.stdout.isatty() else 150)


class Bench:
    """Where to write, how long to load, and everything measured so far."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.logs = self.out / "logs"
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.work = Path(tempfile.mkdtemp(prefix="openshell-bench-"))
        self.work.chmod(0o755)  # nginx and tinyproxy workers run as nobody
        self.conns: list[int] = args.connections
        self.report = BenchReport(
            config={
                "duration_s": args.duration, "connections": self.conns,
                "repeat": args.repeat, "repeat_pick": "highest valid req/s",
                "warmup_s": args.warmup, "startup_runs": args.startup_runs,
                "cpus": len(os.sched_getaffinity(0)), "address": "127.0.0.1",
            }
        )  # fmt: skip
        self.bench_python: Path | None = None

    @contextlib.contextmanager
    def component(self, name: str) -> Iterator[None]:
        """Run one part; on failure record why and carry on with the next part."""
        console.rule(name)
        try:
            yield
        except Exception as err:  # a bench reports a gap, it does not stop at it
            self.report.unavailable[name] = f"{type(err).__name__}: {err}"
            console.print(f"[yellow]{name}: not available: {err}[/]")

    def http(
        self, target: str, connect_port: int, target_port: int, via_proxy: bool,
        client_auth: bool = False,
    ) -> None:  # fmt: skip
        """wrk at each connection count; ``client_auth``: the client sends the token."""
        self._series(
            self.report.http,
            target,
            lambda c, d: run_wrk(
                target, connect_port, target_port, via_proxy, c, d, self.work, client_auth
            ),
        )

    def https(
        self, target: str, connect_port: int, target_port: int, via_proxy: bool, ca: Path,
        client_auth: bool = False,
    ) -> None:  # fmt: skip
        """The Python TLS client at each connection count (CONNECT first when via a proxy)."""
        self._series(
            self.report.https,
            target,
            lambda c, d: run_tls_load(
                target, connect_port, target_port, via_proxy, ca, c, d, client_auth
            ),
        )

    def _series(
        self, into: list[LoadResult], target: str, measure: Callable[[int, float], LoadResult]
    ) -> None:
        if self.args.warmup > 0:
            measure(max(self.conns), self.args.warmup)  # connections, caches, tokens
        for c in self.conns:
            runs = [measure(c, self.args.duration) for _ in range(self.args.repeat)]
            result = pick_representative(runs)
            into.append(result)
            flag = "" if result.valid else f"  [red]INVALID ({result.errors})[/]"
            spread = (
                f"  (repeats {', '.join(f'{x:,.0f}' for x in result.repeats_rps)})"
                if len(runs) > 1 else ""
            )  # fmt: skip
            console.print(
                f"{target:<18} {result.client:<14} c={c:<3} {result.rps:>10,.0f} req/s  "
                f"p50 {result.latency_us.get('p50', 0) / 1000:.3f} ms  "
                f"p99 {result.latency_us.get('p99', 0) / 1000:.3f} ms{flag}{spread}"
            )

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
