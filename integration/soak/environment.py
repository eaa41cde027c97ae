"""The development servers the soak drives through the proxy, on loopback only.

Workload API (unix socket), token issuer, protected services alpha (127.0.0.2) and beta
(127.0.0.3), and a canary listener on 127.0.0.4 that no profile declares: any connection it
receives was forwarded by the proxy although it must not have been.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

from integration.e2e import ConnectionSink
from supervisor.devenv.services import ProtectedService
from supervisor.devenv.token_issuer import TokenIssuer
from supervisor.devenv.workload_api import WorkloadAPIServer

SPIFFE_ID = "spiffe://soak.openshell.test/ns/default/sa/agent"
SERVICE_HOSTS = {"alpha": "127.0.0.2", "beta": "127.0.0.3"}
CANARY_HOST = "127.0.0.4"

# cache_ttl_seconds 33 → a 3 s token lifetime after the 30 s skew: grants keep happening, so
# issuer and Workload API faults actually bite during the run.
PROFILE = """\
id: soak
display_name: soak
description: soak test bindings
category: other
credentials:
  - name: access_token
    description: SPIFFE token grant
    required: false
    auth_style: bearer
    token_grant:
      token_endpoint: {token_url}
      audience: soak-default
      jwt_svid_audience: {issuer_url}
      client_assertion_type: urn:ietf:params:oauth:client-assertion-type:jwt-spiffe
      scopes: [soak]
      cache_ttl_seconds: 33
      audience_overrides:
        - {{host: 127.0.0.2, port: {alpha_port}, audience: alpha, scopes: [alpha]}}
        - {{host: 127.0.0.3, port: {beta_port}, audience: beta, scopes: [beta]}}
endpoints:
  - {{host: 127.0.0.2, port: {alpha_port}, protocol: rest, access: read-write,
     enforcement: enforce, allowed_ips: [127.0.0.0/8]}}
  - {{host: 127.0.0.3, port: {beta_port}, protocol: rest, access: read-write,
     enforcement: enforce, allowed_ips: [127.0.0.0/8]}}
"""


class Canary(ConnectionSink):
    """Counts connections on an undeclared loopback address (each one is a violation)."""

    def __init__(self, host: str = CANARY_HOST) -> None:
        super().__init__(host)


def _track_connections(service: ProtectedService) -> weakref.WeakSet[socket.socket]:
    """The service's open client sockets, so a restart can cut them like a real one would
    (its handler threads are daemons that otherwise keep serving keep-alive connections)."""
    conns: weakref.WeakSet[socket.socket] = weakref.WeakSet()
    server = service._server  # test tooling reaching into the dev service on purpose
    base: Any = server.RequestHandlerClass

    class Tracked(base):  # type: ignore[misc]
        def setup(self) -> None:
            super().setup()
            conns.add(self.connection)

    server.RequestHandlerClass = Tracked
    return conns


class SoakEnvironment:
    """Starts and stops the servers; keeps what the services accepted and refused across
    restarts (a restart replaces the ProtectedService object)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="openshell-soak-"))
        (self.base / "spire").mkdir(mode=0o755)
        self.socket_path = self.base / "spire" / "agent.sock"
        self.audit_log = self.base / "audit.jsonl"
        self.profile = self.base / "profile.yaml"
        self.workload: WorkloadAPIServer | None = None
        self.issuer: TokenIssuer | None = None
        self.services: dict[str, ProtectedService] = {}
        self._conns: dict[str, weakref.WeakSet[socket.socket]] = {}
        # Stopped instances keep serving their open keep-alive connections (daemon threads),
        # so what they record is still collected.
        self.retired: list[ProtectedService] = []
        self.ports: dict[str, int] = {}
        self.canary: Canary | None = None
        self.accepted: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()  # reason → count, over all services
        self.duplicate_credentials = 0  # accepted with more than one Authorization header
        self._lock = threading.Lock()

    def start(self) -> SoakEnvironment:
        self.workload = WorkloadAPIServer(str(self.socket_path), spiffe_id=SPIFFE_ID).start()
        self.issuer = TokenIssuer(
            jwks_url=self.workload.jwks_url,
            expected_svid_audience="pending",
            trust_domain=self.workload.trust_domain,
        ).start()
        self.issuer.expected_svid_audience = self.issuer.base_url
        for name, host in SERVICE_HOSTS.items():
            service = ProtectedService(name, self.issuer.jwks_url, host=host)
            self._conns[name] = _track_connections(service)
            self.services[name] = service.start()
            self.ports[name] = service.port
        self.canary = Canary()
        self.profile.write_text(
            PROFILE.format(
                token_url=self.issuer.token_url,
                issuer_url=self.issuer.base_url,
                alpha_port=self.ports["alpha"],
                beta_port=self.ports["beta"],
            )
        )
        return self

    @property
    def spiffe_address(self) -> str:
        return f"unix://{self.socket_path}"

    def collect(self) -> None:
        """Move what the services recorded into the running totals (bounded memory)."""
        with self._lock:
            for service in [*self.services.values(), *self.retired]:
                self._drain(service)

    def _drain(self, service: ProtectedService) -> None:
        log = service.log
        with log.lock:
            accepted, refused = list(log.accepted), list(log.refused)
            log.accepted.clear()
            log.refused.clear()
        self.accepted[service.name] += len(accepted)
        self.duplicate_credentials += sum(1 for a in accepted if a["authorization_headers"] != 1)
        self.refused.update(refused)

    def restart_service(self, name: str, down_seconds: float, stop: threading.Event) -> None:
        """Stop a service, keep it down, start a fresh one on the same address."""
        assert self.issuer is not None
        with self._lock:
            old = self.services[name]
            old.stop()
            for conn in list(self._conns[name]):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.retired.append(old)
        stop.wait(down_seconds)
        new = ProtectedService(
            name, self.issuer.jwks_url, host=SERVICE_HOSTS[name], port=self.ports[name]
        )
        conns = _track_connections(new)
        new.start()
        with self._lock:
            self.services[name] = new
            self._conns[name] = conns

    def stop(self) -> None:
        self.collect()
        servers: list[Any] = [*self.services.values(), self.issuer, self.workload, self.canary]
        for server in servers:
            if server is not None:
                with contextlib.suppress(Exception):  # best-effort teardown
                    server.stop()
