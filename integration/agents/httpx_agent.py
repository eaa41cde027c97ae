"""Agent: Python httpx with trust_env (honours HTTP_PROXY). Sends a stolen bearer token of
its own; prints one JSON list of results."""

from __future__ import annotations

import json
import sys
from typing import Any

import httpx


def call(client: httpx.Client, url: str) -> dict[str, Any]:
    try:
        resp = client.get(url, headers={"Authorization": "Bearer stolen"})
    except httpx.HTTPError as err:
        return {"status": None, "error": type(err).__name__}
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text[:200]
    return {"status": resp.status_code, "body": body,
            "proxy_error": resp.headers.get("X-OpenShell-Proxy-Error")}


if __name__ == "__main__":
    with httpx.Client(trust_env=True, timeout=20) as client:
        print(json.dumps([call(client, url) for url in sys.argv[1:]]))
