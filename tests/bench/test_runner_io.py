"""The harness <-> runner line protocol, with real child processes (no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from integration.bench.runner_io import Runner

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
import sys
from integration.bench.runner_io import announce, serve_commands
print("noise before the protocol line")
announce("READY", {"port": 1})
count = {"n": 0}
def stats():
    count["n"] += 1
    return {"asked": count["n"]}
serve_commands(stats)
print("bye", file=sys.stderr)
"""


def test_ready_stats_and_polite_stop(tmp_path: Path) -> None:
    runner = Runner("good", [sys.executable, "-c", GOOD], tmp_path, ROOT)
    with runner:
        assert runner.ready == {"port": 1}
        assert runner.stats() == {"asked": 1}
        assert runner.stats() == {"asked": 2}
        proc = runner.proc
    assert proc is not None and proc.returncode == 0  # exited on stdin EOF, not killed
    assert "bye" in (tmp_path / "good.log").read_text()


def test_a_runner_that_dies_reports_its_last_error_line(tmp_path: Path) -> None:
    runner = Runner(
        "bad", [sys.executable, "-c", "import supervisor.no_such_module"], tmp_path, ROOT
    )
    with pytest.raises(RuntimeError, match="bad exited 1: ModuleNotFoundError"):
        runner.start(timeout=30)
    assert runner.proc is None
