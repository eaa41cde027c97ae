"""Our proxy under load, its memory, its grants, and `run`'s start-up cost.

Two runner processes: the dev Workload API + token issuer, and the proxy alone (wired by
``supervisor.services.start_services``, as `run` does). The profile binds a credential to
nginx's bound HTTP and HTTPS servers on 127.0.0.1 and declares its open server without one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

from integration.bench import metrics
from integration.bench.certs import BenchPKI
from integration.bench.conns import FirstRequestResult
from integration.bench.conns import idle_connections as idle_connections_rss
from integration.bench.harness import ROOT, Bench, console
from integration.bench.legs import StreamPorts
from integration.bench.nginx import Upstream
from integration.bench.procs import LOOPBACK, free_port
from integration.bench.rss import RssSampler, vmrss_kib
from integration.bench.runner_io import Runner
from integration.bench.startup import time_commands
from integration.bench.tlsload import parse_head

SVID_AUDIENCE = "bench-token-issuer"
COLD_REQUESTS = 100

BOUND_PROFILE_HEAD = """\
- id: bench-bound
  display_name: Bench upstreams with a token grant
  description: nginx and the stream server on loopback; every request gets a bearer token
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
"""
OPEN_PROFILE_HEAD = """\
- id: bench-open
  display_name: Bench upstreams without credentials
  description: reachable on loopback, nothing injected; TLS ones are tunnelled (tls skip)
  category: other
  credentials: []
  endpoints:
"""


def _endpoint(port: int, tls: str | None, access: str = "read-only") -> str:
    """One loopback endpoint; ``tls`` None: the default (intercepted when bound)."""
    tls_line = "" if tls is None else f"      tls: {tls}\n"
    return (
        f"    - host: 127.0.0.1\n      port: {port}\n      protocol: rest\n{tls_line}"
        f"      access: {access}\n      enforcement: enforce\n      allowed_ips: [127.0.0.0/8]\n"
    )


def profile_text(
    up: Upstream, token_url: str, streams: StreamPorts | None = None, intercept: bool = True
) -> str:
    """Bound: nginx's bound HTTP and TLS (intercepted) servers and the stream server's plain
    and TLS listeners. Open: nginx's plain server and the tunnelled (``tls: skip``) TLS
    servers. ``intercept=False``: the open profile alone, nothing a CONNECT could be
    intercepted for (every endpoint not ``tls: skip`` is interceptable), for start-up."""
    opened = [_endpoint(up.plain_port, "skip")]
    if up.tunnel_port:
        opened.append(_endpoint(up.tunnel_port, "skip"))
    if streams is not None:
        opened.append(_endpoint(streams.tunnel, "skip", "read-write"))
    if not intercept:
        return OPEN_PROFILE_HEAD + "".join(opened)
    bound = [_endpoint(up.bound_port, "none"), _endpoint(up.tls_port, None)]
    if streams is not None:
        bound += [_endpoint(streams.plain, "none", "read-write"),
                  _endpoint(streams.tls, None, "read-write")]  # fmt: skip
    head = BOUND_PROFILE_HEAD.format(token_url=token_url, svid_audience=SVID_AUDIENCE)
    return head + "".join(bound) + OPEN_PROFILE_HEAD + "".join(opened)


def write_profile(
    path: Path, up: Upstream, token_url: str, streams: StreamPorts | None = None,
    intercept: bool = True,
) -> Path:  # fmt: skip
    path.write_text(profile_text(up, token_url, streams, intercept))
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
        self.plain_profile: Path | None = None  # nothing to intercept (start-up)
        self.rss: RssSampler | None = None
        self.idle_kib: int | None = None
        self.port: int | None = None  # where the proxy listens, once it serves
        self.ca: Path | None = None  # its sandbox CA bundle
        self._rss_mark = 0

    @classmethod
    def start(
        cls, bench: Bench, stack: contextlib.ExitStack, up: Upstream, pki: BenchPKI,
        streams: StreamPorts | None = None,
    ) -> OurProxy:  # fmt: skip
        ours = cls(bench, up, pki)
        with bench.component("dev Workload API + token issuer"):
            ours.devenv = stack.enter_context(ours._devenv_runner())
            token_url = ours.devenv.ready["token_url"]
            ours.profile = write_profile(bench.work / "bench-profile.yaml", up, token_url, streams)
            ours.plain_profile = write_profile(
                bench.work / "bench-profile-plain.yaml", up, token_url, streams, intercept=False
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
            ours.port, ours.ca = port, Path(ca)
            bench.add_https(metrics.OURS_TLS, port, up.tls_port, True, Path(ca))
        return ours

    @property
    def socket_addr(self) -> str:
        assert self.devenv is not None
        return str(self.devenv.ready["socket"])

    def _devenv_runner(self) -> Runner:
        return devenv_runner(self.bench.work, self.bench.logs)

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

    def loads_done(self) -> None:
        """After the req/s loads: their RSS is the target's; later legs are context."""
        if self.rss is not None:
            idle_mib = self.idle_kib / 1024 if self.idle_kib is not None else None
            self.bench.report.rss = {
                "pid_role": "proxy runner (start_services; no dev servers in it)",
                "max_mib": self.rss.max_mib,
                "samples": len(self.rss.samples_kib),
                "idle_mib": idle_mib,
            }
            self._rss_mark = len(self.rss.samples_kib)

    def bulk_done(self) -> None:
        if self.rss is not None:
            since = self.rss.samples_kib[self._rss_mark :]
            self.bench.report.bulk_rss_max_mib = max(since) / 1024 if since else None

    def connection_costs(self, idle_connections: int, first_requests: int) -> None:
        """Idle keep-alive connections' memory, then a cold connection's first request."""
        if self.proxy is None or self.port is None:
            return
        status = Path(f"/proc/{self.proxy.pid}/status")

        def rss_kib() -> int:
            return vmrss_kib(status.read_text()) or 0

        port = self.port
        with self.bench.component(f"{idle_connections} idle connections"):
            idle = idle_connections_rss(port, self.up.bound_port, idle_connections, rss_kib)
            self.bench.report.idle = idle
            console.print(f"idle connections: +{idle.cost_mib:.1f} MiB for {idle.connections} "
                          f"({idle.answered} answered 200)")  # fmt: skip
        for binaries in (False, True):
            what = "binary identity" if binaries else "no binaries"
            with self.bench.component(f"first request in a sandbox, {what}"):
                first = first_request_in_sandbox(self.bench.work, self.up, first_requests, binaries)
                if binaries:
                    self.bench.report.first = first
                else:
                    self.bench.report.first_plain = first
                console.print(f"first request ({what}): +{first.added_ms:.3f} ms over a warm "
                              "connection")  # fmt: skip

    def startup(self) -> None:
        """Time start-up (after the loads, on a machine the bench no longer loads)."""
        if self.profile is None or self.plain_profile is None:
            return
        with self.bench.component("start-up"):
            _startup_phase(self.bench, self.plain_profile, self.profile, self.socket_addr)


