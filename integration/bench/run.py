"""`make bench`: measure our proxy against nginx direct, tinyproxy and mitmproxy, in one run.

Phases, each interleaving its legs over rounds: req/s and latency under load (wrk and a
Python TLS client); bulk transfers (curl, a large download and upload per leg); stream
latency (server-sent events, WebSocket round trips); per-connection memory and first-request
cost; start-up of `run`. Everything listens on 127.0.0.1. Writes bench-results/bench.json
and bench-results/latency.png and prints tables plus every target as MET/MISSED. A
component that cannot run (a missing tool, our proxy not importable) is reported as "not
available: <why>" and the rest of the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from integration.bench import metrics
from integration.bench.baselines import (
    ensure_bench_venv,
    mitm_ca,
    mitmdump_service,
    tinyproxy_service,
)
from integration.bench.bulk import create_payload, run_bulk
from integration.bench.certs import BenchPKI, make_pki
from integration.bench.harness import ROOT, Bench, console
from integration.bench.identity import binary_identity_cost
from integration.bench.legs import PAYLOAD_NAME, Endpoints, StreamPorts, bulk_legs, stream_legs
from integration.bench.nginx import Upstream, nginx_service
from integration.bench.ours import OurProxy
from integration.bench.procs import tool_version
from integration.bench.report import render
from integration.bench.rss import RssSampler
from integration.bench.runner_io import Runner
from integration.bench.streams import run_streams


def versions(bench_python: Path | None) -> dict[str, str]:
    out = {
        "python": sys.version.split()[0],
        "nginx": tool_version(["nginx", "-v"]),
        "tinyproxy": tool_version(["tinyproxy", "-v"]),
        "wrk": tool_version(["wrk", "-v"]),
    }
    if bench_python is not None:
        out["mitmproxy"] = tool_version([str(bench_python.parent / "mitmdump"), "--version"])
    return out


def start_baselines(
    bench: Bench, stack: contextlib.ExitStack, up: Upstream, pki: BenchPKI, ep: Endpoints
) -> list[tuple[str, RssSampler]]:
    """Plan nginx direct, tinyproxy and mitmproxy; start the proxies (they idle until used)."""
    bench.add_http(metrics.DIRECT, up.bound_port, up.bound_port, False, client_auth=True)
    bench.add_https(metrics.DIRECT_TLS, up.tls_port, up.tls_port, False, pki.ca_cert, True)
    samplers: list[tuple[str, RssSampler]] = []
    if bench.args.only_ours:
        return samplers
    with bench.component("tinyproxy"):
        tp = stack.enter_context(tinyproxy_service(bench.work, bench.logs))
        samplers.append((metrics.TINYPROXY, stack.enter_context(RssSampler(tp.pid))))
        # tinyproxy cannot inject: the client sends the header, tinyproxy forwards it.
        bench.add_http(metrics.TINYPROXY, tp.port, up.bound_port, True, client_auth=True)
        ep.tinyproxy = tp.port
    with bench.component("mitmproxy"):
        bench.bench_python = ensure_bench_venv(ROOT, bench.logs)
        mitm = stack.enter_context(
            mitmdump_service(bench.bench_python, bench.work, bench.logs, pki.ca_cert)
        )
        samplers.append((metrics.MITMPROXY, stack.enter_context(RssSampler(mitm.pid))))
        bench.add_http(metrics.MITMPROXY, mitm.port, up.bound_port, via_proxy=True)
        bench.add_https(metrics.MITMPROXY_TLS, mitm.port, up.tls_port, True, mitm_ca(bench.work))
        ep.mitmproxy, ep.mitm_ca = mitm.port, mitm_ca(bench.work)
    return samplers


def start_stream_server(bench: Bench, stack: contextlib.ExitStack, pki: BenchPKI) -> StreamPorts:
    """The upload sink and the SSE/WebSocket upstream (its own process)."""
    runner = Runner(
        "stream-server",
        [sys.executable, "-m", "integration.bench.stream_server", "--cert", str(pki.server_cert),
         "--key", str(pki.server_key), "--listen", "plain", "--listen", "tls", "--listen", "tls"],
        bench.logs, ROOT,
    )  # fmt: skip
    ports = stack.enter_context(runner).ready["ports"]
    return StreamPorts(*(int(p) for p in ports))


def run_bulk_phase(bench: Bench, ep: Endpoints) -> None:
    args = bench.args
    size = args.bulk_mib * 2**20
    legs = bulk_legs(ep)
    console.rule(f"bulk: {len(legs)} legs x 2 directions x {args.bulk_rounds} rounds x "
                 f"{args.bulk_mib} MiB")  # fmt: skip
    with bench.component("bulk", rule=False):
        payload = create_payload((ep.up.bulk_dir or bench.work / "bulk") / PAYLOAD_NAME, size)
        bench.report.bulk = run_bulk(legs, payload, size, args.bulk_rounds)
        for cell in bench.report.bulk:
            if cell.error:
                bench.report.unavailable[f"bulk {cell.leg} {cell.direction}"] = cell.error


def run_stream_phase(bench: Bench, ep: Endpoints) -> None:
    args = bench.args
    legs = stream_legs(ep)
    console.rule(f"streams: {len(legs)} legs x (SSE, WebSocket) x {args.stream_rounds} rounds x "
                 f"{args.stream_messages} messages")  # fmt: skip
    with bench.component("streams", rule=False):
        bench.report.streams = run_streams(
            legs, args.stream_rounds, args.stream_messages, args.stream_interval_us
        )
        for cell in bench.report.streams:
            if cell.error:
                why = cell.error.removeprefix("not available: ")
                bench.report.unavailable[f"{cell.kind} {cell.leg}"] = why


def plot(bench: Bench, json_path: Path) -> None:
    with bench.component("plot"):
        if bench.bench_python is None:
            bench.bench_python = ensure_bench_venv(ROOT, bench.logs)
        png = bench.out / "latency.png"
        proc = subprocess.run(
            [str(bench.bench_python), "-m", "integration.bench.plot", str(json_path), str(png)],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
        console.print(f"wrote {png}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m integration.bench.run", description=__doc__)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument(
        "--repeat", type=int, default=3,
        help="measurements per target and connection count; the highest valid req/s is kept",
    )  # fmt: skip
    p.add_argument("--warmup", type=float, default=1.0, help="untimed seconds per target")
    p.add_argument(
        "--connections",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 32],
        help="comma-separated keep-alive connection counts",
    )
    p.add_argument("--startup-runs", type=int, default=20, help="timed runs per command")
    p.add_argument("--bulk-mib", type=int, default=1024, help="size of each bulk transfer")
    p.add_argument("--bulk-rounds", type=int, default=3, help="interleaved bulk rounds")
    p.add_argument("--stream-messages", type=int, default=1000,
                   help="server-sent events / WebSocket round trips per leg and round")
    p.add_argument("--stream-interval-us", type=int, default=2000,
                   help="pause between server-sent events")
    p.add_argument("--stream-rounds", type=int, default=3, help="interleaved stream rounds")
    p.add_argument("--idle-connections", type=int, default=1000,
                   help="idle keep-alive agent connections for the memory leg")
    p.add_argument("--first-requests", type=int, default=200,
                   help="fresh connections (and as many warm requests) for the first-request leg")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results", help="results folder")
    p.add_argument("--only-ours", action="store_true", help="skip tinyproxy and mitmproxy")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so every child (own sessions) is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    bench = Bench(args)
    bench.report.config["loadavg_start"] = os.getloadavg()
    try:
        pki = make_pki(bench.work)
        nginx, up = nginx_service(bench.work, bench.logs, pki)
        ep = Endpoints(up, pki.ca_cert)
        with contextlib.ExitStack() as stack:
            # Without nginx each load reports its own failure; start-up is still measured.
            with bench.component("nginx"):
                stack.enter_context(nginx)
            samplers = start_baselines(bench, stack, up, pki, ep)
            with bench.component("stream server"):
                ep.streams = start_stream_server(bench, stack, pki)
            ours = OurProxy.start(bench, stack, up, pki, ep.streams)
            ep.ours, ep.ours_ca = ours.port, ours.ca
            ep.ours_pid = ours.proxy.pid if ours.proxy is not None else None
            bench.run_plan()
            for name, sampler in samplers:
                bench.report.rss_baselines[name] = sampler.max_mib
            ours.loads_done()
            run_bulk_phase(bench, ep)
            ours.bulk_done()
            run_stream_phase(bench, ep)
            console.rule("connections")
            ours.connection_costs(args.idle_connections, args.first_requests)
            with bench.component("binary identity"):
                identity = binary_identity_cost(args.first_requests).summary()
                bench.report.config["binary_identity"] = identity
                console.print(
                    f"binary identity: first request of a cold connection "
                    f"+{identity['cold_median_ms']:.3f} ms (p95 {identity['cold_p95_ms']:.3f}), "
                    f"warm +{identity['warm_median_ms']:.4f} ms; first sight of a binary "
                    f"{identity['first_sight_ms']:.1f} ms once; through /proc tables instead "
                    f"of sock_diag {identity['tables_median_ms']:.3f} ms"
                )
            ours.startup()
    finally:
        bench.cleanup()
    report = bench.report
    report.config["loadavg_end"] = os.getloadavg()
    report.versions = versions(bench.bench_python)
    report.elapsed_s = time.monotonic() - started
    json_path = bench.out / "bench.json"
    report.write_json(json_path)
    plot(bench, json_path)
    report.write_json(json_path)  # again, with the plot's outcome
    console.rule("results")
    render(report, console)
    console.print(f"wrote {json_path}")
    missed = [t for t in report.targets() if t.met is False]
    return 1 if args.strict and missed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
