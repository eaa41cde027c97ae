"""httpx imported without its command-line client (click, rich, pygments), in fresh
interpreters: this test process may have imported httpx already."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CLI = ("click", "rich", "pygments", "httpx._main")

CLIENT = """
import asyncio, json, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
meta_path = list(sys.meta_path)
import supervisor.grants.http_client
import httpx

class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

srv = HTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()

async def post():
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(f"http://127.0.0.1:{srv.server_port}/", data={"a": "b"})
        return r.status_code, r.text

status, text = asyncio.run(post())
srv.shutdown()
print(json.dumps({"status": status, "text": text, "modules": sorted(sys.modules),
                  "meta_path_same": sys.meta_path == meta_path,
                  "fallback_main": httpx.main.__module__}))
"""


def _run(code: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def _cli(modules: object) -> list[str]:
    assert isinstance(modules, list)
    return [m for m in modules if m.split(".")[0] in CLI or m == "httpx._main"]


def test_token_client_module_leaves_the_cli_out_and_httpx_works() -> None:
    out = _run(CLIENT)
    assert out["status"] == 200 and out["text"] == "a=b"
    assert _cli(out["modules"]) == []
    assert out["meta_path_same"] is True  # the refusal lasted only for the import
    assert out["fallback_main"] == "httpx"  # httpx's own fallback for no [cli] extra


def test_plain_import_loads_the_cli_control() -> None:
    # Control: httpx's own import does load them here (else the test above proves nothing).
    out = _run("import json, sys, httpx\nprint(json.dumps({'modules': sorted(sys.modules)}))")
    assert {"click", "rich", "httpx._main"} <= set(_cli(out["modules"]))


def test_only_the_cli_module_is_refused() -> None:
    from supervisor.grants.httpx_import import CLI_MODULE, _NoCli

    finder = _NoCli()
    with pytest.raises(ModuleNotFoundError) as info:
        finder.find_spec(CLI_MODULE, None)
    assert info.value.name == CLI_MODULE
    for other in ("httpx", "httpx._client", "click", "httpx._main_x", "rich"):
        assert finder.find_spec(other, None) is None
