"""The interleaved load plan: order, failure isolation, one kept result per cell."""

from __future__ import annotations

import argparse
from pathlib import Path

from integration.bench.harness import Bench, Measure, Series
from integration.bench.wrk import LoadResult


def _args(tmp_path: Path, repeat: int) -> argparse.Namespace:
    return argparse.Namespace(
        out=tmp_path / "out",
        connections=[1, 32],
        duration=5.0,
        repeat=repeat,
        warmup=0.0,
        startup_runs=1,
    )


def test_rounds_interleave_targets_and_keep_the_best_round(tmp_path: Path) -> None:
    bench = Bench(_args(tmp_path, repeat=2))
    calls: list[tuple[str, int]] = []
    rps = iter([100.0, 200.0, 10.0, 20.0, 300.0, 150.0, 30.0, 5.0])

    def measure(name: str) -> Measure:
        def run(c: int, seconds: float) -> LoadResult:
            calls.append((name, c))
            return LoadResult(name, "wrk", c, seconds, 10, next(rps), {"p50": 1.0})

        return run

    bench.plan = [Series("a", "http", measure("a")), Series("b", "https", measure("b"))]
    try:
        bench.run_plan()
    finally:
        bench.cleanup()
    assert calls == [("a", 1), ("a", 32), ("b", 1), ("b", 32)] * 2
    assert [(r.target, r.connections, r.rps) for r in bench.report.http] == [
        ("a", 1, 300.0), ("a", 32, 200.0),
    ]  # fmt: skip
    assert [(r.target, r.rps, r.repeats_rps) for r in bench.report.https] == [
        ("b", 30.0, [10.0, 30.0]), ("b", 20.0, [20.0, 5.0]),
    ]  # fmt: skip


def test_a_failing_target_is_reported_and_dropped(tmp_path: Path) -> None:
    bench = Bench(_args(tmp_path, repeat=3))
    calls: list[str] = []

    def broken(c: int, seconds: float) -> LoadResult:
        calls.append("broken")
        raise RuntimeError("wrk exited 1: unable to connect")

    def fine(c: int, seconds: float) -> LoadResult:
        calls.append("fine")
        return LoadResult("fine", "wrk", c, seconds, 10, 1.0, {})

    bench.plan = [Series("broken", "http", broken), Series("fine", "http", fine)]
    try:
        bench.run_plan()
    finally:
        bench.cleanup()
    assert calls.count("broken") == 1
    assert calls.count("fine") == 6
    assert "unable to connect" in bench.report.unavailable["broken"]
    assert [r.target for r in bench.report.http] == ["fine", "fine"]
