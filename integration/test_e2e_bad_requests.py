"""A hostile agent speaking raw bytes to the proxy: every malformed or forbidden request
gets its documented status and error code, and no upstream (nor the issuer) sees a byte."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest

from integration.e2e import GRANT_PROFILE, DevEnv, raw_request_spec, run_supervisor

pytestmark = pytest.mark.privileged

BAD = (400, "bad_request")
POLICY = (403, "policy_denied")
SSRF = (403, "ssrf_denied")


def requests(env: DevEnv) -> dict[str, tuple[bytes, set[tuple[int, str]]]]:
    """name -> (raw request, accepted (status, code) answers)."""
    a = f"127.0.0.2:{env.alpha.port}"
    b = f"127.0.0.3:{env.beta.port}"
    get = f"GET http://{a}/ HTTP/1.1\r\n"
    return {
        "cl_and_te": (
            f"POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(), {BAD}),
        "bare_lf_in_head": (f"{get}Host: {a}\nX-Smuggle: 1\r\n\r\n".encode(), {BAD}),
        "bare_lf_only": (f"GET http://{a}/ HTTP/1.1\nHost: {a}\n\n".encode(), {BAD}),
        "two_host": (f"{get}Host: {a}\r\nHost: {a}\r\n\r\n".encode(), {BAD}),
        "host_disagrees": (f"{get}Host: {b}\r\n\r\n".encode(), {BAD}),
        "obs_fold": (f"{get}Host: {a}\r\nX-A: 1\r\n  folded\r\n\r\n".encode(), {BAD}),
        "space_before_colon": (f"{get}Host : {a}\r\n\r\n".encode(), {BAD}),
        "te_not_chunked": (
            f"POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: gzip, chunked"
            "\r\n\r\n0\r\n\r\n".encode(), {BAD}),
        "differing_content_lengths": (
            f"POST http://{a}/ HTTP/1.1\r\nHost: {a}\r\nContent-Length: 1\r\n"
            "Content-Length: 2\r\n\r\nxx".encode(), {BAD}),
        "oversized_head": (
            f"{get}Host: {a}\r\nX-Big: {'a' * 200_000}\r\n\r\n".encode(),
            {(431, "bad_request")}),
        "undeclared_host": (
            b"GET http://127.0.0.4:8080/ HTTP/1.1\r\nHost: 127.0.0.4:8080\r\n\r\n", {POLICY}),
        "metadata_address": (
            b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\n"
            b"Host: 169.254.169.254\r\n\r\n", {POLICY, SSRF}),
        "metadata_connect": (
            b"CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: 169.254.169.254:443\r\n\r\n",
            {POLICY, SSRF}),
        "control_plane_port": (
            b"GET http://127.0.0.2:6443/ HTTP/1.1\r\nHost: 127.0.0.2:6443\r\n\r\n", {SSRF}),
        "loopback_not_opted_in": (
            f"GET http://localhost:{env.sink.port}/ HTTP/1.1\r\n"
            f"Host: localhost:{env.sink.port}\r\n\r\n".encode(), {SSRF}),
    }


def test_bad_requests_get_documented_answers(devenv: DevEnv, run_agent: Any) -> None:
    cases = requests(devenv)
    spec = raw_request_spec(devenv, {name: raw for name, (raw, _) in cases.items()})
    before = devenv.counts()
    run = run_agent([sys.executable, devenv.agent("raw_requests.py"), str(spec)])
    after = devenv.counts()
    assert run.returncode == 0, run.explain()
    report = run.report()
    wrong = {}
    for name, (_, accepted) in cases.items():
        got = report[name]
        if (got["status"], got["proxy_error"]) not in accepted or got["error"] != got[
                "proxy_error"]:
            wrong[name] = got
    assert not wrong, wrong
    # Parse rejections close the connection.
    for name, (_, accepted) in cases.items():
        if BAD in accepted or (431, "bad_request") in accepted:
            assert report[name]["closed"], name
    assert after == before, "an upstream, the sink or the issuer saw a rejected request"
    # Every refusal is audited (Denied), parse rejections included.
    denied = [e for e in run.http_events() if e.get("action_id") == 2]
    assert len(denied) == len(cases), run.audit_lines


def test_agent_credential_headers_never_reach_the_service(
    devenv: DevEnv, run_agent: Any
) -> None:
    """Any spelling of the agent's own Authorization, Proxy-Authorization and headers the
    agent nominates in Connection are removed; exactly one (injected) header arrives."""
    a = f"127.0.0.2:{devenv.alpha.port}"
    raw = (f"GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\nauthorization: Bearer stolen\r\n"
           "AUTHORIZATION: Bearer stolen-too\r\nAuthorization:Bearer stolen-3\r\n"
           "Proxy-Authorization: Basic c3RvbGVu\r\nConnection: close, X-Hop\r\n"
           "X-Hop: 1\r\n\r\n").encode()
    spec = raw_request_spec(devenv, {"spelled": raw})
    run = run_agent([sys.executable, devenv.agent("raw_requests.py"), str(spec)])
    assert run.returncode == 0, run.explain()
    got = run.report()["spelled"]
    assert got["status"] == 200, got
    assert got["body"]["authorization_headers"] == 1
    assert got["body"]["aud"] == "alpha"


def test_trace_never_brings_the_token_back(devenv: DevEnv, run_agent: Any) -> None:
    """Issue 12 item 1: with ``access: full`` on a credentialed service that echoes TRACE
    (alpha does, as Apache), no spelling of TRACE reaches it: the agent never sees a token."""
    profile = devenv.base / "grants-full-access.yaml"
    profile.write_text(
        GRANT_PROFILE.replace("access: read-write", "access: full").format(
            token_url=devenv.issuer.token_url, issuer_url=devenv.issuer.base_url,
            alpha_port=devenv.alpha.port, beta_port=devenv.beta.port))
    profile.chmod(0o644)
    env = dataclasses.replace(devenv, profiles=[profile])
    a = f"127.0.0.2:{devenv.alpha.port}"
    head = f"http://{a}/ HTTP/1.1\r\nHost: {a}\r\n"
    cases = {
        "trace": f"TRACE {head}Max-Forwards: 1\r\n\r\n",
        "track": f"TRACK {head}\r\n",
        "lower": f"trace {head}\r\n",
        "override": f"GET {head}X-HTTP-Method-Override: TRACE\r\n\r\n",
        "options_here": f"OPTIONS {head}Max-Forwards: 0\r\n\r\n",
        "control": f"GET {head}\r\n",
    }
    spec = raw_request_spec(env, {k: v.encode() for k, v in cases.items()})
    before = devenv.counts()
    run = run_supervisor(env, [sys.executable, devenv.agent("raw_requests.py"), str(spec)])
    after = devenv.counts()
    assert run.returncode == 0, run.explain()
    report = run.report()
    for name in ("trace", "track", "lower", "override"):
        assert (report[name]["status"], report[name]["error"]) == POLICY, report[name]
    assert report["options_here"]["status"] == 200 and report["options_here"]["error"] is None
    assert report["control"]["status"] == 200, report["control"]  # a token was injected
    assert "Bearer" not in run.stdout and "traced" not in run.stdout
    assert after["alpha"] - before["alpha"] == 1, "only the control GET reached alpha"


def test_ssrf_refusal_names_the_host_not_the_address(devenv: DevEnv, run_agent: Any) -> None:
    """Issue 12 item 11: the agent learns that a name is refused, not where it points (a
    DNS oracle under wildcard hosts); the audit event records the address."""
    a = f"localhost:{devenv.sink.port}"
    spec = raw_request_spec(devenv, {"loopback": f"GET http://{a}/ HTTP/1.1\r\nHost: {a}\r\n\r\n"
                                     .encode()})
    run = run_agent([sys.executable, devenv.agent("raw_requests.py"), str(spec)])
    assert run.returncode == 0, run.explain()
    got = run.report()["loopback"]
    assert (got["status"], got["error"]) == SSRF, got
    detail = got["body"]["detail"]
    assert "localhost" in detail and "127.0.0.1" not in detail and "::1" not in detail
    (event,) = [e for e in run.http_events() if e.get("message") == "ssrf_denied"]
    assert "127.0.0.1" in event["status_detail"] or "::1" in event["status_detail"]


def test_tls_skip_over_a_credentialed_host_is_refused_at_start(
    devenv: DevEnv, run_agent: Any
) -> None:
    """Issue 12 item 9: another profile's 'tls: skip' on alpha (credentialed by the grant
    profile) would make a CONNECT there a raw tunnel: run exits 125 naming both."""
    profile = devenv.base / "skip-alpha.yaml"
    profile.write_text(
        "id: a-skip-alpha\ncredentials: []\nendpoints:\n"
        f"  - host: 127.0.0.2\n    port: {devenv.alpha.port}\n    tls: skip\n"
        "    allowed_ips: [127.0.0.0/8]\n")
    profile.chmod(0o644)
    env = dataclasses.replace(devenv, profiles=[*devenv.profiles, profile])
    before = devenv.counts()
    run = run_supervisor(env, [sys.executable, "-c", "print('agent ran')"])
    assert run.returncode == 125, run.explain()
    assert "agent ran" not in run.stdout
    assert "a-skip-alpha" in run.stderr and "endpoints[0].tls" in run.stderr
    assert f"@127.0.0.2:{devenv.alpha.port}" in run.stderr  # the binding it would bypass
    assert devenv.counts() == before
