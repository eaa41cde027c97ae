"""The reference proxies: tinyproxy (C, Debian) and mitmproxy (Python, its own venv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from integration.bench.procs import LOOPBACK, Service, free_port

# The bench tools venv lives beside the product venv and never touches it.
BENCH_VENV_REQUIREMENTS = ("mitmproxy>=10,<13", "matplotlib>=3.7")
BENCH_TOKEN = "bench-static-token-0123456789"  # a fixed fake, not a secret

MITM_ADDON = f'''
"""Inject a fixed Authorization header: the reference for header injection in Python."""

from mitmproxy import http


def requestheaders(flow: http.HTTPFlow) -> None:
    # Streamed (large) bodies: the request hook runs after the body went upstream, too
    # late for a header; this one runs before anything is sent.
    flow.request.headers["Authorization"] = "Bearer {BENCH_TOKEN}"


def request(flow: http.HTTPFlow) -> None:
    flow.request.headers["Authorization"] = "Bearer {BENCH_TOKEN}"
'''


def tinyproxy_service(work: Path, log_dir: Path) -> Service:
    """tinyproxy 1.11 answers with ``Connection: close``: every request is a new connection."""
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    port = free_port()
    conf = work / "tinyproxy.conf"
    conf.write_text(
        "\n".join(
            [
                "User nobody",
                "Group nogroup",
                f"Port {port}",
                f"Listen {LOOPBACK}",
                "Timeout 60",
                "MaxClients 256",
                "LogLevel Error",
                "Allow 127.0.0.1",
                "DisableViaHeader Yes",
                "",
            ]
        )
    )
    return Service("tinyproxy", [binary, "-d", "-c", str(conf)], log_dir, ports=[port])


def ensure_bench_venv(root: Path, log_dir: Path) -> Path:
    """Create ``root/.venv-bench`` with mitmproxy and matplotlib once; return its python."""
    venv = root / ".venv-bench"
    python = venv / "bin" / "python"
    stamp = venv / ".stamp-bench"
    wanted = "\n".join(BENCH_VENV_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted and python.exists():
        return python
    log = log_dir / "bench-venv.log"
    print(f"bench: installing {', '.join(BENCH_VENV_REQUIREMENTS)} into {venv} (once)")
    with log.open("ab") as out:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, stdout=out)
            # Python < 3.13 does not write this itself; keeps the venv out of git status.
            (venv / ".gitignore").write_text("*\n")
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *BENCH_VENV_REQUIREMENTS],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    stamp.write_text(wanted)
    return python


def mitmdump_service(bench_python: Path, work: Path, log_dir: Path, upstream_ca: Path) -> Service:
    """mitmdump with the injecting addon; its CA lives in its own confdir under ``work``."""
    mitmdump = bench_python.parent / "mitmdump"
    confdir = work / "mitmproxy"
    confdir.mkdir(exist_ok=True)
    addon = work / "mitm_inject.py"
    addon.write_text(MITM_ADDON)
    port = free_port()
    argv = [
        str(mitmdump), "--quiet",
        "--listen-host", LOOPBACK, "--listen-port", str(port),
        "--set", f"confdir={confdir}",
        "--set", f"ssl_verify_upstream_trusted_ca={upstream_ca}",
        "--set", "flow_detail=0",
        # Stream bodies over 1 MiB instead of buffering them (the addon only sets a
        # header): without it a 1 GiB transfer sits in mitmproxy's memory first.
        "--set", "stream_large_bodies=1m",
        "-s", str(addon),
    ]  # fmt: skip
    return Service("mitmproxy", argv, log_dir, ports=[port], ready_timeout=60.0)


def mitm_ca(work: Path) -> Path:
    """The CA mitmproxy generated at first start (clients trust it for interception)."""
    return work / "mitmproxy" / "mitmproxy-ca-cert.pem"
