"""Start-up cost: `openshell-supervisor run -- /bin/true` against two floors.

Floors: the interpreter alone (``python -c pass``, same interpreter as the supervisor) and
the namespaces alone (``unshare -m -n -p -f --mount-proc /bin/true``).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from integration.bench.metrics import median


@dataclass
class StartupSample:
    label: str
    argv: list[str]
    samples_ms: list[float]
    exit_code: int
    error: str = ""  # last stderr line when the command failed
    shown: str = ""  # short form of the command for the table

    @property
    def median_ms(self) -> float | None:
        return median(self.samples_ms) if self.samples_ms and not self.error else None


def time_command(label: str, argv: Sequence[str], runs: int = 10, shown: str = "") -> StartupSample:
    """Median wall time of ``runs`` runs after one untimed warm-up (page cache, pyc)."""
    samples: list[float] = []
    code = 0
    error = ""
    for i in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
        )
        elapsed = (time.perf_counter() - start) * 1000.0
        code = proc.returncode
        if code != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            error = lines[-1][:300] if lines else f"exit {code}"
            break
        if i > 0:
            samples.append(elapsed)
    return StartupSample(label, list(argv), samples, code, error, shown or " ".join(argv))
