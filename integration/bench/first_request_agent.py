"""Agent of the first-request leg: runs inside `openshell-supervisor run` and times, through
the sandbox's proxy ($HTTP_PROXY), a request on a fresh connection against one on a warm
connection (integration.bench.conns.first_request). Prints one JSON line.

Usage (as the agent): python first_request_agent.py TARGET_PORT N
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

# The agent starts this file by path: make the repository importable (stdlib only besides).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from integration.bench.conns import first_request


def main() -> int:
    target_port, n = int(sys.argv[1]), int(sys.argv[2])
    proxy = urlsplit(os.environ["HTTP_PROXY"])
    result = first_request(proxy.port or 3128, target_port, True, n)
    print(json.dumps({"cold_ms": result.cold_ms, "warm_ms": result.warm_ms}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
