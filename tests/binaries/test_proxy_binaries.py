"""Binaries enforced by the running proxy (root): ``run`` with a profile and a policy entry
restricted to curl; curl gets through, python3 gets 403 binary_denied and an OCSF denial
naming its executable."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..sandbox.conftest import PY, REPO, clean_env

pytestmark = pytest.mark.privileged

PYTHON = os.path.realpath("/usr/bin/python3")
FETCH = Path(__file__).with_name("fetch.py")


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run(tmp_path: Path, config: list[str], script: str) -> tuple[subprocess.CompletedProcess[str],
                                                                 list[dict[str, object]]]:
    audit = tmp_path / "audit.jsonl"
    done = subprocess.run(
        [PY, "-m", "supervisor", "run", *config, "--audit-log", str(audit), "--",
         "/bin/sh", "-c", script],
        capture_output=True, text=True, timeout=90, env=clean_env(), cwd=str(REPO),
    )
    events = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() \
        else []
    return done, events


def script(url: str, fetch: Path) -> str:
    # NO_PROXY names 127.0.0.1 for the agent's own loopback: here it must use the proxy.
    return (f"export NO_PROXY= no_proxy=; curl -s -o /dev/null -w 'curl %{{http_code}}\\n' {url}; "
            f"printf 'python3 '; /usr/bin/python3 {fetch} {url}")


@pytest.mark.parametrize("source", ["profile", "policy"])
def test_curl_allowed_python_denied(tmp_path: Path, upstream: int, source: str) -> None:
    endpoint = f"{{host: 127.0.0.1, port: {upstream}, allowed_ips: [127.0.0.0/8]}}"
    if source == "profile":
        path = tmp_path / "profile.yaml"
        path.write_text(f"id: local\ncredentials: []\nendpoints: [{endpoint}]\n"
                        "binaries: [/usr/bin/curl]\n")
        config = ["--profile", str(path)]
    else:
        path = tmp_path / "policy.yaml"
        path.write_text(f"version: 1\nnetwork_policies:\n  local:\n    endpoints: [{endpoint}]\n"
                        "    binaries: [{path: /usr/bin/curl}]\n")
        config = ["--policy", str(path)]
    done, events = run(tmp_path, config, script(f"http://127.0.0.1:{upstream}/x", FETCH))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "curl 200"
    code, body = lines[1].split(" ", 2)[1:]
    assert code == "403"
    error = json.loads(body)
    assert error["error"] == "binary_denied"
    assert PYTHON in error["detail"]
    denials = [e for e in events if e.get("status_id") == 2]
    assert denials, events
    binary_denials = [e for e in denials if e.get("message") == "binary_denied"]
    assert binary_denials, denials
    assert all(e["actor"]["process"]["file"]["path"] == PYTHON for e in binary_denials)
    assert all(PYTHON in e["status_detail"] for e in binary_denials)
