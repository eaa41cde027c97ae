"""The demo's agent: runs INSIDE the sandbox as the unprivileged agent user.

It behaves like a hostile but curious agent: it calls the two protected services through
the proxy (sending a forged ``Authorization`` header of its own, which must never reach
them), looks for the Workload API socket and the SPIFFE variables, and runs
``check-isolation``. It prints one JSON object on stdout. Standard library only.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

FORGED = "Bearer forged-by-the-agent"


def call(url: str) -> dict[str, Any]:
    """GET ``url`` through the proxy named in HTTP_PROXY (urllib reads it from the env)."""
    request = urllib.request.Request(url, headers={"Authorization": FORGED})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:  # noqa: S310
            return {"status": resp.status, "body": json.loads(resp.read())}
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            parsed: Any = json.loads(body)
        except ValueError:
            parsed = body.decode("utf-8", "replace")[:200]
        return {"status": err.code, "body": parsed}
    except OSError as err:
        return {"status": None, "error": str(err)}


def probe_socket(path: str) -> dict[str, Any]:
    result: dict[str, Any] = {"path": path}
    try:
        os.stat(path)
        result["stat"] = "visible"
    except OSError as err:
        result["stat"] = err.strerror or str(err)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2)
        sock.connect(path)
        result["connect"] = "connected"
    except OSError as err:
        result["connect"] = err.strerror or str(err)
    finally:
        sock.close()
    return result


def main() -> int:
    alpha_url, beta_url, socket_path = sys.argv[1:4]
    report: dict[str, Any] = {
        "uid": os.getuid(),
        "alpha": call(alpha_url),
        "beta": call(beta_url),
        "socket": probe_socket(socket_path),
        "spiffe_env": sorted(
            k
            for k in os.environ
            if k.startswith(("SPIFFE", "OPENSHELL")) and k != "OPENSHELL_SANDBOX"
        ),
    }
    check = subprocess.run(
        [sys.executable, "-m", "supervisor", "check-isolation", "--json",
         "--spiffe-socket", socket_path],
        capture_output=True, text=True, timeout=60, check=False,
    )
    try:
        report["isolation"] = json.loads(check.stdout)
    except ValueError:
        report["isolation"] = {"ok": False, "checks": [], "error": check.stderr[-500:]}
    report["isolation_exit"] = check.returncode
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
