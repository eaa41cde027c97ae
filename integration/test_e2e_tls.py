"""HTTPS end to end: agents reach a TLS upstream through `run`, the proxy terminates TLS
with the run's CA, injects the token and talks to the upstream over verified TLS.

The upstream is a protected service ("gamma") on 127.0.0.5 with a certificate from a test
CA handed to the supervisor with ``--ca-bundle``. The agent trusts the sandbox CA only
through the variables the supervisor sets (SSL_CERT_FILE, CURL_CA_BUNDLE, ...).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from integration.upstream_tls import upstream_tls
from supervisor.devenv.services import ProtectedService

pytestmark = pytest.mark.privileged

TLS_HOST = "127.0.0.5"

PROFILE = """\
id: e2e-tls
display_name: TLS upstream
description: a credentialed HTTPS endpoint, intercepted
category: other
credentials:
  - name: access_token
    token_grant:
      token_endpoint: {token_url}
      jwt_svid_audience: {issuer_url}
      audience: gamma
      scopes: [gamma]
endpoints:
  - host: {host}
    port: {port}
    access: read-only
    allowed_ips: [127.0.0.0/8]
"""

AGENT = r"""
import json, os, ssl, sys, urllib.request
url = sys.argv[1]
out = {}
req = urllib.request.Request(url, headers={"Authorization": "Bearer stolen"})
with urllib.request.urlopen(req, timeout=20) as resp:
    out["urllib"] = {"status": resp.status, "body": json.loads(resp.read())}
import httpx
r = httpx.get(url, headers={"Authorization": "Bearer stolen"}, timeout=20)
out["httpx"] = {"status": r.status_code, "body": r.json()}
bundle_dir = os.path.dirname(os.environ["SSL_CERT_FILE"])
out["bundle_files"] = sorted(os.listdir(bundle_dir))
out["key_material"] = any(
    b"PRIVATE KEY" in open(os.path.join(bundle_dir, f), "rb").read()
    for f in os.listdir(bundle_dir)
)
out["ca_vars"] = sorted(k for k in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                                    "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS") if k in os.environ)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tls_env(devenv: Any) -> Iterator[tuple[Any, ProtectedService, Path]]:
    ca_pem, server_ctx = upstream_tls(
        devenv.base, ca_name="e2e upstream CA", leaf_name="gamma",
        sans=[x509.IPAddress(ipaddress.ip_address(TLS_HOST))],
    )
    gamma = ProtectedService("gamma", devenv.issuer.jwks_url, host=TLS_HOST)
    gamma._server.socket = server_ctx.wrap_socket(gamma._server.socket, server_side=True)
    gamma.start()
    profile = devenv.base / "tls.yaml"
    profile.write_text(PROFILE.format(
        token_url=devenv.issuer.token_url, issuer_url=devenv.issuer.base_url,
        host=TLS_HOST, port=gamma.port))
    profile.chmod(0o644)
    agent = devenv.base / "agents" / "tls_agent.py"
    agent.write_text(AGENT)
    agent.chmod(0o644)
    try:
        yield dataclasses.replace(devenv, profiles=[profile]), gamma, ca_pem
    finally:
        gamma.stop()


def _url(gamma: ProtectedService) -> str:
    return f"https://{TLS_HOST}:{gamma.port}/"


def _assert_gamma(result: dict[str, Any]) -> None:
    assert result["status"] == 200, result
    body = result["body"]
    assert body["aud"] == "gamma" and "gamma" in body["scope"].split()
    assert body["authorization_headers"] == 1  # the agent's "stolen" header was removed


def test_python_clients_reach_tls_upstream_with_injected_token(tls_env: Any) -> None:
    from integration.e2e import run_supervisor

    env, gamma, ca_pem = tls_env
    before = len(gamma.log.accepted)
    run = run_supervisor(env, [sys.executable, env.agent("tls_agent.py"), _url(gamma)],
                         extra_args=["--ca-bundle", str(ca_pem)])
    assert run.returncode == 0, run.explain()
    report = run.report()
    _assert_gamma(report["urllib"])
    _assert_gamma(report["httpx"])
    assert report["key_material"] is False
    assert report["ca_vars"] == sorted(["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                                        "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS"])
    assert len(gamma.log.accepted) == before + 2
    injected = [e for e in run.http_events() if e.get("action_id") == 1]
    assert {e["http_request"]["url"]["scheme"] for e in injected} == {"https"}


def test_curl_reaches_tls_upstream_with_injected_token(tls_env: Any) -> None:
    import json

    from integration.e2e import run_supervisor

    if shutil.which("curl") is None:
        pytest.skip("curl not installed (scripts/bootstrap-system.sh test installs it)")
    env, gamma, ca_pem = tls_env
    run = run_supervisor(
        env, ["curl", "-sS", "--fail-with-body", "-H", "Authorization: Bearer stolen", _url(gamma)],
        extra_args=["--ca-bundle", str(ca_pem)])
    assert run.returncode == 0, run.explain()
    _assert_gamma({"status": 200, "body": json.loads(run.stdout)})


def test_upstream_untrusted_without_ca_bundle_is_502(tls_env: Any) -> None:
    """Without --ca-bundle the supervisor cannot verify the upstream: 502, nothing sent."""
    from integration.e2e import run_supervisor

    if shutil.which("curl") is None:
        pytest.skip("curl not installed")
    env, gamma, _ = tls_env
    before = len(gamma.log.accepted) + len(gamma.log.refused)
    run = run_supervisor(env, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                               "-H", "Authorization: Bearer stolen", _url(gamma)])
    assert run.stdout.strip() == "502", run.explain()
    assert len(gamma.log.accepted) + len(gamma.log.refused) == before
