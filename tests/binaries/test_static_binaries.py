"""A static credential serves its profile's binaries only (root): with another profile
opening the same endpoint to every process, curl's placeholder is replaced by the value
and python3's is refused, nothing forwarded."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..sandbox.conftest import PY, REPO, clean_env

pytestmark = pytest.mark.privileged

ECHO = Path(__file__).with_name("echo_auth.py")
SECRET = "s3cr3t-value-for-the-test"


class _Echo(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        _Echo.seen.append(auth)
        body = auth.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[int]:
    _Echo.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_static_placeholder_replaced_for_the_listed_binary_only(tmp_path: Path, echo: int) -> None:
    endpoint = (f"{{host: 127.0.0.1, port: {echo}, allowed_ips: [127.0.0.0/8], protocol: rest, "
                "access: read-only}")
    secret = tmp_path / "static.yaml"
    secret.write_text("id: static\ncredentials:\n  - name: token\n    env_vars: [MY_TOKEN]\n"
                      f"endpoints: [{endpoint}]\nbinaries: [/usr/bin/curl]\n")
    open_to_all = tmp_path / "open.yaml"
    open_to_all.write_text(f"id: open\ncredentials: []\nendpoints: [{endpoint}]\n")
    url = f"http://127.0.0.1:{echo}/x"
    script = (
        "export NO_PROXY= no_proxy=; "
        "curl -s -w ' %{http_code}\\n' -H 'Authorization: Bearer openshell:resolve:env:MY_TOKEN' "
        f"{url}; /usr/bin/python3 {ECHO} {url}"
    )
    done = subprocess.run(
        [PY, "-m", "supervisor", "run", "--profile", str(secret), "--profile", str(open_to_all),
         "--", "/bin/sh", "-c", script],
        capture_output=True, text=True, timeout=90, env=clean_env(MY_TOKEN=SECRET), cwd=str(REPO),
    )
    assert done.returncode == 0, done.stderr
    curl_line, python_line = done.stdout.strip().splitlines()
    assert curl_line == f"Bearer {SECRET} 200"
    status, body = python_line.split(" ", 1)
    assert status in ("403", "500") and json.loads(body)["error"].startswith("credential_")
    assert _Echo.seen == [f"Bearer {SECRET}"]  # python's request never reached the upstream
    assert SECRET not in done.stderr
