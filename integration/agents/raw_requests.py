"""Agent: a hostile client speaking raw bytes to the proxy named in HTTP_PROXY.

argv: a JSON file {name: request text (latin-1)}. Each request goes on a fresh connection;
the answer is read until the proxy closes or 5 s pass. Prints one JSON object
{name: {"status", "proxy_error", "error", "body", "text", "closed"}} ("text": a body
that is not JSON, verbatim)."""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.parse
from typing import Any


def exchange(host: str, port: int, data: bytes) -> dict[str, Any]:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        buf, closed = b"", False
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                buf += chunk
                head, sep, body = buf.partition(b"\r\n\r\n")
                if sep and b"content-length:" in head.lower():
                    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    if len(body) >= length:
                        break
        except TimeoutError:
            pass
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return {
        "status": int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None,
        "proxy_error": headers.get("x-openshell-proxy-error"),
        "error": error,
        "body": parsed,
        # Whatever else came back, as text: a test's secret check sees every byte of it.
        "text": None if parsed is not None else body.decode("latin-1"),
        "closed": closed or headers.get("connection", "").lower() == "close",
    }


def main() -> int:
    proxy = urllib.parse.urlsplit(os.environ["HTTP_PROXY"])
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    out = {name: exchange(proxy.hostname or "127.0.0.1", proxy.port or 3128,
                          text.encode("latin-1"))
           for name, text in spec.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
