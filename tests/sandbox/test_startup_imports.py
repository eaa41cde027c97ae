"""The import budget of `run`: what the supervisor has imported when it releases the agent.

Everything imported before the release is start-up time of every sandboxed command (a
sandbox per shell command puts `run` on an agent's hot path). The proxy's stack (asyncio,
ssl, cryptography, grpc, httpx) belongs on the proxy thread, which starts after the
release; the CLI framework and rich belong to the other commands. A subprocess runs the
real CLI with the release wrapped to record ``sys.modules`` at that moment (root: `run`
creates namespaces). Timings are the bench's business; this test only checks modules.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import clean_env

pytestmark = pytest.mark.privileged

# Modules (and their submodules) that must not be imported before the agent's release.
# The per-run CA's key and certificate are made before it (the agent's trust bundles must
# exist when it starts) with cryptography's EC primitives only: x509 waits for the proxy.
FORBIDDEN = {
    "click": "the CLI framework: `run` parses its own options",
    "rich": "terminal rendering, for validate/check-isolation only",
    "asyncio": "the proxy's event loop lives on its thread, after the release",
    "ssl": "TLS belongs to the proxy thread",
    "cryptography.x509": "the CA certificate is encoded by supervisor.proxy.ca_cert",
    "cryptography.hazmat.backends": "ec.ECDSA's constructor loads it: ca_cert signs without it",
    "httpx": "token grants happen on the proxy thread",
    "grpc": "the Workload API client starts on the proxy thread",
    "spiffe": "the Workload API client starts on the proxy thread",
    "jwt": "token grants happen on the proxy thread",
    "certifi": "only a fallback when no system bundle exists",
    "urllib": "URL parsing: token endpoints (profile validation), encoded static secrets",
    "logging": "imported on a logger's first use (supervisor.logs): a run logs nothing before",
    "tempfile": "the CA bundle directory is made by supervisor.tempdirs",
    "shutil": "removes the CA bundle directory, after the agent ran",
    # Each @dataclass compiles generated source (~0.4 ms a class, ~44 classes on this path)
    # and the module imports inspect: classes on the path use supervisor.record instead.
    "dataclasses": "value classes before the release are supervisor.record classes",
    "inspect": "imported by dataclasses and asyncio, neither needed before the release",
    "socket": "netns/diag use _socket; the proxy thread wraps the listener (services)",
    "supervisor.telemetry": "the proxy's counters, made on the proxy thread",
}
# And with nothing to intercept there is no per-run CA.
FORBIDDEN_WITHOUT_CA = {
    "cryptography": "the per-run CA's key is made only with an interceptable endpoint",
}

# The installed console script (beside the interpreter) is run as its own file: looking it
# up with importlib.metadata would itself import email, zipfile, csv, shutil, tempfile, ...
# and hide them from the budget. The module list is taken before json is imported here.
RECORDER = """
import os, sys
out, argv = sys.argv[1], sys.argv[2:]
from supervisor.sandbox import spawn
release = spawn.InitProcess.start
def start(self, env):
    loaded = sorted(sys.modules)
    import json
    with open(out, "w") as f:
        json.dump(loaded, f)
    return release(self, env)
spawn.InitProcess.start = start
script = os.path.join(os.path.dirname(sys.executable), "openshell-supervisor")
with open(script) as f:
    code = compile(f.read(), script, "exec")
sys.argv = [script, *argv]
exec(code, {"__name__": "__main__"})  # what the installed command runs
"""

TUNNELS_ONLY = """\
- id: tunnels-only
  display_name: Tunnels only
  description: every endpoint tunnelled, nothing the proxy could intercept
  category: other
  credentials: []
  endpoints:
    - host: 127.0.0.1
      port: 9
      protocol: rest
      tls: skip
      access: read-only
      allowed_ips: [127.0.0.0/8]
"""

INTERCEPTABLE = """\
- id: interceptable
  display_name: Interceptable
  description: an HTTPS endpoint the proxy may terminate (a per-run CA is made)
  category: other
  credentials: []
  endpoints:
    - host: api.example.com
      port: 443
      protocol: rest
      access: read-only
