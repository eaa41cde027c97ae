"""Real agent tools accept the sandbox leaves through the variables of ARCHITECTURE.md 2
(and refuse them without): curl, Node, Python. Servers on 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from supervisor.proxy.interception import SandboxCA, env_vars
from tests.interception.tlshelp import https_server

HOSTS = ["localhost", "127.0.0.1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[SandboxCA, dict[str, str]]:
    ca = SandboxCA.generate(HOSTS)
    paths = ca.write_bundles(str(tmp_path_factory.mktemp("bundles")))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env_vars(paths)}
    return ca, env


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)


def _curl(host: str, port: int) -> list[str]:
    return [
        "curl", "-sS", "--noproxy", "*", "--max-time", "10",
        "--resolve", f"localhost:{port}:127.0.0.1", f"https://{host}:{port}/",
    ]  # fmt: skip


_NODE = """
const https = require('https');
const [host, port] = process.argv.slice(1);
https.get({host: '127.0.0.1', servername: host === '127.0.0.1' ? undefined : host,
           port: Number(port), path: '/', headers: {host}}, (res) => {
  res.on('data', (d) => process.stdout.write(d));
}).on('error', (e) => { console.error(e.code || e.message); process.exit(1); });
"""

_PYTHON = """
import sys, urllib.request
host, port = sys.argv[1:]
print(urllib.request.urlopen(f"https://{host}:{port}/", timeout=10).read().decode(), end="")
"""


def _node(host: str, port: int) -> list[str]:
    return ["node", "-e", _NODE, host, str(port)]


def _python(host: str, port: int) -> list[str]:
    return [sys.executable, "-c", _PYTHON, host, str(port)]


CLIENTS = {"curl": _curl, "node": _node, "python": _python}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("host", HOSTS)
def test_tool_trusts_leaf_via_env(
    setup: tuple[SandboxCA, dict[str, str]], client: str, host: str
) -> None:
    argv0 = "node" if client == "node" else ("curl" if client == "curl" else sys.executable)
    if shutil.which(argv0) is None:
        pytest.skip(f"{argv0} not installed")
    ca, env = setup
    with https_server(ca.server_context(host), connections=2) as port:
        ok = _run(CLIENTS[client](host, port), env)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "ok"
        without = {k: v for k, v in env.items() if k == "PATH"}
        refused = _run(CLIENTS[client](host, port), without)
        assert refused.returncode != 0
