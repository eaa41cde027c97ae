"""Runner process: the development Workload API and token issuer (not the proxy).

Kept out of the proxy's process so the proxy's RSS and CPU are its own.
Usage: python -m integration.bench.devenv_runner --socket PATH --svid-audience AUD
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from integration.bench.runner_io import announce, serve_commands

ISSUER_EXPIRES_IN = 3600  # long enough that no refresh happens during the bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m integration.bench.devenv_runner")
    p.add_argument("--socket", required=True)
    p.add_argument("--svid-audience", required=True)
    args = p.parse_args(argv)

    from supervisor.devenv.token_issuer import TokenIssuer
    from supervisor.devenv.workload_api import WorkloadAPIServer

    with WorkloadAPIServer(args.socket) as wl:
        issuer = TokenIssuer(
            jwks_url=wl.jwks_url, expected_svid_audience=args.svid_audience,
            trust_domain=wl.trust_domain, expires_in=ISSUER_EXPIRES_IN,
        )  # fmt: skip
        with issuer:

            def stats() -> dict[str, Any]:
                with issuer.lock:
                    issued, requests = issuer.issued, issuer.requests
                with wl.lock:
                    svids = wl.counters.fetch_jwt_svid
                return {"issued": issued, "token_requests": requests, "svid_fetches": svids}

            announce("READY", {"socket": wl.address, "token_url": issuer.token_url})
            serve_commands(stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
