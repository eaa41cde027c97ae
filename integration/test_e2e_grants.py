"""The alpha/beta token-grant flow through the real supervisor, seen from the issuer."""

from __future__ import annotations

import secrets
import sys
from typing import Any

import pytest

from integration.e2e import SPIFFE_ID, DevEnv

pytestmark = pytest.mark.privileged

JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"


def test_one_grant_per_audience_for_repeated_calls(devenv: DevEnv, run_agent: Any) -> None:
    before = devenv.counts()
    svids_before = devenv.workload.counters.fetch_jwt_svid
    alpha, beta = devenv.alpha.url, devenv.beta.url
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"),
                     alpha, beta, alpha, beta, alpha, f"{beta}again"])
    assert run.returncode == 0, run.explain()
    assert [r["status"] for r in run.report()] == [200] * 6
    after = devenv.counts()
    # The cache: six calls, two audiences, two grants.
    assert after["issuer_issued"] - before["issuer_issued"] == 2
    assert after["issuer_requests"] - before["issuer_requests"] == 2
    assert after["alpha"] - before["alpha"] == 3
    assert after["beta"] - before["beta"] == 3
    assert 1 <= devenv.workload.counters.fetch_jwt_svid - svids_before <= 2
    # The SVID was requested for exactly one audience (not one per character of it).
    assert devenv.workload.counters.last_audiences == (devenv.issuer.base_url,)


def test_concurrent_misses_share_one_grant(devenv: DevEnv, run_agent: Any) -> None:
    """Twelve simultaneous first requests for two audiences: one grant in flight per key."""
    before = devenv.counts()
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"), "--parallel",
                     *[devenv.alpha.url] * 6, *[devenv.beta.url] * 6])
    assert run.returncode == 0, run.explain()
    assert [r["status"] for r in run.report()] == [200] * 12
    after = devenv.counts()
    assert after["issuer_requests"] - before["issuer_requests"] == 2
    assert after["alpha"] - before["alpha"] == 6


def test_issuer_sees_a_clean_rfc7523_form(devenv: DevEnv, run_agent: Any) -> None:
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"),
                     devenv.alpha.url, devenv.beta.url])
    assert run.returncode == 0, run.explain()
    forms = list(devenv.issuer.submissions)[-2:]
    assert len(forms) == 2
    seen = set()
    for form in forms:
        f = {k: v[0] for k, v in form.fields.items()}
        assert all(len(v) == 1 for v in form.fields.values())
        assert "client_id" not in f
        assert f["grant_type"] == "client_credentials"
        assert f["client_assertion_type"] == JWT_SPIFFE
        assert f["audience"] == f["scope"]
        seen.add(f["audience"])
        assert form.assertion_claims["sub"] == SPIFFE_ID
        assert form.assertion_claims["aud"] == devenv.issuer.base_url
        # Nothing of the agent's request travels to the issuer.
        assert "authorization" not in form.header_names
        assert "proxy-authorization" not in form.header_names
    assert seen == {"alpha", "beta"}


def test_query_string_never_logged(devenv: DevEnv, run_agent: Any) -> None:
    marker = f"xyz{secrets.token_hex(8)}"
    url = f"{devenv.alpha.url}data?secret={marker}"
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"), url],
                    forbidden=[marker])
    assert run.returncode == 0, run.explain()
    assert run.report()[0]["status"] == 200
    paths = [e["http_request"]["url"].get("path") for e in run.http_events()]
    assert "/data" in paths, run.audit_lines
