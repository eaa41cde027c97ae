"""Our proxy under load, its memory, its grants, and `run`'s start-up cost.

Two runner processes: the dev Workload API + token issuer, and the proxy alone (wired by
``supervisor.services.start_services``, as `run` does). The profile binds a credential to
nginx's bound HTTP and HTTPS servers on 127.0.0.1 and declares its open server without one.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
from pathlib import Path

from integration.bench import metrics
from integration.bench.certs import BenchPKI
from integration.bench.harness import ROOT, Bench, console
from integration.bench.nginx import Upstream
from integration.bench.procs import LOOPBACK, free_port
from integration.bench.rss import RssSampler, vmrss_kib
from integration.bench.runner_io import Runner
from integration.bench.startup import time_command
from integration.bench.tlsload import parse_head

SVID_AUDIENCE = "bench-token-issuer"
COLD_REQUESTS = 100

PROFILE_TEMPLATE = """\
- id: bench-bound
  display_name: Bench upstream with a token grant
  description: nginx on loopback; every request gets a bearer token from the dev issuer
  category: other
  credentials:
    - name: access_token
      description: dev issuer token
      required: false
      auth_style: bearer
      header_name: Authorization
      token_grant:
        token_endpoint: {token_url}
        audience: bench
        jwt_svid_audience: {svid_audience}
        client_assertion_type: urn:ietf:params:oauth:client-assertion-type:jwt-bearer
        scopes: [bench]
  endpoints:
    - host: 127.0.0.1
      port: {bound_port}
      protocol: rest
      tls: none
      access: read-only
      enforcement: enforce
      allowed_ips: [127.0.0.0/8]
    - host: 127.0.0.1
      port: {tls_port}
      protocol: rest
      access: read-only
      enforcement: enforce
      allowed_ips: [127.0.0.0/8]
- id: bench-open
  display_name: Bench upstream without credentials
  description: nginx on loopback, reachable, nothing injected
  category: other
  credentials: []
  endpoints:
    - host: 127.0.0.1
      port: {plain_port}
      protocol: rest
      tls: skip
      access: read-only
      enforcement: enforce
      allowed_ips: [127.0.0.0/8]