"""


# A static credential (its value from the environment), an OpenShell policy with a
# filesystem_policy (Landlock) and a network entry, and an upstream proxy: their classes are
# on the path too.
STATIC_CREDENTIAL = """\
- id: static-credential
  display_name: Static credential
  description: a bearer key from the environment, injected by the proxy
  category: other
  credentials:
    - {name: api_key, description: key, required: true, auth_style: bearer,
       header_name: Authorization, env_vars: [STARTUP_TEST_KEY]}
  endpoints:
    - {host: api.example.com, port: 443, protocol: rest, access: read-only}
"""
POLICY = """\
version: 1
filesystem_policy:
  read_only: [/usr, /lib, /lib64, /bin, /etc, /proc]
  read_write: [/tmp, /dev/null]
landlock: {compatibility: best_effort}
network_policies:
  readers:
    endpoints: [{host: raw.example.com, port: 443}]
    binaries: [{path: /usr/bin/curl}]
"""


# supervisor.credentials.placeholders (a secret's encoded forms) and proxy.upstream_proxy
# (the proxy's URL) still import urllib.parse.
_BUT_URLLIB = {k: v for k, v in FORBIDDEN.items() if k != "urllib"}


def modules_at_release(tmp_path: Path, profile: str, policy: str | None = None) -> set[str]:
    path = tmp_path / "profile.yaml"
    path.write_text(profile)
    options = ["--profile", str(path)]
    if policy is not None:
        (tmp_path / "policy.yaml").write_text(policy)
        options += ["--policy", str(tmp_path / "policy.yaml"),
                    "--upstream-proxy", "http://user:pw@127.0.0.1:9", "--no-upstream-proxy", "*"]
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", RECORDER, str(out), "run", *options, "--", "/bin/true"],
        env=clean_env(STARTUP_TEST_KEY="k-1234"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.exists(), "the agent was released without passing the recorder"
    return set(json.loads(out.read_text()))


@pytest.mark.parametrize(
    ("profile", "policy", "forbidden"),
    [(TUNNELS_ONLY, None, FORBIDDEN | FORBIDDEN_WITHOUT_CA), (INTERCEPTABLE, None, FORBIDDEN),
     (STATIC_CREDENTIAL, POLICY, _BUT_URLLIB)],
    ids=["plain", "intercept", "static-credential-policy-upstream-proxy"],
)  # fmt: skip
def test_nothing_heavy_before_the_agent_is_released(
    tmp_path: Path, profile: str, policy: str | None, forbidden: dict[str, str]
) -> None:
    loaded = modules_at_release(tmp_path, profile, policy)
    assert "supervisor" in loaded  # the recorder saw the real run
    crept_in = {
        name: why for name, why in forbidden.items()
        if any(m == name or m.startswith(name + ".") for m in loaded)
    }  # fmt: skip
    assert not crept_in, f"imported before the agent's release: {crept_in}"


def test_the_forked_childs_landlock_code_loads_neither_dataclasses_nor_inspect() -> None:
    """With a filesystem policy the forked child imports confine before it execs the init
    (the recorder above sees only the supervisor's modules)."""
    code = ("import sys, supervisor.sandbox.child, supervisor.sandbox.confine; "
            "print(sorted({'dataclasses', 'inspect'} & set(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_env(), check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


GC_RECORDER = """
import gc, json, os, sys
out, argv = sys.argv[1], sys.argv[2:]
from supervisor import runner
from supervisor.sandbox import spawn
seen = {}
release = spawn.InitProcess.start
def start(self, env):
    seen["at_release"] = gc.isenabled()
    return release(self, env)
spawn.InitProcess.start = start
watch = runner._watch_services
def watched(*args):
    seen["after_release"] = gc.isenabled()
    seen["frozen"] = gc.get_freeze_count()
    with open(out, "w") as f:
        json.dump(seen, f)
    return watch(*args)
runner._watch_services = watched
from supervisor.run_cli import main
sys.argv = ["openshell-supervisor", *argv]
main()
"""


def test_the_collector_is_off_until_the_release_then_on_with_the_start_up_frozen(
    tmp_path: Path,
) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(TUNNELS_ONLY)
    out = tmp_path / "gc.json"
    proc = subprocess.run(
        [sys.executable, "-c", GC_RECORDER, str(out), "run", "--profile", str(path), "--",
         "/bin/true"],
        env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    assert seen["at_release"] is False
    assert seen["after_release"] is True
    assert seen["frozen"] > 10_000  # modules, classes, profile tables: out of the generations
