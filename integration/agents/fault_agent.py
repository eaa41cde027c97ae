"""Agent for the fault-injection scenarios: follows a plan, step by step, through the proxy.

argv: PLAN.json MARKER_DIR. The plan is a JSON list of steps:
  {"get": URL}         one GET via the proxy in HTTP_PROXY, on a fresh connection
  {"mark": NAME}       create MARKER_DIR/NAME (tells the test "I got here")
  {"wait": NAME}       wait until MARKER_DIR/NAME exists (the test did its part);
                       MARKER_DIR/abort makes every wait give up at once
  {"sleep": SECONDS}   pause (e.g. to let the proxy's failure backoff run out)
Prints one JSON list: a result per "get" with status, proxy_error, error (the JSON body's
"error"), declared/received body length, the first bytes received, the exception class
name when the exchange broke, and the elapsed seconds. Standard library only.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import time
import urllib.parse
from typing import Any

WAIT_LIMIT = 30.0
SOCKET_TIMEOUT = 30.0


def get(proxy: tuple[str, int], url: str) -> dict[str, Any]:
    started = time.monotonic()
    result: dict[str, Any] = {"url": url, "status": None, "proxy_error": None, "error": None,
                              "declared": None, "received": 0, "prefix": "", "exc": None}
    conn = http.client.HTTPConnection(*proxy, timeout=SOCKET_TIMEOUT)
    body = b""
    try:
        conn.request("GET", url, headers={"Authorization": "Bearer stolen"})
        resp = conn.getresponse()
        result["status"] = resp.status
        result["proxy_error"] = resp.getheader("X-OpenShell-Proxy-Error")
        declared = resp.getheader("Content-Length")
        result["declared"] = int(declared) if declared and declared.isdigit() else None
        try:
            body = resp.read()
        except http.client.IncompleteRead as err:
            body = err.partial
            result["exc"] = type(err).__name__
    except (http.client.HTTPException, OSError) as err:
        result["exc"] = type(err).__name__
    finally:
        conn.close()
    result["received"] = len(body)
    result["prefix"] = body[:64].decode("latin-1")
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        result["error"] = parsed["error"]
    result["elapsed"] = round(time.monotonic() - started, 3)
    return result


def wait_for(markers: str, name: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not os.path.exists(os.path.join(markers, name)):
        if os.path.exists(os.path.join(markers, "abort")) or time.monotonic() > deadline:
            raise SystemExit(f"fault agent: gave up waiting for {name}")
        time.sleep(0.02)


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as f:
        plan = json.load(f)
    markers = argv[1]
    parts = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
    proxy = (parts.hostname or "127.0.0.1", parts.port or 3128)
    results: list[dict[str, Any]] = []
    for step in plan:
        if "get" in step:
            results.append(get(proxy, step["get"]))
        elif "mark" in step:
            with open(os.path.join(markers, step["mark"]), "w", encoding="utf-8"):
                pass
        elif "wait" in step:
            wait_for(markers, step["wait"])
        elif "sleep" in step:
            time.sleep(float(step["sleep"]))
        else:
            raise SystemExit(f"fault agent: unknown step {sorted(step)}")
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
