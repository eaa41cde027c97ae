"""Soak test: ``python -m integration.soak.run --minutes N`` (default 10).

Starts the development servers (Workload API, token issuer, protected services alpha and
beta, an undeclared canary) and the proxy in its own process wired as ``run`` wires it,
then drives mixed traffic from several client tasks for N minutes while injecting faults
on a schedule (see ``faults`` and ``plan``). All traffic stays on 127.0.0.0/8.

Targets (exit 1 when one is missed): no wrongly forwarded request (a protected service saw
a request without a valid token or with two credentials, or the canary got a connection);
no unexpected outcome per request kind; no query string or token in the audit log; proxy
RSS and open fds grow < 10 % from the baseline window to the end; >= 90 % of good requests
succeed at the end (recovery). Exit 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from integration.soak import faults, report
from integration.soak.environment import SERVICE_HOSTS, SoakEnvironment
from integration.soak.monitor import Series, growth
from integration.soak.plan import Plan, make_plan
from integration.soak.traffic import FORGED, QUERY_MARK, Client, Stats, Target

_REQUESTS_PER_CLIENT_SECOND = 200  # loop bound: far above what a client can reach
# Per client: its keep-alive connection, one fresh connection, an idle upstream per service
# and one in flight; more than this at any sample means connections pile up.
TRAFFIC_FDS_PER_CLIENT = 6


def start_proxy(env: SoakEnvironment, log: Path) -> tuple[subprocess.Popen[str], int]:
    cmd = [
        sys.executable, "-m", "integration.soak.proxy_child",
        "--profile", str(env.profile),
        "--spiffe-socket", env.spiffe_address,
        "--audit-log", str(env.audit_log),
    ]  # fmt: skip
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the child prints READY or exits
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"proxy did not start: {log.read_text()[-2000:]}")
    return proc, int(line.split()[1])


def stop_proxy(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _schedule(plan: Plan, env: SoakEnvironment, t0: float, stop: threading.Event) -> None:
    for seg in plan.segments:
        await asyncio.sleep(max(0.0, t0 + seg.start - time.monotonic()))
        await asyncio.to_thread(faults.clear, env)
        if seg.phase is not None:
            await asyncio.to_thread(faults.SCHEDULE[seg.phase].apply, env, stop)


async def _sample(series: Series, pid: int, env: SoakEnvironment, every: float) -> None:
    while True:
        series.take(pid)
        env.collect()
        await asyncio.sleep(every)


async def drive(
    plan: Plan, env: SoakEnvironment, pid: int, port: int, clients: int, pause: float,
    sample_every: float,
) -> tuple[Stats, Series]:  # fmt: skip
    stats = Stats()
    t0 = time.monotonic()
    series = Series(
        started=t0, local_port=port, remote_hosts=frozenset(SERVICE_HOSTS.values())
    )
    target = Target(
        proxy=("127.0.0.1", port),
        alpha=f"127.0.0.2:{env.ports['alpha']}",
        beta=f"127.0.0.3:{env.ports['beta']}",
        canary=f"{env.canary.host}:{env.canary.port}" if env.canary else "127.0.0.4:9",
    )
    stop = threading.Event()
    scheduler = asyncio.create_task(_schedule(plan, env, t0, stop))
    sampler = asyncio.create_task(_sample(series, pid, env, sample_every))
    deadline = t0 + plan.duration
    bound = int(plan.duration * _REQUESTS_PER_CLIENT_SECOND)

    def phase() -> str:
        return plan.segment_at(time.monotonic() - t0).name

    try:
        await asyncio.gather(
            *(Client(target, stats, seed, pause=pause).run(deadline, bound, phase)
              for seed in range(clients))
        )  # fmt: skip
    finally:
        stop.set()
        scheduler.cancel()
        sampler.cancel()
        await asyncio.gather(scheduler, sampler, return_exceptions=True)
        await asyncio.to_thread(faults.clear, env)
    series.take(pid)
    # What good requests saw in the final window, by wall-clock time since t0.
    stats.recent_good = [(t - t0, o) for t, o in stats.recent_good]
    return stats, series


def _audit_scan(path: Path) -> tuple[int, int]:
    events = leaks = 0
    markers = (QUERY_MARK, "Bearer ", "eyJ", FORGED.split()[1])
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                events += 1
                leaks += any(m in line for m in markers)
    except OSError:
        return 0, 0
    return events, leaks


def figures(
    plan: Plan, env: SoakEnvironment, stats: Stats, series: Series, alive: bool, minutes: float,
    clients: int,
) -> report.Figures:  # fmt: skip
    base = series.window(*plan.baseline)
    end = series.window(*plan.final)
    final = [o for t, o in stats.recent_good if plan.final[0] <= t <= plan.final[1]]
    events, leaks = _audit_scan(env.audit_log)
    f = report.Figures(
        minutes=minutes,
        requests=stats.outcomes,
        unexpected=stats.unexpected(),
        good_by_phase=stats.by_phase,
        phase_order=plan.names(),
        wrongly_forwarded={
            "service_refused_no_valid_token": sum(env.refused.values()),
            "service_saw_two_credentials": env.duplicate_credentials,
            "canary_connections": env.canary.connections if env.canary else 0,
        },
        services_accepted=dict(env.accepted),
        recovery=(final.count("ok") / len(final)) if final else None,
        rss_growth=growth([s.rss_kib for s in base], [s.rss_kib for s in end]),
        fd_growth=growth([s.stable_fds for s in base], [s.stable_fds for s in end]),
        max_traffic_fds=max((s.traffic_fds for s in series.samples), default=0),
        traffic_fd_bound=TRAFFIC_FDS_PER_CLIENT * clients,
        samples=series.samples,
        audit_leaks=leaks,
        audit_events=events,
        proxy_alive=alive,
        stale_retries=stats.stale_retries,
    )
    f.violations = report.judge(f)
    return f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integration.soak.run",
                                description=__doc__.split("\n")[0])  # fmt: skip
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=6, help="concurrent client tasks")
    p.add_argument("--pause", type=float, default=0.03, help="mean pause between requests (s)")
    p.add_argument("--sample-seconds", type=float, default=2.0)
    p.add_argument("--phase-seconds", type=float, help="fault phase length (default: scaled)")
    p.add_argument("--final-seconds", type=float, default=40.0)
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (audit log, logs)")
    args = p.parse_args(argv)
    try:
        plan = make_plan(args.minutes * 60, args.phase_seconds, args.final_seconds)
    except ValueError as err:
        print(f"soak: {err}", file=sys.stderr)
        return 2
    env = SoakEnvironment()
    proc: subprocess.Popen[str] | None = None
    try:
        env.start()
        proc, port = start_proxy(env, env.base / "proxy.log")
        print(f"soak: proxy pid {proc.pid} on 127.0.0.1:{port}; {plan.duration:.0f} s, "
              f"{args.clients} clients, fault phases of {plan.phase_seconds:.1f} s", flush=True)
        stats, series = asyncio.run(drive(plan, env, proc.pid, port, args.clients, args.pause,
                                          args.sample_seconds))  # fmt: skip
        alive = proc.poll() is None
        stop_proxy(proc)
        env.stop()
        f = figures(plan, env, stats, series, alive, args.minutes, args.clients)
    except (OSError, RuntimeError) as err:
        print(f"soak: could not run: {err}", file=sys.stderr)
        return 2
    finally:
        if proc is not None and proc.poll() is None:
            stop_proxy(proc)
        env.stop()
        if args.keep:
            print(f"soak: kept {env.base}")
        else:
            shutil.rmtree(env.base, ignore_errors=True)
    print(report.text(f))
    if args.json is not None:
        args.json.write_text(report.dumps(f))
    return 1 if f.violations else 0


if __name__ == "__main__":
    sys.exit(main())
