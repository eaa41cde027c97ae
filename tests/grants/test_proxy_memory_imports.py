"""What the proxy process has loaded after serving a request that needed a grant.

The JWT-only py-spiffe loader (spiffe_jwt) and httpx without its CLI (httpx_import) only
save memory if nothing imports py-spiffe's package or httpx before them: any module that
does turns both into no-ops silently. This runs the proxy as `run` wires it
(start_services) in a fresh interpreter, lets it fetch a token for one request, and lists
its modules. The dev Workload API and issuer live in this test process (which imports
py-spiffe whole); the upstream answers 200 only with the injected bearer token.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from supervisor.devenv.token_issuer import TokenIssuer
from supervisor.devenv.workload_api import WorkloadAPIServer

from .conftest import SVID_AUDIENCE

# Modules the grant path must not bring into the proxy (see the modules named above).
FORBIDDEN = ("click", "rich", "pygments", "httpx._main", "pyasn1", "pyasn1_modules", "pem",
             "spiffe.workloadapi.x509_source", "spiffe.workloadapi.jwt_source",
             "spiffe.workloadapi.workload_api_client", "spiffe.bundle.x509_bundle",
             "spiffe.svid.x509_svid")

PROFILE = """\
- id: memory-imports
  display_name: One bound upstream
  description: loopback upstream with a token grant
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
      port: {port}
      protocol: rest
      tls: none
      access: read-only
      enforcement: enforce
      allowed_ips: [127.0.0.0/8]
"""

PROXY = """
import json, socket, sys
from supervisor.profiles.loader import load_profiles
from supervisor.services import start_services
from supervisor.settings import RunSettings
profile, spiffe = sys.argv[1], sys.argv[2]
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(16)
sock.setblocking(False)
settings = RunSettings(profiles=(profile,), command=("test",), spiffe_socket=spiffe,
                       network="host", proxy_port=sock.getsockname()[1])
services = start_services(settings, load_profiles([profile]), sock)
services.wait_ready()
print(sock.getsockname()[1], flush=True)
sys.stdin.readline()  # the test made its request
print(json.dumps(sorted(sys.modules)), flush=True)
services.stop()
"""


class _Bound(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = (self.headers.get("Authorization") or "").startswith("Bearer ")
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def upstream() -> Iterator[int]:
    srv = HTTPServer(("127.0.0.1", 0), _Bound)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_port
    srv.shutdown()
    srv.server_close()


def test_a_granted_request_leaves_the_unused_halves_out(
    workload: WorkloadAPIServer, issuer: TokenIssuer, upstream: int, tmp_path: Path
) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE.format(token_url=issuer.token_url, svid_audience=SVID_AUDIENCE,
                                      port=upstream))
    proc = subprocess.Popen([sys.executable, "-c", PROXY, str(profile), workload.address],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            conn.sendall(f"GET http://127.0.0.1:{upstream}/ HTTP/1.1\r\n"
                         f"Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n".encode())
            status_line = conn.makefile("rb").readline()
        assert status_line.split()[1] == b"200"  # a token was fetched and injected
        proc.stdin.write("done\n")
        proc.stdin.flush()
        modules = json.loads(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(10)
    assert len(issuer.submissions) == 1
    assert "spiffe._proto.workload_pb2_grpc" in modules and "httpx" in modules  # the grant ran
    assert [m for m in modules if m.startswith(FORBIDDEN)] == []
