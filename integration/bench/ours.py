"""Our proxy under load, its memory, its grants, and `run`'s start-up cost.

Two runner processes: the dev Workload API + token issuer, and the proxy alone (wired by
``supervisor.services.start_services``, as `run` does). The profile binds a credential to
nginx's bound HTTP and HTTPS servers on 127.0.0.1 and declares its open server without one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
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


class OurProxy:
    """The dev servers and our proxy, started and cold-checked; loads are added to the plan.

    Each step is a bench component: what fails is reported and what depends on it skipped.
    """

    def __init__(self, bench: Bench, up: Upstream, pki: BenchPKI) -> None:
        self.bench = bench
        self.up = up
        self.pki = pki
        self.devenv: Runner | None = None
        self.proxy: Runner | None = None
        self.profile: Path | None = None
        self.rss: RssSampler | None = None
        self.idle_kib: int | None = None

    @classmethod
    def start(
        cls, bench: Bench, stack: contextlib.ExitStack, up: Upstream, pki: BenchPKI
    ) -> OurProxy:
        ours = cls(bench, up, pki)
        with bench.component("dev Workload API + token issuer"):
            ours.devenv = stack.enter_context(ours._devenv_runner())
            ours.profile = write_profile(
                bench.work / "bench-profile.yaml", up, ours.devenv.ready["token_url"]
            )
        if ours.devenv is None:
            bench.report.unavailable["our proxy"] = "needs the dev Workload API and token issuer"
            return ours
        with bench.component("our proxy"):
            proxy = stack.enter_context(ours._proxy_runner())
            ours.proxy = proxy
            ours._cold_grants(proxy)
            ours.idle_kib = vmrss_kib(Path(f"/proc/{proxy.pid}/status").read_text())
            ours.rss = stack.enter_context(RssSampler(proxy.pid))
            port = int(proxy.ready["port"])
            bench.add_http(metrics.OURS_INJECT, port, up.bound_port, via_proxy=True)
            bench.add_http(metrics.OURS_NO_BINDING, port, up.plain_port, via_proxy=True)
            ca = proxy.ready.get("sandbox_ca")
            if not ca:
                raise RuntimeError("the proxy reported no sandbox CA (interception off?)")
            bench.add_https(metrics.OURS_TLS, port, up.tls_port, True, Path(ca))
        return ours

    @property
    def socket_addr(self) -> str:
        assert self.devenv is not None
        return str(self.devenv.ready["socket"])

    def _devenv_runner(self) -> Runner:
        spire = self.bench.work / "spire"
        spire.mkdir(mode=0o700)
        return Runner(
            "devenv",
            [sys.executable, "-m", "integration.bench.devenv_runner",
             "--socket", str(spire / "agent.sock"), "--svid-audience", SVID_AUDIENCE],
            self.bench.logs, ROOT,
        )  # fmt: skip

    def _proxy_runner(self) -> Runner:
        assert self.profile is not None
        argv = [
            sys.executable, "-m", "integration.bench.proxy_runner",
            "--profile", str(self.profile), "--port", str(free_port()),
            "--spiffe-socket", self.socket_addr, "--ca-bundle", str(self.pki.ca_cert),
        ]  # fmt: skip
        return Runner("our-proxy", argv, self.bench.logs, ROOT)

    def _cold_grants(self, proxy: Runner) -> None:
        """First traffic of a fresh proxy: the one-grant-in-flight check."""
        assert self.devenv is not None
        before = self.devenv.stats()
        port = int(proxy.ready["port"])
        statuses = asyncio.run(cold_burst(port, self.up.bound_port, COLD_REQUESTS))
        after = self.devenv.stats()
        grants = {key: after[key] - before[key] for key in after}
        self.bench.report.grants = {"requests": COLD_REQUESTS, "statuses": statuses, **grants}
        console.print(
            f"cold burst of {COLD_REQUESTS}: statuses {statuses}, issuer counters {grants}"
        )

    def finish(self) -> None:
        """After the loads: record memory, then time start-up on the now idle machine."""
        if self.rss is not None:
            idle_mib = self.idle_kib / 1024 if self.idle_kib is not None else None
            self.bench.report.rss = {
                "pid_role": "proxy runner (start_services; no dev servers in it)",
                "max_mib": self.rss.max_mib,
                "samples": len(self.rss.samples_kib),
                "idle_mib": idle_mib,
            }
        if self.profile is None:
            return
        with self.bench.component("start-up"):
            _startup_phase(self.bench, self.profile, self.socket_addr)


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
