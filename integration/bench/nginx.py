"""nginx on loopback as the upstream: its own prefix and config, no system service."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from integration.bench.certs import BenchPKI
from integration.bench.procs import LOOPBACK, Service, free_port

BODY = "hello from the bench upstream\n"


@dataclass(frozen=True)
class Upstream:
    bound_port: int  # HTTP, needs a bearer token; our profile binds a credential here
    plain_port: int  # HTTP, open; declared without credentials ("no binding")
    tls_port: int  # HTTPS (bench CA), needs a bearer token; bound, intercepted by our proxy


def nginx_config(prefix: Path, up: Upstream, pki: BenchPKI) -> str:
    """One worker (2 cores are shared with the load generator and the proxy under test)."""
    server = """
    server {{
        listen {addr};
        {tls}
        location / {{
            {check}
            return 200 "{body}";
        }}
    }}"""
    # Bound servers answer 401 without a bearer token, so a proxy that fails to inject
    # shows up as errors (an invalid result), not as a fast benchmark.
    check = 'if ($http_authorization !~ "^Bearer [A-Za-z0-9._~+/-]+=*$") { return 401; }'
    tls = (
        f"ssl_certificate {pki.server_cert}; ssl_certificate_key {pki.server_key}; "
        "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:bench:1m;"
    )
    body = BODY.replace("\n", "\\n")
    servers = "".join(
        [
            server.format(addr=f"{LOOPBACK}:{up.bound_port}", tls="", check=check, body=body),
            server.format(addr=f"{LOOPBACK}:{up.plain_port}", tls="", check="", body=body),
            server.format(addr=f"{LOOPBACK}:{up.tls_port} ssl", tls=tls, check=check, body=body),
        ]
    )
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    {servers}
}}
"""


def nginx_service(work: Path, log_dir: Path, pki: BenchPKI) -> tuple[Service, Upstream]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = work / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    up = Upstream(free_port(), free_port(), free_port())
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, up, pki))
    # -e: nginx >= 1.19.5 opens this instead of the compiled-in /var/log path at start.
    argv = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    ports = (up.bound_port, up.plain_port, up.tls_port)
    return Service("nginx", argv, log_dir, ports=ports), up
