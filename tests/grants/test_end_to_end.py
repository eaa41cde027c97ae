"""Provider end to end: real gRPC Workload API + real HTTP issuer, injected clock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.parse

import httpx
import jwt
import pytest

from supervisor.devenv.token_issuer import TokenIssuer
from supervisor.devenv.workload_api import WorkloadAPIServer
from supervisor.grants.errors import GrantError
from supervisor.grants.http_client import TokenEndpointClient
from supervisor.grants.provider import TokenProvider
from supervisor.grants.workload import WorkloadSvidSource

from .conftest import SVID_AUDIENCE, TRUST_DOMAIN, FakeClock, make_binding

pytestmark = pytest.mark.anyio


def real_provider(workload: WorkloadAPIServer, clock: FakeClock, *, grant_timeout: float = 5,
                  deadline: float = 2, **kw: object) -> TokenProvider:
    return TokenProvider(WorkloadSvidSource(workload.address, deadline=deadline),
                         TokenEndpointClient(timeout=grant_timeout), clock=clock,
                         rand=lambda: 0.5, refresh_interval=None, **kw)  # type: ignore[arg-type]


async def test_hundred_concurrent_cold_requests(workload: WorkloadAPIServer,
                                                issuer: TokenIssuer) -> None:
    issuer.faults.delay = 0.2  # keep the grant in flight while the misses pile up
    p = real_provider(workload, FakeClock())
    b = make_binding(issuer.token_url)
    try:
        tokens = await asyncio.gather(*(p.token_for(b) for _ in range(100)))
    finally:
        await p.aclose()
    assert len(set(tokens)) == 1
    assert workload.counters.fetch_jwt_svid == 1 and issuer.requests == 1
    assert (p.stats.svid_fetches, p.stats.grants) == (1, 1)
    # The SVID sent as the assertion was for exactly the binding's SVID audience.
    assert workload.counters.last_audiences == (b.grant.jwt_svid_audience,)
    assert issuer.submissions[-1].assertion_claims["aud"] == b.grant.jwt_svid_audience
    claims = jwt.decode(tokens[0], options={"verify_signature": False})
    assert claims["aud"] == "alpha" and claims["azp"] == workload.spiffe_id


async def test_hostile_expires_in_clamped(workload: WorkloadAPIServer,
                                          issuer: TokenIssuer) -> None:
    issuer.faults.expires_in = 10**12
    clock = FakeClock()
    p = real_provider(workload, clock)
    b = make_binding(issuer.token_url)
    try:
        first = await p.token_for(b)
        clock.advance(3569)
        assert await p.token_for(b) == first
        clock.advance(1)  # 3570 s = 3600 cap - 30 s skew
        assert await p.token_for(b) != first
    finally:
        await p.aclose()
    assert issuer.requests == 2


async def test_refresh_ahead_replaces_before_expiry(workload: WorkloadAPIServer,
                                                    issuer: TokenIssuer) -> None:
    issuer.faults.expires_in = 130  # lifetime 100
    clock = FakeClock()
    p = real_provider(workload, clock)
    b = make_binding(issuer.token_url)
    try:
        first = await p.token_for(b)
        clock.advance(81)
        assert await p.refresh_due() == 1
        second = await p.token_for(b)
        assert second != first and issuer.requests == 2  # replaced at t=81 < 100
    finally:
        await p.aclose()


async def test_failing_issuer_bounded_by_backoff(workload: WorkloadAPIServer,
                                                 issuer: TokenIssuer) -> None:
    issuer.faults.status, issuer.faults.body = 500, b"down"
    clock = FakeClock(0.0)
    p = real_provider(workload, clock)
    b = make_binding(issuer.token_url)
    try:
        for _ in range(70):  # 7 simulated seconds, 10 requests per second
            with pytest.raises(GrantError):
                await p.token_for(b)
            clock.advance(0.1)
        # rand=0.5 (no jitter): attempts at t=0, 1, 3 → 3 calls in 7 s.
        assert issuer.requests == 3
        issuer.reset_faults()
        clock.advance(0.1 + 4)  # past the 4 s backoff that started at t=3
        assert await p.token_for(b)
    finally:
        await p.aclose()


async def test_workload_api_down_then_back(sock_dir: str, issuer: TokenIssuer,
                                           workload: WorkloadAPIServer) -> None:
    clock = FakeClock()
    p = real_provider(workload, clock, deadline=0.5)
    b = make_binding(issuer.token_url)
    try:
        workload.stop()
        with pytest.raises(GrantError) as info:
            await p.token_for(b)
        assert info.value.step == "workload_api" and issuer.requests == 0
        workload.start()
        clock.advance(1)  # backoff over
        assert await p.token_for(b)
    finally:
        await p.aclose()


async def test_svid_audience_mismatch_never_reaches_issuer(workload: WorkloadAPIServer,
                                                           issuer: TokenIssuer) -> None:
    workload.faults.extra_audience = "https://other.relying.party"
    p = real_provider(workload, FakeClock())
    try:
        with pytest.raises(GrantError, match="audience"):
            await p.token_for(make_binding(issuer.token_url))
    finally:
        await p.aclose()
    assert issuer.requests == 0


# -- the development issuer's own checks ------------------------------------------------


def post(issuer: TokenIssuer, form: dict[str, str]) -> httpx.Response:
    return httpx.post(issuer.token_url, content=urllib.parse.urlencode(form),
                      headers={"Content-Type": "application/x-www-form-urlencoded"},
                      trust_env=False)


def base_form(workload: WorkloadAPIServer, **override: str) -> dict[str, str]:
    form = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": workload.sign_svid([SVID_AUDIENCE]), "audience": "alpha"}
    form.update(override)
    return form


@pytest.mark.parametrize("override,error", [
    ({"client_id": "x"}, "invalid_request"),
    ({"grant_type": "password"}, "unsupported_grant_type"),
    ({"client_assertion_type": "urn:nope"}, "invalid_request"),
    ({"client_assertion": "not-a-jwt"}, "invalid_client"),
    ({"client_assertion": ""}, "invalid_request"),
])
def test_issuer_rejects(workload: WorkloadAPIServer, issuer: TokenIssuer,
                        override: dict[str, str], error: str) -> None:
    resp = post(issuer, base_form(workload, **override))
    assert resp.status_code in (400, 401) and resp.json()["error"] == error


def test_issuer_rejects_foreign_trust_domain_and_expired(
    sock_dir: str, workload: WorkloadAPIServer, issuer: TokenIssuer
) -> None:
    # Signed with the trusted key, but for another trust domain / already expired.
    foreign = WorkloadAPIServer(f"{sock_dir}/f.sock", spiffe_id="spiffe://evil.org/x",
                                key=workload.key)
    resp = post(issuer, base_form(foreign))
    assert resp.status_code == 401 and "trust domain" in resp.json()["error_description"]
    expired = WorkloadAPIServer(f"{sock_dir}/e.sock", svid_ttl=-10, key=workload.key)
    resp = post(issuer, base_form(expired))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    assert post(issuer, base_form(workload)).status_code == 200  # control


def test_issuer_rejects_unknown_signer(sock_dir: str, issuer: TokenIssuer) -> None:
    stranger = WorkloadAPIServer(f"{sock_dir}/s.sock")  # same ID, its own key
    resp = post(issuer, base_form(stranger))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


def test_issuer_rejects_repeated_fields(workload: WorkloadAPIServer, issuer: TokenIssuer) -> None:
    body = urllib.parse.urlencode(base_form(workload)) + "&audience=beta"
    resp = httpx.post(issuer.token_url, content=body, trust_env=False,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 400


@pytest.mark.parametrize("module", ["supervisor.devenv.workload_api",
                                    "supervisor.devenv.token_issuer"])
def test_standalone_help(module: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                         text=True, timeout=30, check=True)
    assert "usage:" in out.stdout


def test_standalone_servers_run(sock_dir: str) -> None:
    wl_cmd = [sys.executable, "-m", "supervisor.devenv.workload_api", "--socket",
              f"{sock_dir}/a.sock"]
    with subprocess.Popen(wl_cmd, stdout=subprocess.PIPE, text=True) as wl:
        try:
            assert wl.stdout is not None
            jwks = wl.stdout.readline().rsplit("JWKS: ", 1)[1].strip()
            assert httpx.get(jwks, trust_env=False).json()["keys"][0]["kty"] == "EC"
            iss_cmd = [sys.executable, "-m", "supervisor.devenv.token_issuer",
                       "--svid-jwks-url", jwks, "--expected-svid-audience", "a",
                       "--trust-domain", TRUST_DOMAIN]
            with subprocess.Popen(iss_cmd, stdout=subprocess.PIPE, text=True) as iss:
                try:
                    assert iss.stdout is not None
                    token_url = iss.stdout.readline().split()[2]
                    resp = httpx.post(token_url, data={"grant_type": "x"}, trust_env=False)
                    assert resp.status_code == 400
                finally:
                    iss.terminate()
                    assert iss.wait(10) == 0
        finally:
            wl.terminate()
            assert wl.wait(10) == 0
