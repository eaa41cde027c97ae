"""A real git client through an intercepted endpoint with github.yaml-like rules, against
a real ``git http-backend`` over TLS on loopback: clone works (GET info/refs and POST
git-upload-pack are allowed), push is refused 403 by the proxy (POST git-receive-pack is
not) while the same push straight to the server succeeds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from supervisor.profiles.loader import load_profiles
from tests.proxy.harness import Env
from tests.proxy.tlscerts import make_pki

BACKEND = Path("/usr/lib/git-core/git-http-backend")
GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(
    GIT is None or not BACKEND.exists(), reason="git and git-http-backend are needed"
)

# github.yaml's git transport rules, beside pypi.yaml's L4 entry for the same host:port.
PROFILES = """\
- id: forge
  endpoints:
    - host: 127.0.0.1
      port: {port}
      protocol: rest
      enforcement: enforce
      allowed_ips: [127.0.0.0/8]
      rules:
        - allow: {{ method: GET, path: "**" }}
        - allow: {{ method: HEAD, path: "**" }}
        - allow: {{ method: OPTIONS, path: "**" }}
        - allow: {{ method: POST, path: "/**/git-upload-pack" }}
- id: packages
  endpoints:
    - host: 127.0.0.1
      port: {port}
      allowed_ips: [127.0.0.0/8]
"""


class _GitCgi(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = ""
    seen: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        self.seen.append(f"{self.command} {path}")
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "tester",  # receive-pack is enabled for authenticated users
            "REMOTE_ADDR": "127.0.0.1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        out = subprocess.run([str(BACKEND)], input=body, env=env, capture_output=True,
                             timeout=60, check=False).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        raw_head, _, payload = out.partition(sep)
        status, headers = 200, []
        for line in raw_head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _git(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    assert GIT is not None
    return subprocess.run([GIT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def forge(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from supervisor.proxy.interception import SandboxCA

    home = tmp_path / "home"
    home.mkdir()
    genv = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    for k in ("user.name", "user.email"):
        _git("config", "--global", k, "tester@example.test", cwd=home, env=genv)
    _git("config", "--global", "init.defaultBranch", "main", cwd=home, env=genv)
    # A bare repository with one commit, served by git http-backend over TLS.
    root = tmp_path / "srv"
    root.mkdir()
    assert _git("init", "--bare", "repo.git", cwd=root, env=genv).returncode == 0
    work = tmp_path / "seed"
    work.mkdir()
    _git("init", cwd=work, env=genv)
    (work / "README").write_text("hello through the proxy\n")
    _git("add", "README", cwd=work, env=genv)
    _git("commit", "-m", "seed", cwd=work, env=genv)
    assert _git("push", str(root / "repo.git"), "HEAD:main", cwd=work, env=genv).returncode == 0

    pki = make_pki(tmp_path)
    up_ca_path = pki.upstream_ca_path
    server_ctx = pki.upstream_server
    handler = type("Handler", (_GitCgi,), {"root": str(root), "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]

    ca = SandboxCA.generate(["127.0.0.1"])
    ca_file = tmp_path / "sandbox-ca.pem"
    ca_file.write_bytes(ca.ca_pem)
    upstream_ssl = pki.upstream_client()
    env = Env(None, None, str(tmp_path / "audit.jsonl"),  # type: ignore[arg-type]
              upstream_ssl=upstream_ssl, interceptor=ca)
    pfile = tmp_path / "profiles.yaml"
    pfile.write_text(PROFILES.format(port=port))
    env.policy = load_profiles([str(pfile)]).table  # type: ignore[assignment]
    try:
        yield {"env": env, "port": port, "genv": genv, "tmp": tmp_path, "ca": ca_file,
               "upstream_ca": up_ca_path, "seen": handler.seen}
    finally:
        env.close()
        httpd.shutdown()
        httpd.server_close()


def test_clone_allowed_push_refused(forge: dict[str, Any]) -> None:
    env, port, genv, tmp = forge["env"], forge["port"], forge["genv"], forge["tmp"]
    url = f"https://127.0.0.1:{port}/repo.git"
    via_proxy = ["-c", f"http.proxy=http://127.0.0.1:{env.proxy_port}",
                 "-c", f"http.sslCAInfo={forge['ca']}"]
    clone = _git(*via_proxy, "clone", url, "clone", cwd=tmp, env=genv)
    assert clone.returncode == 0, clone.stderr
    assert (tmp / "clone" / "README").read_text() == "hello through the proxy\n"
    assert any(s.endswith("/git-upload-pack") and s.startswith("POST") for s in forge["seen"])

    (tmp / "clone" / "new.txt").write_text("change\n")
    _git("add", "new.txt", cwd=tmp / "clone", env=genv)
    _git("commit", "-m", "change", cwd=tmp / "clone", env=genv)
    push = _git(*via_proxy, "push", "origin", "HEAD:main", cwd=tmp / "clone", env=genv)
    assert push.returncode != 0
    assert "403" in push.stderr, push.stderr
    assert not any(s.startswith("POST") and "receive-pack" in s for s in forge["seen"])
    env.audit.close()
    denials = [json.loads(x) for x in Path(env.audit_path).read_text().splitlines()
               if '"policy_denied"' in x]
    assert any(d["http_request"]["url"]["path"] == "/repo.git/git-receive-pack"
               and d["http_request"]["http_method"] == "POST" for d in denials)

    # Control: the server itself accepts this push; the 403 was the proxy's rule.
    direct = _git("-c", f"http.sslCAInfo={forge['upstream_ca']}", "push", url, "HEAD:main",
                  cwd=tmp / "clone", env=genv)
    assert direct.returncode == 0, direct.stderr
