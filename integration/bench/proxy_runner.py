"""Runner process: our proxy alone, wired exactly as `run` wires it (start_services).

Binds 127.0.0.1:PORT, starts the services on their event-loop thread, prints READY with the
sandbox CA bundle path, serves until stdin closes. Its VmRSS is the proxy's.
Usage: python -m integration.bench.proxy_runner --profile P --port N --spiffe-socket S
       [--ca-bundle PEM] [--audit-log FILE]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from integration.bench.runner_io import announce, serve_commands


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integration.bench.proxy_runner")
    p.add_argument("--profile", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--spiffe-socket", required=True)
    p.add_argument("--ca-bundle")
    p.add_argument("--audit-log", help="write the OCSF audit log here (off by default, as in run)")
    args = p.parse_args(argv)

    from supervisor.profiles.loader import load_profiles
    from supervisor.services import start_services
    from supervisor.settings import RunSettings

    profiles = load_profiles([args.profile])
    settings = RunSettings(
        profiles=(args.profile,), command=("bench",), spiffe_socket=args.spiffe_socket,
        network="host", proxy_port=args.port, ca_bundle=args.ca_bundle, audit_log=args.audit_log,
    )  # fmt: skip
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.setblocking(False)
    services = start_services(settings, profiles, sock)
    try:

        def stats() -> dict[str, Any]:
            return {"pid": os.getpid()}

        # NODE_EXTRA_CA_CERTS names the sandbox CA alone (ARCHITECTURE.md 2).
        ca = services.extra_env.get("NODE_EXTRA_CA_CERTS")
        announce("READY", {"pid": os.getpid(), "port": args.port, "sandbox_ca": ca})
        serve_commands(stats)
    finally:
        services.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
