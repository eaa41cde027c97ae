"""Interleaved req/s: our proxy from two source trees (A/B) and tinyproxy, with wrk.

Wall-clock figures swing with the machine's load; alternating the legs round by round and
taking medians compares them under the same load. Each leg is one wrk run (one thread,
keep-alive) of ``--duration`` seconds; the table gives the median req/s over ``--rounds``
and the load average. ``--other ROOT``: a second checkout (e.g. ``git worktree`` or an
exported tree of main) whose ``supervisor`` package the B proxy imports.

Usage: python -m integration.bench.reqs_ab [--src ROOT_A] [--other ROOT_B] [--rounds 15] [--duration 2]
       [--connections 1,32] [--target inject|open]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

from integration.bench.baselines import tinyproxy_service
from integration.bench.certs import make_pki
from integration.bench.harness import ROOT
from integration.bench.nginx import nginx_service
from integration.bench.ours import devenv_runner, write_profile
from integration.bench.procs import free_port
from integration.bench.runner_io import Runner
from integration.bench.wrk import run_wrk


def proxy(
    name: str, work: Path, profile: Path, spiffe: str, ca: Path, src: Path, audit: bool = False
) -> Runner:
    argv = [sys.executable, "-m", "integration.bench.proxy_runner", "--profile", str(profile),
            "--port", str(free_port()), "--spiffe-socket", spiffe, "--ca-bundle", str(ca)]  # fmt: skip
    if audit:
        argv += ["--audit-log", str(work / f"audit-{name}.jsonl")]
    # Run from ``src``: ``-m`` puts it first on sys.path, ahead of the editable install.
    return Runner(name, argv, work, src)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 for pid 0)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of a process (0 for pid 0):
    how often its threads slept and woke, whatever the machine's load."""
    if not pid:
        return 0
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in text.splitlines():
            if "ctxt_switches:" in line:
                total += int(line.split()[1])
    return total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integration.bench.reqs_ab")
    p.add_argument("--src", type=Path, default=ROOT, help="the source tree of the A proxy")
    p.add_argument("--other", type=Path, help="a second source tree (the B proxy)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--connections", default="1,32")
    p.add_argument("--target", choices=("inject", "open"), default="inject")
    p.add_argument("--audit-log", action="store_true", help="the proxies write an audit log")
    args = p.parse_args(argv)
    conns = [int(c) for c in args.connections.split(",")]
    with tempfile.TemporaryDirectory(prefix="reqs-ab-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        pki = make_pki(work)
        nginx, up = nginx_service(work, work, pki)
        stack.enter_context(nginx)
        tiny = stack.enter_context(tinyproxy_service(work, work))
        devenv = stack.enter_context(devenv_runner(work, work))
        profile = write_profile(work / "profile.yaml", up, devenv.ready["token_url"])
        spiffe = str(devenv.ready["socket"])
        target = up.bound_port if args.target == "inject" else up.plain_port
        # name -> (proxy port, client sends the token, pid whose CPU time is counted or 0)
        legs: dict[str, tuple[int, bool, int]] = {}
        a = stack.enter_context(proxy("A", work, profile, spiffe, pki.ca_cert, args.src, args.audit_log))
        legs[f"ours-{args.target} A ({args.src})"] = (int(a.ready["port"]), False, a.pid)
        if args.other is not None:
            b = stack.enter_context(proxy("B", work, profile, spiffe, pki.ca_cert, args.other, args.audit_log))
            legs[f"ours-{args.target} B ({args.other})"] = (int(b.ready["port"]), False, b.pid)
        legs["tinyproxy"] = (tiny.port, True, 0)
        results: dict[tuple[str, int], list[float]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}  # proxy CPU microseconds per request
        switches: dict[tuple[str, int], list[float]] = {}  # its context switches per request
        loads = [os.getloadavg()[0]]
        for _ in range(args.rounds + 1):  # the first round warms up (connections, token)
            for name, (port, auth, pid) in legs.items():
                for c in conns:
                    before, before_cs = cpu_seconds(pid), context_switches(pid)
                    r = run_wrk(name.split()[0], port, target, True, c, args.duration, work, auth)
                    if not r.valid:
                        raise RuntimeError(f"{name} c={c}: errors {r.errors}")
                    results.setdefault((name, c), []).append(r.rps)
                    if pid:
                        used = cpu_seconds(pid) - before
                        cpu.setdefault((name, c), []).append(used / r.requests * 1e6)
                        cs = context_switches(pid) - before_cs
                        switches.setdefault((name, c), []).append(cs / r.requests)
            loads.append(os.getloadavg()[0])
        print(f"median req/s of {args.rounds} interleaved rounds x {args.duration:g} s; "
              f"load average {min(loads):.2f}-{max(loads):.2f}")  # fmt: skip
        for (name, c), rps in results.items():
            kept = rps[1:]
            per_request = cpu.get((name, c), [])[1:]
            per = f"; proxy CPU {statistics.median(per_request):.1f} us/request" if per_request else ""
            cs_per = switches.get((name, c), [])[1:]
            per += f", {statistics.median(cs_per):.2f} context switches/request" if cs_per else ""
            print(f"  {name:60} c={c:<3} {statistics.median(kept):7.0f} req/s "
                  f"(min {min(kept):.0f}, max {max(kept):.0f}){per}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
