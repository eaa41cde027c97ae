"""Shared machinery of the end-to-end suite: the development servers, the profile, and
``run_agent``, which runs the REAL supervisor (``python -m supervisor run``) as a
subprocess with an audit log and checks every run for leaked secrets.

The layout mirrors ``openshell-supervisor demo`` (supervisor/devenv/demo.py): a Workload API
on a unix socket in a dedicated directory, the token issuer, and the protected services
alpha (127.0.0.2) and beta (127.0.0.3) -- not 127.0.0.1, which NO_PROXY names. The agent runs
as uid 65534, so everything it reads lives in a 0755 directory with 0644 files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.devenv.demo import PROFILE_TEMPLATE
from supervisor.devenv.keys import SigningKey
from supervisor.devenv.services import ProtectedService
from supervisor.devenv.token_issuer import TokenIssuer
from supervisor.devenv.workload_api import WorkloadAPIServer

SPIFFE_ID = "spiffe://e2e.openshell.test/ns/default/sa/agent"
AGENTS_SRC = Path(__file__).resolve().with_name("agents")
PROXY_ERROR_HEADER = "x-openshell-proxy-error"

# The profile `demo` ships: the end-to-end suite exercises exactly what users see run.
GRANT_PROFILE = PROFILE_TEMPLATE

# Declared, uncredentialed, and WITHOUT allowed_ips: 'localhost' resolves to loopback, which
# the proxy must refuse (ssrf_denied). The sink behind it counts any connection that slips by.
PLAIN_PROFILE = """\
id: e2e-plain
display_name: end-to-end plain endpoint
description: a declared loopback destination that is not opted in via allowed_ips
category: other
credentials: []
endpoints:
  - host: localhost
    port: {sink_port}
    protocol: rest
    tls: none
    access: read-write
    enforcement: enforce
"""


class ConnectionSink:
    """A TCP listener on 127.0.0.1 that only counts connections: 'was it ever contacted?'."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="e2e-sink", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


@dataclass
class SecretRecorder:
    """Every access token and JWT-SVID the development servers signed during the session."""

    values: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: SigningKey) -> None:
        """Spy on ``key``: remember everything it signs from now on."""
        sign = key.sign

        def recording_sign(claims: dict[str, Any]) -> str:
            token = sign(claims)
            with self.lock:
                self.values.add(token)
            return token

        setattr(key, "sign", recording_sign)  # an instance-level test spy

    def snapshot(self) -> set[str]:
        with self.lock:
            return set(self.values)


@dataclass
class DevEnv:
    base: Path
    socket_path: Path
    workload: WorkloadAPIServer
    issuer: TokenIssuer
    alpha: ProtectedService
    beta: ProtectedService
    sink: ConnectionSink
    profiles: list[Path]
    agents: Path
    secrets: SecretRecorder

    def counts(self) -> dict[str, int]:
        """What every upstream has seen so far (compare before/after one run)."""
        return {
            "alpha": len(self.alpha.log.accepted) + len(self.alpha.log.refused),
            "beta": len(self.beta.log.accepted) + len(self.beta.log.refused),
            "sink": self.sink.connections,
            "issuer_requests": self.issuer.requests,
            "issuer_issued": self.issuer.issued,
        }

    def agent(self, name: str) -> str:
        return str(self.agents / name)


@contextlib.contextmanager
def dev_env() -> Iterator[DevEnv]:
    """Start the development servers once; yield them with profiles and agent scripts."""
    base = Path(tempfile.mkdtemp(prefix="openshell-e2e-"))
    base.chmod(0o755)
    socket_dir = base / "spire"
    socket_dir.mkdir(mode=0o755)
    socket_path = socket_dir / "agent.sock"
    secrets = SecretRecorder()
    started: list[Any] = []
    try:
        workload = WorkloadAPIServer(str(socket_path), spiffe_id=SPIFFE_ID)
        secrets.record(workload.key)
        workload.start()
        started.append(workload)
        issuer = TokenIssuer(jwks_url=workload.jwks_url, expected_svid_audience="pending",
                             trust_domain=workload.trust_domain)
        secrets.record(issuer.key)
        issuer.start()
        started.append(issuer)
        issuer.expected_svid_audience = issuer.base_url
        alpha = ProtectedService("alpha", issuer.jwks_url, host="127.0.0.2").start()
        beta = ProtectedService("beta", issuer.jwks_url, host="127.0.0.3").start()
        started += [alpha, beta]
        sink = ConnectionSink()
        started.append(sink)

        grants = base / "grants.yaml"
        grants.write_text(GRANT_PROFILE.format(
            token_url=issuer.token_url, issuer_url=issuer.base_url,
            alpha_port=alpha.port, beta_port=beta.port))
        plain = base / "plain.yaml"
        plain.write_text(PLAIN_PROFILE.format(sink_port=sink.port))
        agents = base / "agents"
        agents.mkdir(mode=0o755)
        for src in AGENTS_SRC.iterdir():
            if src.is_file() and not src.name.startswith("."):
                shutil.copyfile(src, agents / src.name)
        for path in [grants, plain, *agents.iterdir()]:
            path.chmod(0o644)
        yield DevEnv(base, socket_path, workload, issuer, alpha, beta, sink,
                     [grants, plain], agents, secrets)
    finally:
        for server in reversed(started):
            with contextlib.suppress(Exception):  # best-effort teardown
                server.stop()
        shutil.rmtree(base, ignore_errors=True)


