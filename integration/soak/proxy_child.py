"""The proxy under test in its own process, wired as ``run`` wires it (start_services).

``python -m integration.soak.proxy_child --profile P --spiffe-socket S --audit-log F``
binds 127.0.0.1:0, starts the services, prints one line ``READY <port>`` and serves until
its stdin closes. Its own process, so its RSS and open fds are the proxy's alone.
"""

from __future__ import annotations

import argparse
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integration.soak.proxy_child")
    p.add_argument("--profile", required=True)
    p.add_argument("--spiffe-socket", required=True)
    p.add_argument("--audit-log", required=True)
    p.add_argument("--grant-timeout", type=float, default=3.0)
    args = p.parse_args(argv)

    from supervisor.profiles.loader import load_profiles
    from supervisor.services import start_services
    from supervisor.settings import RunSettings

    profiles = load_profiles([args.profile])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.setblocking(False)
    settings = RunSettings(
        profiles=(args.profile,),
        command=("true",),
        spiffe_socket=args.spiffe_socket,
        network="host",
        proxy_port=sock.getsockname()[1],
        audit_log=args.audit_log,
        grant_timeout=args.grant_timeout,
    )
    services = start_services(settings, profiles, sock)
    try:
        print(f"READY {sock.getsockname()[1]}", flush=True)
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        services.stop()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
