"""``openshell-supervisor demo``: the whole flow on one machine, no SPIRE needed.

Starts the development Workload API, token issuer and the protected services alpha and
beta on loopback, writes a provider profile binding both services to one SPIFFE token
grant (with per-service audience overrides, like the reference profile), then runs the
real supervisor (``run``) with a demo agent. Shows each step and exits 0 only if every
expectation held.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:  # imported at run time only by _start_servers: `demo` alone needs them
    from supervisor.devenv.services import ProtectedService
    from supervisor.devenv.token_issuer import TokenIssuer
    from supervisor.devenv.workload_api import WorkloadAPIServer

SPIFFE_ID = "spiffe://demo.openshell.test/ns/default/sa/agent"
PROFILE_TEMPLATE = """\
# Written by `openshell-supervisor demo`: the reference profile's shape, on loopback.
id: spiffe-token-demo
display_name: SPIFFE token grant demo
description: Dynamic token grant for the alpha/beta demo services
category: other
credentials:
  - name: access_token
    description: Access token obtained via SPIFFE JWT client assertion grant
    required: false
    auth_style: bearer
    header_name: Authorization
    token_grant:
      token_endpoint: {token_url}
      audience: demo-default
      jwt_svid_audience: {issuer_url}
      client_assertion_type: urn:ietf:params:oauth:client-assertion-type:jwt-spiffe
      scopes: [demo]
      cache_ttl_seconds: 60
      audience_overrides:
        - host: 127.0.0.2
          port: {alpha_port}
          audience: alpha
          scopes: [alpha]
        - host: 127.0.0.3
          port: {beta_port}
          audience: beta
          scopes: [beta]
endpoints:
  - host: 127.0.0.2
    port: {alpha_port}
    protocol: rest
    tls: none
    access: read-write
    enforcement: enforce
    allowed_ips: [127.0.0.0/8]   # loopback is refused unless listed: an explicit opt-in
  - host: 127.0.0.3
    port: {beta_port}
    protocol: rest
    tls: none
    access: read-write
    enforcement: enforce
    allowed_ips: [127.0.0.0/8]
