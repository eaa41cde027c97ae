"""Start-up cost: `openshell-supervisor run -- /bin/true` against two floors, with a profile
that has nothing to intercept and with one that has an interceptable endpoint.

Floors: the interpreter alone (``python -c pass``, same interpreter as the supervisor) and
the namespaces alone (``unshare -m -n -p -f --mount-proc /bin/true``).
"""

from __future__ import annotations

import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from integration.bench.stats import median


@dataclass
class StartupSample:
    label: str
    argv: list[str]
    samples_ms: list[float]
    exit_code: int
    error: str = ""  # last stderr line when the command failed
    shown: str = ""  # short form of the command for the table
    # CPU time (user + system) of the command and every descendant it waited for, per
    # run: what the start-up costs in work, apart from waiting for a busy machine's CPUs.
    cpu_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float | None:
        return median(self.samples_ms) if self.samples_ms and not self.error else None

    @property
    def median_cpu_ms(self) -> float | None:
        return median(self.cpu_ms) if self.cpu_ms and not self.error else None


def _run_once(argv: Sequence[str]) -> tuple[float, float, int, str]:
    """(wall ms, CPU ms, exit code, last stderr line when it failed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        list(argv), stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
    )
    elapsed = (time.perf_counter() - start) * 1000.0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000.0
    if proc.returncode == 0:
        return elapsed, cpu, 0, ""
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    return elapsed, cpu, proc.returncode, lines[-1][:300] if lines else f"exit {proc.returncode}"


def time_commands(
    commands: Sequence[tuple[str, Sequence[str], str]], runs: int = 20
) -> list[StartupSample]:
    """Each (label, argv, shown) ``runs`` times, interleaved (one run of every command per
    round, so a disturbance hits all alike), after one untimed warm-up round (page cache,
    bytecode). A command that fails is dropped with its error."""
    samples = [StartupSample(label, list(argv), [], 0, "", shown) for label, argv, shown in commands]
    for round_no in range(runs + 1):
        for sample in samples:
            if sample.error:
                continue
            ms, cpu, code, error = _run_once(sample.argv)
            sample.exit_code = code
            if code != 0:
                sample.error = error
                sample.samples_ms.clear()
                sample.cpu_ms.clear()
            elif round_no > 0:
                sample.samples_ms.append(ms)
                sample.cpu_ms.append(cpu)
    return samples