"""


def write_profile(path: Path, up: Upstream, token_url: str) -> Path:
    path.write_text(
        PROFILE_TEMPLATE.format(
            token_url=token_url,
            svid_audience=SVID_AUDIENCE,
            bound_port=up.bound_port,
            tls_port=up.tls_port,
            plain_port=up.plain_port,
        )
    )
    return path


def supervisor_exe() -> Path:
    """The console script installed beside the interpreter running the bench."""
    return Path(sys.executable).parent / "openshell-supervisor"


def supervisor_run_argv(profile: Path, spiffe_socket: str, command: list[str]) -> list[str]:
    return [
        str(supervisor_exe()), "run", "--profile", str(profile),
        "--spiffe-socket", spiffe_socket, "--", *command,
    ]  # fmt: skip


async def cold_burst(proxy_port: int, target_port: int, n: int) -> dict[str, int]:
    """``n`` requests at once on ``n`` fresh connections; counts of status (or error)."""
    authority = f"{LOOPBACK}:{target_port}"
    request = (
        f"GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    ).encode()
    conns = await asyncio.gather(*(asyncio.open_connection(LOOPBACK, proxy_port) for _ in range(n)))

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        try:
            writer.write(request)  # all n are written before any answer is awaited
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            return str(parse_head(head)[0])
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError) as err:
            return type(err).__name__
        finally:
            writer.close()

    outcomes = await asyncio.gather(*(one(r, w) for r, w in conns))
    return dict(collections.Counter(outcomes))


def measure_our_proxy(bench: Bench, up: Upstream, pki: BenchPKI) -> None:
    spire = bench.work / "spire"
    spire.mkdir(mode=0o700)
    devenv = Runner(
        "devenv",
        [sys.executable, "-m", "integration.bench.devenv_runner",
         "--socket", str(spire / "agent.sock"), "--svid-audience", SVID_AUDIENCE],
        bench.logs, ROOT,
    )  # fmt: skip
    with bench.component("dev Workload API + token issuer"):
        devenv.start()
    if devenv.proc is None:
        bench.report.unavailable["our proxy"] = "needs the dev Workload API and token issuer"
        return
    with devenv:
        profile = write_profile(bench.work / "bench-profile.yaml", up, devenv.ready["token_url"])
        socket_addr = str(devenv.ready["socket"])
        with bench.component("our proxy"):
            _proxy_phase(bench, up, pki, profile, socket_addr, devenv)
        with bench.component("start-up"):
            _startup_phase(bench, profile, socket_addr)


def _proxy_phase(
    bench: Bench, up: Upstream, pki: BenchPKI, profile: Path, socket_addr: str, devenv: Runner
) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "integration.bench.proxy_runner", "--profile", str(profile),
        "--port", str(port), "--spiffe-socket", socket_addr, "--ca-bundle", str(pki.ca_cert),
    ]  # fmt: skip
    with Runner("our-proxy", argv, bench.logs, ROOT) as proxy:
        # Cold first: nothing cached yet, so this is the one-grant-in-flight check.
        before = devenv.stats()
        statuses = asyncio.run(cold_burst(port, up.bound_port, COLD_REQUESTS))
        after = devenv.stats()
        grants = {key: after[key] - before[key] for key in after}
        bench.report.grants = {"requests": COLD_REQUESTS, "statuses": statuses, **grants}
        console.print(
            f"cold burst of {COLD_REQUESTS}: statuses {statuses}, issuer counters {grants}"
        )

        idle_kib = vmrss_kib(Path(f"/proc/{proxy.pid}/status").read_text())
        with RssSampler(proxy.pid) as rss:
            with bench.component(metrics.OURS_INJECT):
                bench.http(metrics.OURS_INJECT, port, up.bound_port, via_proxy=True)
            with bench.component(metrics.OURS_NO_BINDING):
                bench.http(metrics.OURS_NO_BINDING, port, up.plain_port, via_proxy=True)
            with bench.component(metrics.OURS_TLS):
                ca = proxy.ready.get("sandbox_ca")
                if not ca:
                    raise RuntimeError("the proxy reported no sandbox CA (interception off?)")
                bench.https(metrics.OURS_TLS, port, up.tls_port, True, Path(ca))
        idle_mib = idle_kib / 1024 if idle_kib is not None else 0.0
        bench.report.rss = {
            "pid_role": "proxy runner (start_services; no dev servers in it)",
            "max_mib": rss.max_mib,
            "samples": len(rss.samples_kib),
            "idle_mib": idle_mib,
        }
        console.print(
            f"proxy RSS: {idle_mib:.1f} MiB after one grant, "
            f"max {rss.max_mib or 0:.1f} MiB under load"
        )


def precompile() -> str:
    """Write the product's bytecode, as an installed image has it.

    Without it every start compiles the package from source when PYTHONDONTWRITEBYTECODE
    is set (it is on some development machines), which is not the cost being measured.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "supervisor")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        return f"compileall failed: {proc.stdout.strip()[-200:]}"
    return "compiled with compileall before timing"


def _startup_phase(bench: Bench, profile: Path, socket_addr: str) -> None:
    runs = bench.args.startup_runs
    bench.report.config["bytecode"] = precompile()
    for label, argv, shown in (
        ("python", [sys.executable, "-c", "pass"], "python -c pass (the supervisor's python)"),
        ("unshare", ["unshare", "-m", "-n", "-p", "-f", "--mount-proc", "/bin/true"],
         "unshare -m -n -p -f --mount-proc /bin/true"),
        # Only the CLI's imports: separates interpreter + import cost from sandbox set-up.
        ("cli", [str(supervisor_exe()), "--version"], "openshell-supervisor --version"),
        ("run", supervisor_run_argv(profile, socket_addr, ["/bin/true"]),
         "openshell-supervisor run --profile bench.yaml --spiffe-socket S -- /bin/true"),
    ):  # fmt: skip
        sample = time_command(label, argv, runs, shown)
        bench.report.startup.append(sample)
        shown = f"{sample.median_ms:.1f} ms" if sample.median_ms is not None else sample.error
        console.print(f"{label:<8} median {shown}")
        if sample.error:
            bench.report.unavailable[f"start-up {label}"] = sample.error