"""


@dataclass
class Outcome:
    """Every expectation the demo checks, in order; the demo passes when all hold."""

    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def expect(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append((name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)


def run_demo(console: Console | None = None, keep: bool = False) -> int:
    console = console or Console(stderr=False, highlight=False)
    if os.geteuid() != 0:
        console.print(
            "[red]demo needs root[/]: the supervisor creates mount, network and PID namespaces. "
            "Run `sudo make demo` (or as root)."
        )
        return 1
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="openshell-demo-"))
    base.chmod(0o755)  # the agent (uid 65534) reads its script from here
    socket_dir = base / "spire"
    socket_dir.mkdir(mode=0o755)
    socket_path = socket_dir / "agent.sock"
    outcome = Outcome()
    servers: list[Any] = []
    try:
        console.rule("[bold]openshell-supervisor demo")
        workload, issuer, alpha, beta = _start_servers(console, socket_path, servers)
        profile = _write_profile(base, issuer, alpha, beta)
        _show_bindings(console, str(profile), outcome)
        audit = base / "audit.jsonl"
        proc = _run_agent(console, base, profile, socket_path, audit, [alpha.url, beta.url])
        _check_run(console, outcome, proc, audit, issuer, workload)
    finally:
        for server in reversed(servers):
            with contextlib.suppress(Exception):  # best-effort cleanup of demo servers
                server.stop()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)

    _show_summary(console, outcome, time.monotonic() - started)
    return 0 if outcome.ok else 1


def _start_servers(console: Console, socket_path: Path, servers: list[Any],
                   ) -> tuple[WorkloadAPIServer, TokenIssuer, ProtectedService, ProtectedService]:
    """Start the development Workload API, token issuer, alpha and beta, appending each to
    ``servers`` as soon as it runs (so the caller stops those that started if one fails)."""
    from supervisor.devenv.services import ProtectedService
    from supervisor.devenv.token_issuer import TokenIssuer
    from supervisor.devenv.workload_api import WorkloadAPIServer

    workload = WorkloadAPIServer(str(socket_path), spiffe_id=SPIFFE_ID).start()
    servers.append(workload)
    console.print(f"[green]✓[/] Workload API (development) on unix://{socket_path}  "
                  f"SPIFFE ID [cyan]{SPIFFE_ID}[/]")
    issuer = TokenIssuer(
        jwks_url=workload.jwks_url,
        expected_svid_audience="pending",
        trust_domain=workload.trust_domain,
    ).start()
    servers.append(issuer)
    issuer.expected_svid_audience = issuer.base_url
    console.print(f"[green]✓[/] token issuer on {issuer.token_url} "
                  "(verifies JWT-SVID client assertions, RFC 7523)")
    # 127.0.0.2 and .3, not 127.0.0.1: NO_PROXY names 127.0.0.1, so clients would bypass
    # the proxy (and fail: the agent's own loopback has nothing on these ports).
    alpha = ProtectedService("alpha", issuer.jwks_url, host="127.0.0.2").start()
    beta = ProtectedService("beta", issuer.jwks_url, host="127.0.0.3").start()
    servers += [alpha, beta]
    console.print(f"[green]✓[/] service alpha on {alpha.url} (needs audience+scope 'alpha'), "
                  f"beta on {beta.url} (needs 'beta')")
    return workload, issuer, alpha, beta


def _write_profile(base: Path, issuer: TokenIssuer, alpha: ProtectedService,
                   beta: ProtectedService) -> Path:
    profile = base / "profile.yaml"
    profile.write_text(PROFILE_TEMPLATE.format(
        token_url=issuer.token_url, issuer_url=issuer.base_url,
        alpha_port=alpha.port, beta_port=beta.port,
    ))
    profile.chmod(0o644)
    return profile


def _run_agent(console: Console, base: Path, profile: Path, socket_path: Path, audit: Path,
               service_urls: list[str]) -> subprocess.CompletedProcess[str]:
    """The real supervisor (``run``) with the demo agent, outside any proxy of the caller."""
    agent = base / "agent.py"
    shutil.copyfile(Path(__file__).with_name("demo_agent.py"), agent)
    agent.chmod(0o644)
    cmd = [
        sys.executable, "-m", "supervisor", "run",
        "--profile", str(profile),
        "--spiffe-socket", f"unix://{socket_path}",
        "--audit-log", str(audit),
        "--", sys.executable, str(agent), *service_urls, str(socket_path),
    ]
    console.print("[bold]→ running the agent:[/] openshell-supervisor run --profile "
                  "profile.yaml --spiffe-socket unix://…/agent.sock -- python agent.py")
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["SPIFFE_ENDPOINT_SOCKET"] = f"unix://{socket_path}"  # must not reach the agent
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def _check_run(console: Console, outcome: Outcome, proc: subprocess.CompletedProcess[str],
               audit: Path, issuer: TokenIssuer, workload: WorkloadAPIServer) -> None:
    """Record and show every expectation about the agent's run: its report (when the
    supervisor succeeded), the grants the dev servers counted, and the audit log."""
    outcome.expect("supervisor exit status 0", proc.returncode == 0,
                   f"exit {proc.returncode}")
    if proc.returncode != 0 or not proc.stdout.strip():
        console.print(f"[red]supervisor failed[/] (exit {proc.returncode}):\n{proc.stderr}")
    else:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        _show_services(console, report, outcome)
        _show_isolation(console, report, outcome)
    _show_grants(console, outcome, issuer.issued, workload.counters.fetch_jwt_svid)
    _show_audit(console, audit, outcome)


def tick(ok: bool) -> str:
    """The mark printed beside a checked line: it always says what the check said."""
    return "[green]✓[/]" if ok else "[red]✗[/]"


def _show_grants(console: Console, outcome: Outcome, grants: int, svids: int) -> None:
    """Two audiences → two grants, each with a JWT-SVID of its own (one per exchange)."""
    grants_ok = outcome.expect("one grant per audience (alpha, beta)", grants == 2,
                               f"{grants} grants")
    console.print(f"{tick(grants_ok)} token issuer issued {grants} access tokens (expected 2)")
    svids_ok = outcome.expect("one JWT-SVID per grant", svids == grants,
                              f"{svids} JWT-SVIDs for {grants} grants")
    console.print(f"{tick(svids_ok)} Workload API signed {svids} JWT-SVIDs "
                  f"(expected one per grant)")


def _show_bindings(console: Console, profile: str, outcome: Outcome) -> None:
    from supervisor.profiles.loader import load_profiles

    loaded = load_profiles([profile])
    table = Table(title="bindings from the provider profile", title_justify="left")
    for col in ("binding", "audience", "scopes", "header"):
        table.add_column(col)
    for b in loaded.bindings:
        table.add_row(b.id, b.grant.audience, " ".join(b.grant.scopes), b.header_name)
    console.print(table)
    audiences = sorted(b.grant.audience for b in loaded.bindings)
    outcome.expect("profile expands to alpha and beta bindings", audiences == ["alpha", "beta"],
                   ", ".join(audiences))


def _show_services(console: Console, report: dict[str, Any], outcome: Outcome) -> None:
    table = Table(title="what the protected services accepted", title_justify="left")
    for col in ("service", "HTTP", "audience", "scope", "issued to", "Authorization headers"):
        table.add_column(col)
    for name in ("alpha", "beta"):
        result = report.get(name, {})
        body = result.get("body") if isinstance(result.get("body"), dict) else {}
        table.add_row(name, str(result.get("status")), str(body.get("aud", "-")),
                      str(body.get("scope", "-")), str(body.get("subject", "-")),
                      str(body.get("authorization_headers", "-")))
        outcome.expect(f"{name}: 200 with audience and scope '{name}'",
                       result.get("status") == 200 and body.get("aud") == name
                       and name in str(body.get("scope", "")).split(),
                       f"status {result.get('status')}")
        outcome.expect(f"{name}: exactly one Authorization header (the agent's was removed)",
                       body.get("authorization_headers") == 1)
        outcome.expect(f"{name}: token issued to the workload's SPIFFE ID",
                       body.get("subject") == SPIFFE_ID)
    console.print(table)


def _show_isolation(console: Console, report: dict[str, Any], outcome: Outcome) -> None:
    sock = report.get("socket", {})
    outcome.expect("agent cannot stat the Workload API socket", sock.get("stat") != "visible",
                   str(sock.get("stat")))
    outcome.expect("agent cannot connect to the Workload API socket",
                   sock.get("connect") != "connected", str(sock.get("connect")))
    outcome.expect("agent sees no SPIFFE/supervisor variables", not report.get("spiffe_env"),
                   ", ".join(report.get("spiffe_env", [])))
    outcome.expect("agent is not root", report.get("uid") not in (0, None),
                   f"uid {report.get('uid')}")
    console.print(f"agent (uid {report.get('uid')}): socket stat → [cyan]{sock.get('stat')}[/], "
                  f"connect → [cyan]{sock.get('connect')}[/]; SPIFFE variables seen: "
                  f"{report.get('spiffe_env') or 'none'}")
    iso = report.get("isolation", {})
    table = Table(title="check-isolation, run inside the sandbox", title_justify="left")
    for col in ("check", "ok", "detail"):
        table.add_column(col)
    for check in iso.get("checks", []):
        table.add_row(str(check.get("name")), "[green]yes[/]" if check.get("ok") else "[red]NO[/]",
                      str(check.get("detail", ""))[:90])
    console.print(table)
    outcome.expect("check-isolation passes inside the sandbox",
                   iso.get("ok") is True and report.get("isolation_exit") == 0,
                   str(iso.get("error", "")))


def _show_audit(console: Console, audit: Path, outcome: Outcome) -> None:
    try:
        lines = audit.read_text().splitlines()
    except OSError as err:
        outcome.expect("audit log written", False, str(err))
        return
    events = [json.loads(line) for line in lines if line.strip()]
    table = Table(title=f"audit log ({len(events)} OCSF events)", title_justify="left")
    for col in ("class", "action", "severity", "request", "message"):
        table.add_column(col)
    actions = {1: "Allowed", 2: "Denied"}
    severities = {1: "Informational", 2: "Low", 3: "Medium", 4: "High"}
    for ev in events[-12:]:
        url = ev.get("http_request", {}).get("url", {})
        request = ""
        if url:
            request = f"{url.get('hostname', '')}:{url.get('port', '')}{url.get('path', '')}"
        table.add_row(
            str(ev.get("class_name", ev.get("class_uid"))),
            str(ev.get("action", actions.get(ev.get("action_id", 0), ""))),
            str(ev.get("severity", severities.get(ev.get("severity_id", 0), ""))),
            request,
            str(ev.get("message", ""))[:60],
        )
    console.print(table)
    http = [e for e in events if e.get("class_uid") == 4002]
    outcome.expect("audit log has HTTP Activity events for the grants", len(http) >= 2,
                   f"{len(http)} events")
    outcome.expect("audit log carries no bearer token",
                   not any("Bearer " in line or "eyJ" in line for line in lines))


def _show_summary(console: Console, outcome: Outcome, seconds: float) -> None:
    table = Table(title="demo expectations", title_justify="left")
    for col in ("expectation", "held", "detail"):
        table.add_column(col)
    for name, ok, detail in outcome.checks:
        table.add_row(name, "[green]yes[/]" if ok else "[red]NO[/]", detail)
    console.print(table)
    verdict = "[bold green]PASS[/]" if outcome.ok else "[bold red]FAIL[/]"
    console.print(f"{verdict}  ({len(outcome.checks)} expectations, {seconds:.1f} s)")
