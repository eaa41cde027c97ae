"""`openshell-supervisor demo` as a newcomer sees it: it passes, and prints no warning line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.privileged

WARNING_LINE = re.compile(r"warning|deprecat", re.IGNORECASE)


def test_demo_passes_without_warning_lines() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["COLUMNS"] = "200"  # one table row per line, so a failed expectation reads whole
    proc = subprocess.run([sys.executable, "-m", "supervisor", "demo"], capture_output=True,
                          text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS" in proc.stdout
    lines = (proc.stdout + proc.stderr).splitlines()
    assert [line for line in lines if WARNING_LINE.search(line)] == []
    assert "✗" not in proc.stdout
