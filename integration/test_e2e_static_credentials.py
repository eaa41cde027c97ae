"""Static credentials through the real supervisor (``python -m supervisor run``).

Profiles shaped like OpenShell's ``claude-code.yaml`` (header x-api-key, two env_vars,
three endpoints), ``github.yaml`` (bearer, GITHUB_TOKEN/GH_TOKEN) and an AWS SigV4
endpoint; their host names resolve to loopback TLS upstreams through a private
/etc/hosts bound in a mount namespace around the supervisor (``allowed_ips`` opts in to
loopback). The agent (uid 65534) holds placeholders only; the upstreams see real values,
and only at their own endpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509

from integration.upstream_tls import upstream_tls
from tests.credentials import sigv4_verifier

pytestmark = pytest.mark.privileged

ANTHROPIC_KEY = "sk-ant-e2e-REAL-0123456789abcdef"
GITHUB_V1 = "ghp_e2eREALfirst0123456789"
GITHUB_V2 = "ghp_e2eREALsecond987654321"
AWS_ID, AWS_SECRET, AWS_TOKEN = "AKIDE2EREALKEY", "e2e/real+secret", "e2e-session-token-real"
SECRETS = (ANTHROPIC_KEY, GITHUB_V1, GITHUB_V2, AWS_SECRET, AWS_TOKEN)

HOSTS = {  # name -> loopback address of its upstream
    "api.anthropic.com": "127.0.0.21",
    "statsig.anthropic.com": "127.0.0.22",
    "sentry.io": "127.0.0.23",
    "api.github.com": "127.0.0.24",
    "bedrock-runtime.us-east-1.amazonaws.com": "127.0.0.25",
}

PROFILES = """\
- id: claude-code-e2e
  display_name: Claude Code (shaped like OpenShell's claude-code.yaml)
  description: header-style static key
  category: agent
  credentials:
    - name: api_key
      description: Anthropic API key
      env_vars: [ANTHROPIC_API_KEY, CLAUDE_API_KEY]
      required: true
      auth_style: header
      header_name: x-api-key
  endpoints:
{claude_endpoints}
- id: github-e2e
  display_name: GitHub (shaped like OpenShell's github.yaml)
  description: bearer token
  category: source_control
  credentials:
    - name: api_token
      env_vars: [GITHUB_TOKEN, GH_TOKEN]
      required: true
      auth_style: bearer
      header_name: authorization
  endpoints:
    - host: api.github.com
      port: {github_port}
      protocol: rest
      access: read-write
      enforcement: enforce
      request_body_credential_rewrite: true
      allowed_ips: [127.0.0.0/8]
- id: bedrock-e2e
  display_name: Bedrock with proxy-side SigV4
  description: AWS keys, re-signed
  category: inference
  credentials:
    - name: access_key_id
      env_vars: [AWS_ACCESS_KEY_ID]
      required: true
    - name: secret_access_key
      env_vars: [AWS_SECRET_ACCESS_KEY]
      required: true
    - name: session_token
      env_vars: [AWS_SESSION_TOKEN]
  endpoints:
    - host: bedrock-runtime.us-east-1.amazonaws.com
      port: {bedrock_port}
      protocol: rest
      access: read-write
      enforcement: enforce
      credential_signing: sigv4
      signing_service: bedrock
      allowed_ips: [127.0.0.0/8]
"""

AGENT = r"""
import base64, json, os, ssl, sys, time, urllib.error, urllib.request
ports = json.loads(sys.argv[1])
out = {"env": {k: os.environ.get(k) for k in ("ANTHROPIC_API_KEY", "CLAUDE_API_KEY",
       "GITHUB_TOKEN", "GH_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
       "AWS_SESSION_TOKEN")}}
environs = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            environs.append(open(f"/proc/{pid}/environ", "rb").read().decode("latin-1"))
        except OSError:
            pass
out["proc_environs"] = environs

def call(name, host, path, headers=None, body=None, method="GET"):
    url = f"https://{host}:{ports[host]}{path}"
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            out[name] = {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        out[name] = {"status": e.code, "body": e.read().decode(),
                     "proxy_error": e.headers.get("x-openshell-proxy-error")}

key, gh = os.environ["ANTHROPIC_API_KEY"], os.environ["GITHUB_TOKEN"]
call("anthropic", "api.anthropic.com", "/v1/messages", {"x-api-key": key,
     "content-type": "application/json"}, b'{"model":"m"}', "POST")
call("statsig", "statsig.anthropic.com", "/v1/e", {"x-api-key": key})
call("mismatch", "api.github.com", "/user", {"x-api-key": key})
call("plain", "api.anthropic.com", "/v1/models", {"x-api-key": "agent-own-value"})
basic = base64.b64encode(f"x-access-token:{gh}".encode()).decode()
call("basic", "api.github.com", "/basic", {"authorization": f"Basic {basic}"})
call("query", "api.github.com", "/query?per_page=1&access_token=" + gh.replace(":", "%3A"))
call("path", "api.github.com", f"/path/{gh}/end")
call("body", "api.github.com", "/body", {"content-type": "application/json"},
     json.dumps({"token": gh}).encode(), "POST")
call("unknown", "api.github.com", "/user", {"authorization": "Bearer openshell:resolve:env:NOPE"})
call("sigv4", "bedrock-runtime.us-east-1.amazonaws.com", "/model/m/invoke",
     {"content-type": "application/json", "x-amz-date": "20200101T000000Z",
      "authorization": "AWS4-HMAC-SHA256 Credential=" + os.environ["AWS_ACCESS_KEY_ID"] + "/x",
      "x-amz-security-token": os.environ["AWS_SESSION_TOKEN"]}, b'{"prompt":"hi"}', "POST")
deadline = time.monotonic() + 20
while True:  # the test rotates the Secret file after the first request it sees here
    call("rotation", "api.github.com", "/rotation", {"authorization": f"Bearer {gh}"})
    if out["rotation"]["body"] == "second" or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print(json.dumps(out))
"""


class Upstream:
    """An HTTPS origin on one loopback address that records each request."""

    def __init__(self, host: str, ctx: ssl.SSLContext, on_request: Any = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.on_request = on_request
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                rec = {"method": self.command, "target": self.path,
                       "headers": [(k, v) for k, v in self.headers.items()], "body": body}
                owner.requests.append(rec)
                status, text = (owner.on_request or (lambda r: (200, "ok")))(rec)
                data = text.encode()
                self.send_response(status)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _header(rec: dict[str, Any], name: str) -> str | None:
    return next((v for k, v in rec["headers"] if k.lower() == name), None)


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Any]]:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("unshare/mount not installed (util-linux)")
    base = Path(tempfile.mkdtemp(prefix="openshell-e2e-static-"))
    base.chmod(0o755)
    ca_pem, ctx = upstream_tls(base, ca_name="e2e static-credentials CA", leaf_name="e2e",
                               sans=[x509.DNSName(h) for h in HOSTS])
    secret_dir = base / "secret"
    secret_dir.mkdir(mode=0o755)
    (secret_dir / "GITHUB_TOKEN").write_text(GITHUB_V1 + "\n")
    (secret_dir / "GITHUB_TOKEN").chmod(0o644)  # a Secret volume's default mode

    def github(rec: dict[str, Any]) -> tuple[int, str]:
        if rec["target"] == "/rotation":
            auth = _header(rec, "authorization")
            if auth == f"Bearer {GITHUB_V1}":
                tmp = secret_dir / ".GITHUB_TOKEN.new"
                tmp.write_text(GITHUB_V2 + "\n")
                tmp.chmod(0o644)
                os.replace(tmp, secret_dir / "GITHUB_TOKEN")  # as kubelet swaps atomically
                return 200, "first"
            return 200, "second" if auth == f"Bearer {GITHUB_V2}" else "other"
        return 200, "ok"

    def bedrock(rec: dict[str, Any]) -> tuple[int, str]:
        target = urlsplit(rec["target"])
        why = sigv4_verifier.verify(rec["method"], target.path,
                                    f"?{target.query}" if target.query else "",
                                    rec["headers"], rec["body"], {AWS_ID: AWS_SECRET},
                                    "bedrock", "us-east-1")
        return (200, "signature ok") if why is None else (403, why)

    ups = {h: Upstream(ip, ctx, github if h == "api.github.com" else
                       bedrock if h.startswith("bedrock") else None)
           for h, ip in HOSTS.items()}
    claude = "".join(
        f"    - host: {h}\n      port: {ups[h].port}\n      protocol: rest\n"
        "      access: read-write\n      enforcement: enforce\n"
        "      allowed_ips: [127.0.0.0/8]\n"
        for h in ("api.anthropic.com", "statsig.anthropic.com", "sentry.io"))
    profile = base / "profiles.yaml"
    profile.write_text(PROFILES.format(claude_endpoints=claude,
                                       github_port=ups["api.github.com"].port,
                                       bedrock_port=ups[next(h for h in HOSTS if "bedrock" in h)].port))
    profile.chmod(0o644)
    hosts = base / "hosts"
    hosts.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {h}\n" for h, ip in HOSTS.items()))
    hosts.chmod(0o644)
    agent = base / "agent.py"
    agent.write_text(AGENT)
    agent.chmod(0o644)
    try:
        yield {"base": base, "ca": ca_pem, "ups": ups, "profile": profile, "hosts": hosts,
               "agent": agent, "secret_dir": secret_dir,
               "ports": {h: u.port for h, u in ups.items()}}
    finally:
        for u in ups.values():
            u.stop()
        shutil.rmtree(base, ignore_errors=True)


def _run(world: dict[str, Any], argv: list[str], env_extra: dict[str, str],
         timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    audit = world["base"] / f"audit-{os.urandom(4).hex()}.jsonl"
    cmd = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
           'mount --bind "$0" /etc/hosts && exec "$@"', str(world["hosts"]),
           sys.executable, "-m", "supervisor", "run", "--profile", str(world["profile"]),
           "--ca-bundle", str(world["ca"]), "--audit-log", str(audit),
           "--credentials-dir", str(world["secret_dir"]), "--", *argv]
    env = {k: v for k, v in os.environ.items()
           if not k.lower().endswith("_proxy") and k not in ("GITHUB_TOKEN", "GH_TOKEN")}
    env.update(env_extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)
    lines = audit.read_text().splitlines() if audit.exists() else []
    return proc, lines


AWS_ENV = {"AWS_ACCESS_KEY_ID": AWS_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
           "AWS_SESSION_TOKEN": AWS_TOKEN}


def test_claude_code_and_github_shaped_profiles_end_to_end(world: dict[str, Any]) -> None:
    ups = world["ups"]
    proc, audit = _run(world, [sys.executable, str(world["agent"]), json.dumps(world["ports"])],
                       {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, **AWS_ENV})
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    # The agent holds placeholders only, in its environment and in every /proc/*/environ.
    env = out["env"]
    assert env["ANTHROPIC_API_KEY"] == "openshell:resolve:env:ANTHROPIC_API_KEY"
    assert env["CLAUDE_API_KEY"] is None  # declared, no value: not exposed
    assert env["GITHUB_TOKEN"] == "openshell:resolve:env:GITHUB_TOKEN"
    assert env["GH_TOKEN"] is None
    assert env["AWS_SECRET_ACCESS_KEY"] == "openshell:resolve:env:AWS_SECRET_ACCESS_KEY"
    assert out["proc_environs"], "the agent could read no /proc/*/environ at all"
    blob = proc.stdout + "".join(out["proc_environs"])
    for secret in SECRETS:
        assert secret not in blob

    # claude-code endpoints: the placeholder reaches them as the real key.
    assert out["anthropic"]["status"] == 200 and out["statsig"]["status"] == 200
    anth = ups["api.anthropic.com"].requests
    assert _header(anth[0], "x-api-key") == ANTHROPIC_KEY
    assert _header(ups["statsig.anthropic.com"].requests[0], "x-api-key") == ANTHROPIC_KEY
    # No placeholder: nothing added, the agent's own value untouched.
    plain = next(r for r in anth if r["target"] == "/v1/models")
    assert _header(plain, "x-api-key") == "agent-own-value"
    assert _header(plain, "authorization") is None

    # Another declared host: 403, and that host never saw the request.
    gh = ups["api.github.com"].requests
    assert out["mismatch"]["status"] == 403
    assert out["mismatch"]["proxy_error"] == "credential_endpoint_mismatch"
    assert all(r["target"] != "/user" for r in gh)
    assert out["unknown"]["status"] == 500
    assert out["unknown"]["proxy_error"] == "credential_unavailable"

    # Basic, query, path and body at GitHub's endpoint.
    import base64
    from urllib.parse import parse_qs, unquote
    by = {r["target"].split("?")[0].split("/")[1]: r for r in gh}
    user, _, value = base64.b64decode(_header(by["basic"], "authorization")[6:]).decode().partition(":")
    assert (user, value) == ("x-access-token", GITHUB_V1)
    assert parse_qs(urlsplit(by["query"]["target"]).query)["access_token"] == [GITHUB_V1]
    assert unquote(by["path"]["target"]) == f"/path/{GITHUB_V1}/end"
    assert json.loads(by["body"]["body"]) == {"token": GITHUB_V1}
    assert _header(by["body"], "content-length") == str(len(by["body"]["body"]))

    # SigV4: the independent verifier accepted the proxy's signature with the real keys.
    assert out["sigv4"] == {"status": 200, "body": "signature ok"}
    signed = ups["bedrock-runtime.us-east-1.amazonaws.com"].requests[-1]
    assert _header(signed, "x-amz-security-token") == AWS_TOKEN

    # Rotation: the Secret file changed during the run; a later request used the new value.
    assert out["rotation"]["body"] == "second", out["rotation"]

    # No value, placeholder or query string in the audit log or the supervisor's stderr.
    logs = "\n".join(audit) + proc.stderr
    for secret in SECRETS:
        assert secret not in logs
    assert "resolve:env" not in logs and "access_token=" not in logs
    events = [json.loads(x) for x in audit if x.strip()]
    findings = [e for e in events if e.get("class_uid") == 2004]
    assert {f["message"] for f in findings} == {"credential_endpoint_mismatch",
                                                "credential_unavailable"}


def test_required_credential_without_value_is_125(world: dict[str, Any]) -> None:
    proc, _ = _run(world, ["/bin/true"], dict(AWS_ENV))
    assert proc.returncode == 125
    assert "claude-code-e2e/api_key" in proc.stderr
    assert "ANTHROPIC_API_KEY, CLAUDE_API_KEY" in proc.stderr


def test_credentials_dir_is_hidden_from_the_agent(world: dict[str, Any]) -> None:
    """An empty, inaccessible tmpfs covers the directory in the agent's mount namespace."""
    probe = ("import json,os,sys; d=sys.argv[1]; r={}\n"
             "try: r['entries']=os.listdir(d)\n"
             "except OSError as e: r['listdir']=e.errno\n"
             "try: open(os.path.join(d,'GITHUB_TOKEN')).read(); r['read']=True\n"
             "except OSError as e: r['read']=e.errno\n"
             "print(json.dumps(r))")
    proc, _ = _run(world, [sys.executable, "-c", probe, str(world["secret_dir"])],
                   {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, **AWS_ENV})
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen.get("entries", []) == [] and seen["read"] is not True, seen
    assert GITHUB_V1 not in proc.stdout and GITHUB_V2 not in proc.stdout


def test_a_secret_copied_into_another_variable_is_125(world: dict[str, Any]) -> None:
    proc, _ = _run(world, ["/bin/true"], {"ANTHROPIC_API_KEY": ANTHROPIC_KEY,
                                         "LEAKY_COPY": ANTHROPIC_KEY, **AWS_ENV})
    assert proc.returncode == 125, proc.stderr[-2000:]
    assert "LEAKY_COPY" in proc.stderr and ANTHROPIC_KEY not in proc.stderr


def test_a_secret_in_the_command_line_is_125(world: dict[str, Any]) -> None:
    """The agent reads its own argv (/proc/self/cmdline): an operator's shell that expanded
    $ANTHROPIC_API_KEY into the command would hand it the value."""
    proc, _ = _run(world, ["/bin/echo", f"--api-key={ANTHROPIC_KEY}"],
                   {"ANTHROPIC_API_KEY": ANTHROPIC_KEY, **AWS_ENV})
    assert proc.returncode == 125, proc.stderr[-2000:]
    assert "argument 1 of the command" in proc.stderr
    assert ANTHROPIC_KEY not in proc.stderr and ANTHROPIC_KEY not in proc.stdout