IDENTITY_PROFILE = """\
- id: bench-identity
  display_name: Bench upstream for one binary
  description: nginx's open server on loopback, for the agent's interpreter only
  category: other
  credentials: []
{binaries}  endpoints:
{endpoint}"""


def devenv_runner(work: Path, logs: Path) -> Runner:
    """The dev Workload API (socket in a private ``work``/spire) and token issuer, as one
    process; enter it to start it."""
    spire = work / "spire"
    spire.mkdir(mode=0o700)
    return Runner(
        "devenv",
        [sys.executable, "-m", "integration.bench.devenv_runner",
         "--socket", str(spire / "agent.sock"), "--svid-audience", SVID_AUDIENCE],
        logs, ROOT,
    )  # fmt: skip


def first_request_in_sandbox(
    work: Path, up: Upstream, n: int, binaries: bool
) -> FirstRequestResult:
    """A fresh connection's first request against a warm one's, timed by an agent inside
    `run` through the sandbox's proxy. ``binaries``: the endpoint admits only the agent's
    interpreter, so the proxy looks up the connecting executable (ARCHITECTURE.md 11) on a
    connection's first request."""
    interpreter = os.path.realpath(sys.executable)
    listed = f"  binaries:\n    - {interpreter}\n" if binaries else ""
    profile = work / f"bench-identity-{int(binaries)}.yaml"
    profile.write_text(IDENTITY_PROFILE.format(
        binaries=listed, endpoint=_endpoint(up.plain_port, "skip")))  # fmt: skip
    agent = [sys.executable, str(ROOT / "integration" / "bench" / "first_request_agent.py"),
             str(up.plain_port), str(n)]  # fmt: skip
    argv = [str(supervisor_exe()), "run", "--profile", str(profile), "--", *agent]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise RuntimeError(f"the agent failed: {why[:300]}")
    doc = json.loads(lines[-1])
    return FirstRequestResult(doc["cold_ms"], doc["warm_ms"])


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


def _startup_phase(bench: Bench, plain: Path, intercepting: Path, socket_addr: str) -> None:
    runs = bench.args.startup_runs
    bench.report.config["bytecode"] = precompile()
    commands = [
        (metrics.STARTUP_PYTHON, [sys.executable, "-c", "pass"],
         "python3 -c pass (the supervisor's interpreter)"),
        ("unshare", ["unshare", "-m", "-n", "-p", "-f", "--mount-proc", "/bin/true"],
         "unshare -m -n -p -f --mount-proc /bin/true"),
        # Only the CLI's imports: separates interpreter + import cost from sandbox set-up.
        ("cli", [str(supervisor_exe()), "--version"], "openshell-supervisor --version"),
        (metrics.STARTUP_PLAIN, supervisor_run_argv(plain, socket_addr, ["/bin/true"]),
         "run -- /bin/true, nothing to intercept (tunnels only)"),
        (metrics.STARTUP_INTERCEPT, supervisor_run_argv(intercepting, socket_addr, ["/bin/true"]),
         "run -- /bin/true, an interceptable endpoint (per-run CA)"),
    ]  # fmt: skip
    for sample in time_commands(commands, runs):
        bench.report.startup.append(sample)
        shown = f"{sample.median_ms:.1f} ms" if sample.median_ms is not None else sample.error
        console.print(f"{sample.label:<14} median {shown}")
        if sample.error:
            bench.report.unavailable[f"start-up {sample.label}"] = sample.error
