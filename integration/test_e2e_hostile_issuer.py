"""A hostile or broken token issuer, end to end: the agent gets 502 token_grant_failed, the
service sees nothing, and the failure is remembered (no new issuer request in the backoff)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from integration.e2e import DevEnv
from supervisor.devenv.token_issuer import IssuerFaults

pytestmark = pytest.mark.privileged

# A string the issuer puts in its answers; it must never reach the agent or a log.
LEAK = "issuer-internal-e2e-marker"


def crlf_token(f: IssuerFaults, env: DevEnv) -> None:
    f.access_token = "abc\r\nX-Injected: 1"


def redirect(f: IssuerFaults, env: DevEnv) -> None:
    f.redirect = f"{env.sink.url}token?{LEAK}"


def server_error(f: IssuerFaults, env: DevEnv) -> None:
    f.status = 500
    f.body = json.dumps({"error": "server_error", "trace": LEAK}).encode()


def garbage_json(f: IssuerFaults, env: DevEnv) -> None:
    f.status = 200
    f.body = b'{"access_token": "' + LEAK.encode() + b'", '


def wrong_token_type(f: IssuerFaults, env: DevEnv) -> None:
    f.token_type = "mac"


FAULTS: dict[str, Callable[[IssuerFaults, DevEnv], None]] = {
    "crlf_in_token": crlf_token,
    "redirect_elsewhere": redirect,
    "status_500": server_error,
    "garbage_json": garbage_json,
    "token_type_not_bearer": wrong_token_type,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_hostile_issuer_fails_closed(devenv: DevEnv, run_agent: Any, fault: str) -> None:
    with devenv.issuer.lock:
        FAULTS[fault](devenv.issuer.faults, devenv)
    before = devenv.counts()
    # Two calls to alpha: the second falls in the failure's backoff (>= 0.8 s).
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"),
                     devenv.alpha.url, devenv.alpha.url], forbidden=[LEAK])
    after = devenv.counts()
    assert run.returncode == 0, run.explain()
    results = run.report()
    for result in results:
        assert result["status"] == 502, result
        assert result["proxy_error"] == "token_grant_failed"
        assert result["body"]["error"] == "token_grant_failed"
    assert LEAK not in run.stdout, "the issuer's body reached the agent"
    assert "X-Injected" not in run.stdout
    # The service saw nothing; the redirect target was never contacted.
    assert after["alpha"] == before["alpha"]
    assert after["sink"] == before["sink"]
    # Negative caching: one issuer request for both calls.
    assert after["issuer_requests"] - before["issuer_requests"] == 1
    denied = [e for e in run.http_events() if e.get("action_id") == 2]
    assert len(denied) == 2, run.audit_lines
    assert all("token_grant_failed" in json.dumps(e) for e in denied)
    assert all(e.get("severity_id") == 3 for e in denied), "grant failure is Denied/Medium"


def test_issuer_recovers_in_a_fresh_run(devenv: DevEnv, run_agent: Any) -> None:
    """After the faults are reset, a new supervisor gets tokens again (no state leaks)."""
    with devenv.issuer.lock:
        devenv.issuer.faults.status = 500
    failed = run_agent([sys.executable, devenv.agent("urllib_agent.py"), devenv.beta.url])
    assert failed.report()[0]["status"] == 502
    devenv.issuer.reset_faults()
    ok = run_agent([sys.executable, devenv.agent("urllib_agent.py"), devenv.beta.url])
    assert ok.report()[0]["status"] == 200, ok.explain()


def test_slow_issuer_times_out(devenv: DevEnv, run_agent: Any) -> None:
    """An issuer slower than --grant-timeout: 502, nothing forwarded."""
    with devenv.issuer.lock:
        devenv.issuer.faults.delay = 3.0
        devenv.issuer.faults.status = 500  # what it finally says, after we gave up: no token
    before = devenv.counts()
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"), devenv.alpha.url],
                    extra_args=["--grant-timeout", "1"])
    assert run.returncode == 0, run.explain()
    result = run.report()[0]
    assert result["status"] == 502 and result["proxy_error"] == "token_grant_failed", result
    assert devenv.counts()["alpha"] == before["alpha"]


def test_workload_api_failure_fails_closed(devenv: DevEnv, run_agent: Any) -> None:
    """No SVID (the Workload API answers UNAVAILABLE): 502, and the issuer is never asked."""
    with devenv.workload.lock:
        devenv.workload.faults.fail_next = 100
    try:
        before = devenv.counts()
        run = run_agent([sys.executable, devenv.agent("urllib_agent.py"), devenv.beta.url])
        after = devenv.counts()
    finally:
        with devenv.workload.lock:
            devenv.workload.faults.fail_next = 0
    assert run.returncode == 0, run.explain()
    result = run.report()[0]
    assert result["status"] == 502 and result["proxy_error"] == "token_grant_failed", result
    assert after["beta"] == before["beta"]
    assert after["issuer_requests"] == before["issuer_requests"]


# The issuer's own words: they may name users, tenants or internal state.
DESCRIPTION = "issuer-description-e2e-marker"


@pytest.mark.parametrize(("status", "code", "shown"), [
    (401, "invalid_client", True),  # RFC 6749 code: the agent may see it
    (400, "tenant_e2e_private_code", False),  # not registered: audit log only
])
def test_issuer_error_text_reaches_the_audit_log_only(
    devenv: DevEnv, run_agent: Any, status: int, code: str, shown: bool
) -> None:
    """Issue 12 item 3: the agent gets the step, the HTTP status and a registered OAuth
    ``error`` code, on the first failure and again during the backoff; the sanitized
    ``error_description`` goes to the audit log, never to the agent or stderr."""
    with devenv.issuer.lock:
        devenv.issuer.faults.status = status
        devenv.issuer.faults.body = json.dumps(
            {"error": code, "error_description": f"{DESCRIPTION}\r\nX-Evil: 1"}).encode()
    run = run_agent([sys.executable, devenv.agent("urllib_agent.py"),
                     devenv.alpha.url, devenv.alpha.url])
    assert run.returncode == 0, run.explain()
    results = run.report()
    assert len(results) == 2
    for result in results:
        assert result["status"] == 502 and result["proxy_error"] == "token_grant_failed"
        detail = result["body"]["detail"]
        assert f"answered {status}" in detail, detail
        assert (code in detail) == shown, detail
    assert "backoff" in results[1]["body"]["detail"]
    assert DESCRIPTION not in run.stdout and "X-Evil" not in run.stdout
    assert DESCRIPTION not in run.stderr, "the issuer's text is for the audit log only"
    if not shown:
        assert code not in run.stdout
    denied = [e for e in run.http_events() if e.get("action_id") == 2]
    assert len(denied) == 2, run.audit_lines
    for event in denied:
        assert f"{DESCRIPTION}??X-Evil: 1" in event["status_detail"], event
        assert code in event["status_detail"]