class AgentRun(subprocess.CompletedProcess[str]):
    """A finished ``supervisor run``: exit code, stdout, stderr and the audit log lines."""

    def __init__(self, proc: subprocess.CompletedProcess[str], audit_lines: list[str]) -> None:
        super().__init__(proc.args, proc.returncode, proc.stdout, proc.stderr)
        self.audit_lines = audit_lines

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_lines if line.strip()]

    def http_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("class_uid") == 4002]

    def report(self) -> Any:
        """The agent's result: the last line it printed, as JSON."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"agent printed nothing (exit {self.returncode}); stderr:\n{self.stderr}"
        return json.loads(lines[-1])

    def explain(self) -> str:
        return f"exit {self.returncode}\nstdout:\n{self.stdout[-2000:]}\nstderr:\n{self.stderr[-3000:]}"


def host_environment(**extra: str) -> dict[str, str]:
    """The supervisor's environment: ours, without proxy variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra)
    return env


def run_supervisor(
    env: DevEnv,
    argv: Sequence[str],
    *,
    timeout: float = 60,
    extra_args: Sequence[str] = (),
    check_secrets: bool = True,
    forbidden: Sequence[str] = (),
    prefix: Sequence[str] = (),
) -> AgentRun:
    """Run ``python -m supervisor run ... -- argv`` with a fresh audit log.

    ``prefix``: a command to run the supervisor under (e.g. ``unshare ... sh -c ...``).
    ``forbidden``: extra strings that must appear in neither the audit log nor stderr
    (e.g. a query-string marker). Every run is checked for leaked tokens and SVIDs.
    """
    audit = Path(tempfile.mkstemp(prefix="audit-", suffix=".jsonl", dir=env.base)[1])
    cmd = [*prefix, sys.executable, "-m", "supervisor", "run"]
    for profile in env.profiles:
        cmd += ["--profile", str(profile)]
    cmd += ["--spiffe-socket", f"unix://{env.socket_path}", "--audit-log", str(audit),
            *extra_args, "--", *argv]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False,
        # Set on purpose: the supervisor must keep it from the agent.
        env=host_environment(SPIFFE_ENDPOINT_SOCKET=f"unix://{env.socket_path}"),
    )
    try:
        lines = audit.read_text(encoding="utf-8").splitlines()
    finally:
        audit.unlink(missing_ok=True)
    run = AgentRun(proc, lines)
    if check_secrets:
        assert_no_secrets(run, env.secrets.snapshot(), forbidden)
    return run


def assert_no_secrets(run: AgentRun, secrets: set[str], forbidden: Sequence[str] = ()) -> None:
    """No token, SVID or ``forbidden`` string in the audit log or stderr; no token or SVID
    reaching the agent (stdout). Failure messages never quote the secret itself."""
    audit = "\n".join(run.audit_lines)
    logs = {"audit log": audit, "supervisor stderr": run.stderr}
    for where, text in logs.items():
        assert "eyJ" not in text, f"a JWT-looking value (eyJ...) is in the {where}"
        assert "Bearer " not in text, f"a bearer credential is in the {where}"
        for i, marker in enumerate(forbidden):
            assert marker not in text, f"forbidden marker #{i} is in the {where}"
    leaked = [where for where, text in {**logs, "agent output": run.stdout}.items()
              if any(secret in text for secret in secrets)]
    assert not leaked, f"an issued access token or JWT-SVID leaked into: {', '.join(leaked)}"
    for n, line in enumerate(run.audit_lines, 1):
        if line.strip():
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            assert isinstance(event, dict), f"audit line {n} is not one JSON object"


def agent_file(env: DevEnv, name: str, content: str) -> Path:
    """A file the agent (uid 65534) can read: in the session's 0755 directory, mode 0644."""
    fd, raw = tempfile.mkstemp(prefix=f"{name}-", dir=env.base)
    os.close(fd)
    path = Path(raw)
    path.write_text(content, encoding="utf-8")
    path.chmod(0o644)
    return path


def raw_request_spec(env: DevEnv, requests: dict[str, bytes]) -> Path:
    """Requests for agents/raw_requests.py (latin-1 text keeps every byte as it is)."""
    return agent_file(env, "raw-requests.json",
                      json.dumps({k: v.decode("latin-1") for k, v in requests.items()}))


def parse_curl_output(stdout: str) -> list[dict[str, Any]]:
    """agents/curl_agent.sh output -> the result shape of the other agents."""
    results: list[dict[str, Any]] = []
    for chunk in stdout.split("--- e2e-response\n")[1:]:
        head, _, body = chunk.replace("\r\n", "\n").partition("\n\n")
        lines = head.split("\n")
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body.strip()[:200]
        results.append({"status": int(lines[0].split()[1]), "body": parsed,
                        "proxy_error": headers.get(PROXY_ERROR_HEADER)})
    return results
