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
    tunnel_port: int = 0  # HTTPS, needs a bearer token; declared `tls: skip`: CONNECT tunnels
    bulk_dir: Path | None = None  # served under /bulk/ by every server (sendfile)


def nginx_config(prefix: Path, up: Upstream, pki: BenchPKI) -> str:
    """One worker (2 cores are shared with the load generator and the proxy under test);
    enough connections for the idle keep-alive leg (1,000 through the proxy)."""
    server = """
    server {{
        listen {addr};
        {tls}
        location / {{
            {check}
            return 200 "{body}";
        }}
        {bulk}
    }}"""
    # Bound servers answer 401 without a bearer token, so a proxy that fails to inject
    # shows up as errors (an invalid result), not as a fast benchmark.
    check = 'if ($http_authorization !~ "^Bearer [A-Za-z0-9._~+/-]+=*$") { return 401; }'
    tls = (
        f"ssl_certificate {pki.server_cert}; ssl_certificate_key {pki.server_key}; "
        "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:bench:1m;"
    )
    body = BODY.replace("\n", "\\n")

    def bulk(guard: str) -> str:
        return "" if up.bulk_dir is None else f"location /bulk/ {{ {guard} alias {up.bulk_dir}/; }}"

    listen = [
        (f"{LOOPBACK}:{up.bound_port}", "", check),
        (f"{LOOPBACK}:{up.plain_port}", "", ""),
        (f"{LOOPBACK}:{up.tls_port} ssl", tls, check),
    ]
    if up.tunnel_port:
        listen.append((f"{LOOPBACK}:{up.tunnel_port} ssl", tls, check))
    servers = "".join(
        server.format(addr=addr, tls=t, check=c, body=body, bulk=bulk(c)) for addr, t, c in listen
    )
    return f"""
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
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
    bulk_dir = work / "bulk"
    bulk_dir.mkdir(exist_ok=True)
    up = Upstream(free_port(), free_port(), free_port(), free_port(), bulk_dir)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, up, pki))
    # -e: nginx >= 1.19.5 opens this instead of the compiled-in /var/log path at start.
    argv = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    ports = (up.bound_port, up.plain_port, up.tls_port, up.tunnel_port)
    return Service("nginx", argv, log_dir, ports=ports), up
