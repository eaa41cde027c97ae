"""Agent: Python urllib (reads HTTP_PROXY from the environment). Sends a stolen bearer token
of its own with every request; prints one JSON list of results. Standard library only.

``--parallel URL...``: all requests at once, one thread each (same result order)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")[:200]


def call(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Authorization": "Bearer stolen"})
    try:
        with urllib.request.urlopen(request, timeout=20) as resp:
            return {"status": resp.status, "body": decode(resp.read()),
                    "proxy_error": resp.headers.get("X-OpenShell-Proxy-Error")}
    except urllib.error.HTTPError as err:
        return {"status": err.code, "body": decode(err.read()),
                "proxy_error": err.headers.get("X-OpenShell-Proxy-Error")}
    except OSError as err:
        return {"status": None, "error": type(err).__name__}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--parallel"]:
        with ThreadPoolExecutor(max_workers=max(1, len(argv) - 1)) as pool:
            results = list(pool.map(call, argv[1:]))
    else:
        results = [call(url) for url in argv]
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
