"""Run atheris fuzz targets for a fixed time and report executions and findings.

    python -m fuzz.run --target http_head --seconds 60
    python -m fuzz.run --target all --seconds 120      # each target in turn

New corpus entries and findings go to fuzz/findings/<target>/ (git-ignored); the committed
seed corpus fuzz/corpus/<target>/ is only read. Exit status: 0 no finding, 1 finding(s),
2 the fuzzer could not run (e.g. atheris missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fuzz.targets import ROOT, TARGETS, Target

FINDINGS = ROOT / "findings"
_ARTIFACT = re.compile(r"^(crash|timeout|oom|leak|slow-unit)-")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_COV = re.compile(r"#\d+\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)")


@dataclass
class Result:
    target: str
    seconds: float
    executions: int
    coverage: int | None
    corpus: int | None
    findings: list[Path]
    exit_code: int
    log: Path

    def line(self) -> str:
        rate = self.executions / self.seconds if self.seconds else 0.0
        cov = f"cov {self.coverage}" if self.coverage is not None else "cov ?"
        corp = f"corpus {self.corpus}" if self.corpus is not None else "corpus ?"
        return (
            f"{self.target}: {self.executions} executions in {self.seconds:.0f} s "
            f"({rate:.0f}/s), {cov}, {corp}, findings {len(self.findings)}"
        )


def run_target(target: Target, seconds: int, *, jobs_timeout: int = 10) -> Result:
    out = FINDINGS / target.name
    work = out / "corpus"
    work.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in out.iterdir()}
    log = out / "last-run.log"
    cmd = [
        sys.executable, "-m", "fuzz._child", target.name,
        f"-max_total_time={seconds}",
        f"-timeout={jobs_timeout}",
        "-rss_limit_mb=2048",
        "-max_len=4096",
        "-print_final_stats=1",
        f"-artifact_prefix={out}/",
        f"-dict={target.dictionary}",
        str(work), str(target.corpus),
    ]  # fmt: skip
    started = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.run(
            cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT.parent, timeout=seconds + 120
        )
    elapsed = time.monotonic() - started
    text = log.read_text(errors="replace")
    stats = {k: int(v) for k, v in _STAT.findall(text)}
    done = _DONE.findall(text)
    executions = stats.get("number_of_executed_units") or (int(done[-1][0]) if done else 0)
    cov = _COV.findall(text)
    findings = sorted(p for p in out.iterdir() if _ARTIFACT.match(p.name) and p.name not in before)
    return Result(
        target=target.name,
        seconds=elapsed,
        executions=executions,
        coverage=int(cov[-1][0]) if cov else None,
        corpus=len(list(work.iterdir())),
        findings=findings,
        exit_code=proc.returncode,
        log=log,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    p.add_argument("--target", choices=[*sorted(TARGETS), "all"], default="all")
    p.add_argument("--seconds", type=int, default=60, help="run time per target")
    args = p.parse_args(argv)
    if importlib.util.find_spec("atheris") is None:
        print("atheris is not installed: .venv/bin/pip install atheris", file=sys.stderr)
        return 2
    names = sorted(TARGETS) if args.target == "all" else [args.target]
    failed = False
    broken = False
    for name in names:
        result = run_target(TARGETS[name], max(1, args.seconds))
        print(result.line(), flush=True)
        for path in result.findings:
            print(f"  finding: {path.relative_to(ROOT.parent)}  (replay: python -m fuzz.replay "
                  f"--target {name} {path.relative_to(ROOT.parent)})")  # fmt: skip
        if result.findings:
            failed = True
            tail = result.log.read_text(errors="replace").splitlines()[-25:]
            print("  " + "\n  ".join(tail))
        elif result.exit_code != 0 or result.executions == 0:
            broken = True
            print(f"  fuzzer exited {result.exit_code} without a finding; see {result.log}")
    return 1 if failed else 2 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
