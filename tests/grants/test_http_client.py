"""Token endpoint client against the real development issuer over loopback HTTP(S)."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from supervisor.devenv.token_issuer import TokenIssuer
from supervisor.devenv.workload_api import WorkloadAPIServer
from supervisor.grants.errors import GrantError
from supervisor.grants.http_client import TokenEndpointClient
from supervisor.profiles.model import JWT_BEARER, JWT_SPIFFE

from .conftest import SVID_AUDIENCE, TRUST_DOMAIN, CountingListener, make_binding

pytestmark = pytest.mark.anyio


def svid_for(workload: WorkloadAPIServer, audience: str = SVID_AUDIENCE) -> str:
    return workload.sign_svid([audience])


async def grant(issuer: TokenIssuer, workload: WorkloadAPIServer, *, timeout: float = 5,
                **kw: object) -> object:
    client = TokenEndpointClient(timeout=timeout)
    try:
        b = make_binding(issuer.token_url, **kw)  # type: ignore[arg-type]
        return await client.exchange(b.grant, svid_for(workload))
    finally:
        await client.aclose()


async def test_success_and_exact_form(issuer: TokenIssuer, workload: WorkloadAPIServer) -> None:
    resp = await grant(issuer, workload)
    sub = issuer.submissions[-1]
    assert sub.fields == {
        "grant_type": ["client_credentials"],
        "client_assertion_type": [JWT_BEARER],
        "client_assertion": ["<redacted>"],
        "audience": ["alpha"],
        "scope": ["alpha profile"],
    }
    assert "authorization" not in sub.header_names
    assert sub.assertion_claims["aud"] == SVID_AUDIENCE
    token = resp.access_token  # type: ignore[attr-defined]
    # The issuer's /jwks verifies what it issued.
    jwks = httpx.get(issuer.jwks_url, trust_env=False).json()
    claims = jwt.decode(token, jwt.PyJWK(jwks["keys"][0]).key, algorithms=["ES256"],
                        audience="alpha")
    assert claims["scope"] == "alpha profile" and claims["azp"] == workload.spiffe_id


async def test_empty_audience_and_scopes_not_sent(issuer: TokenIssuer,
                                                  workload: WorkloadAPIServer) -> None:
    await grant(issuer, workload, audience="", scopes=(), assertion_type=JWT_SPIFFE)
    assert set(issuer.submissions[-1].fields) == {"grant_type", "client_assertion_type",
                                                  "client_assertion"}


@pytest.mark.parametrize("token", ["abc\r\nX-Evil: 1", "abc def", "tök", "ab=cd", "", "abc\n"])
async def test_bad_access_token_rejected(issuer: TokenIssuer, workload: WorkloadAPIServer,
                                         token: str) -> None:
    issuer.faults.access_token = token
    with pytest.raises(GrantError) as info:
        await grant(issuer, workload)
    assert info.value.step == "response"


async def test_dpop_token_type_rejected(issuer: TokenIssuer, workload: WorkloadAPIServer) -> None:
    issuer.faults.token_type = "DPoP"
    with pytest.raises(GrantError, match="Bearer"):
        await grant(issuer, workload)


@pytest.mark.parametrize("value", [-5, "300", True, 1.5])
async def test_bad_expires_in_rejected(issuer: TokenIssuer, workload: WorkloadAPIServer,
                                       value: object) -> None:
    issuer.faults.expires_in = value
    with pytest.raises(GrantError, match="expires_in"):
        await grant(issuer, workload)


async def test_non_json_200(issuer: TokenIssuer, workload: WorkloadAPIServer) -> None:
    issuer.faults.status, issuer.faults.body = 200, b"<html>ok</html>"
    issuer.faults.content_type = "text/html"
    with pytest.raises(GrantError, match="not a JSON object"):
        await grant(issuer, workload)


async def test_500(issuer: TokenIssuer, workload: WorkloadAPIServer) -> None:
    issuer.faults.status, issuer.faults.body = 500, b"Traceback: internal secret"
    with pytest.raises(GrantError) as info:
        await grant(issuer, workload)
    assert info.value.retryable and "secret" not in str(info.value)


async def test_401_error_fields_sanitized(issuer: TokenIssuer,
                                          workload: WorkloadAPIServer) -> None:
    issuer.faults.status = 401
    issuer.faults.body = json.dumps({"error": "invalid_client\n",
                                     "error_description": "a" * 300,
                                     "debug": "leak-me"}).encode()
    with pytest.raises(GrantError) as info:
        await grant(issuer, workload)
    msg = info.value.audit_detail or ""
    assert "invalid_client?" in msg and "a" * 256 in msg and "a" * 257 not in msg
    assert "\n" not in msg and "leak-me" not in msg and not info.value.retryable
    assert str(info.value) == "token_endpoint: token endpoint answered 401"


async def test_real_issuer_rejection_reaches_us_sanitized(issuer: TokenIssuer,
                                                          workload: WorkloadAPIServer) -> None:
    client = TokenEndpointClient(timeout=5)
    try:
        b = make_binding(issuer.token_url)
        with pytest.raises(GrantError, match=r"answered 401: invalid_client$") as info:
            await client.exchange(b.grant, svid_for(workload, "https://other"))
        assert not info.value.retryable
        # The issuer's description is kept for the audit log, not for the agent.
        assert "audience mismatch" in (info.value.audit_detail or "")
        assert "audience mismatch" not in str(info.value)
    finally:
        await client.aclose()


async def test_redirect_not_followed(issuer: TokenIssuer, workload: WorkloadAPIServer,
                                     listener: CountingListener) -> None:
    issuer.faults.redirect = f"{listener.url}/steal"
    with pytest.raises(GrantError, match="302"):
        await grant(issuer, workload)
    time.sleep(0.2)  # give a (wrong) follow-up connection time to show up
    assert listener.connections == 0


async def test_slow_issuer_times_out(issuer: TokenIssuer, workload: WorkloadAPIServer) -> None:
    issuer.faults.delay = 30
    start = time.monotonic()
    with pytest.raises(GrantError, match="timed out") as info:
        await grant(issuer, workload, timeout=0.5)
    assert info.value.retryable
    assert time.monotonic() - start < 10  # the total deadline, not the 30 s delay


async def test_body_cap(issuer: TokenIssuer, workload: WorkloadAPIServer) -> None:
    issuer.faults.status = 200
    issuer.faults.body = json.dumps({"access_token": "a" * (70 * 1024)}).encode()
    with pytest.raises(GrantError, match="too large"):
        await grant(issuer, workload)


async def test_env_proxy_and_netrc_ignored(issuer: TokenIssuer, workload: WorkloadAPIServer,
                                           listener: CountingListener,
                                           monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy",
                 "all_proxy"):
        monkeypatch.setenv(name, listener.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login user password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    resp = await grant(issuer, workload)
    assert resp.access_token  # type: ignore[attr-defined]
    assert listener.connections == 0
    assert "authorization" not in issuer.submissions[-1].header_names
    # Control: a client that trusts the environment does go to the listener.
    async with httpx.AsyncClient(trust_env=True) as trusting:
        with pytest.raises(httpx.HTTPError):
            await trusting.post(issuer.token_url, data={"a": "b"})
    assert listener.connections == 1


async def test_plain_http_to_public_host_refused() -> None:
    client = TokenEndpointClient(timeout=1)
    try:
        b = make_binding("http://issuer.example.com/token")
        with pytest.raises(GrantError, match="https") as info:
            await client.exchange(b.grant, "svid")
        assert not info.value.retryable
    finally:
        await client.aclose()


async def test_unreachable_endpoint(listener: CountingListener) -> None:
    listener.close()  # port now refuses connections
    client = TokenEndpointClient(timeout=2)
    try:
        with pytest.raises(GrantError, match="unreachable"):
            await client.exchange(make_binding(f"{listener.url}/token").grant, "svid")
    finally:
        await client.aclose()


def _tls_material(tmp_path: Path) -> tuple[ssl.SSLContext, str]:
    """A throwaway CA and a leaf for 127.0.0.1; returns (server context, CA PEM path)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "grant test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "leaf.pem"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain)
    return ctx, str(ca_path)


async def test_tls_uses_system_roots_plus_ca_bundle(workload: WorkloadAPIServer,
                                                    tmp_path: Path) -> None:
    server_ctx, ca_pem = _tls_material(tmp_path)
    issuer = TokenIssuer(jwks_url=workload.jwks_url, expected_svid_audience=SVID_AUDIENCE,
                         trust_domain=TRUST_DOMAIN, tls=server_ctx).start()
    try:
        assert issuer.token_url.startswith("https://127.0.0.1:")
        spec = make_binding(issuer.token_url).grant
        untrusting = TokenEndpointClient(timeout=3)
        try:
            with pytest.raises(GrantError, match="unreachable"):
                await untrusting.exchange(spec, svid_for(workload))
        finally:
            await untrusting.aclose()
        trusting = TokenEndpointClient(timeout=3, ca_bundle=ca_pem)
        try:
            assert (await trusting.exchange(spec, svid_for(workload))).access_token
        finally:
            await trusting.aclose()
    finally:
        issuer.stop()


async def test_token_endpoint_is_direct_unless_listed(workload: WorkloadAPIServer,
                                                      tmp_path: Path) -> None:
    from supervisor.proxy.upstream_proxy import parse_upstream_proxy
    from tests.proxy.connect_proxy import RecordingConnectProxy

    server_ctx, ca_pem = _tls_material(tmp_path)
    issuer = TokenIssuer(jwks_url=workload.jwks_url, expected_svid_audience=SVID_AUDIENCE,
                         trust_domain=TRUST_DOMAIN, tls=server_ctx).start()
    auth = "Basic " + base64.b64encode(b"svc:pw").decode()
    try:
        spec = make_binding(issuer.token_url).grant
        with RecordingConnectProxy(require_auth=auth) as proxy:
            url = proxy.url.replace("://", "://svc:pw@")
            for listed, expect_tunnel in (("", False), ("other.example", False),
                                          ("127.0.0.1", True), ("127.0.0.0/8", True)):
                via = parse_upstream_proxy(url, token_endpoint_hosts=listed)
                client = TokenEndpointClient(timeout=3, ca_bundle=ca_pem, upstream_proxy=via)
                try:
                    assert (await client.exchange(spec, svid_for(workload))).access_token
                finally:
                    await client.aclose()
                port = issuer.token_url.split(":")[2].split("/")[0]
                assert proxy.targets() == ([f"127.0.0.1:{port}"] if expect_tunnel else [])
                assert all(s.method == "CONNECT" and s.authorization == auth for s in proxy.seen)
                proxy.seen.clear()
    finally:
        issuer.stop()


async def test_http_token_endpoint_never_crosses_the_proxy(issuer: TokenIssuer,
                                                           workload: WorkloadAPIServer) -> None:
    from supervisor.proxy.upstream_proxy import parse_upstream_proxy
    from tests.proxy.connect_proxy import RecordingConnectProxy

    with RecordingConnectProxy() as proxy:
        via = parse_upstream_proxy(proxy.url, token_endpoint_hosts="127.0.0.1")
        client = TokenEndpointClient(timeout=3, upstream_proxy=via)
        try:
            with pytest.raises(GrantError, match="never sent through the upstream proxy") as info:
                await client.exchange(make_binding(issuer.token_url).grant, svid_for(workload))
            assert not info.value.retryable
        finally:
            await client.aclose()
        assert proxy.seen == []
        assert len(issuer.submissions) == 0


async def test_a_given_context_is_the_trust(workload: WorkloadAPIServer, tmp_path: Path) -> None:
    # The proxy hands its upstream context over (services): that context decides, and the
    # client builds no other (ca_bundle is then only the proxy's business).
    from supervisor.proxy.tls_upstream import build_upstream_context

    server_ctx, ca_pem = _tls_material(tmp_path)
    issuer = TokenIssuer(jwks_url=workload.jwks_url, expected_svid_audience=SVID_AUDIENCE,
                         trust_domain=TRUST_DOMAIN, tls=server_ctx).start()
    try:
        spec = make_binding(issuer.token_url).grant
        for tls, ok in ((build_upstream_context(ca_pem), True),
                        (build_upstream_context(None), False)):
            client = TokenEndpointClient(timeout=3, ca_bundle=ca_pem, tls=tls)
            try:
                if ok:
                    assert (await client.exchange(spec, svid_for(workload))).access_token
                else:
                    with pytest.raises(GrantError, match="unreachable"):
                        await client.exchange(spec, svid_for(workload))
            finally:
                await client.aclose()
    finally:
        # Off the loop: the refused connection's socket closes on the loop's next turn.
        await asyncio.to_thread(issuer.stop)


async def test_provider_passes_the_proxy_context_on(workload: WorkloadAPIServer,
                                                    tmp_path: Path) -> None:
    # create_token_provider(tls=...) as services calls it: the grant succeeds only because
    # that context trusts the issuer (no ca_bundle is given here).
    from supervisor.grants.provider import create_token_provider
    from supervisor.proxy.tls_upstream import build_upstream_context

    server_ctx, ca_pem = _tls_material(tmp_path)
    issuer = TokenIssuer(jwks_url=workload.jwks_url, expected_svid_audience=SVID_AUDIENCE,
                         trust_domain=TRUST_DOMAIN, tls=server_ctx).start()
    try:
        binding = make_binding(issuer.token_url)
        for tls, ok in ((build_upstream_context(ca_pem), True), (None, False)):
            provider = create_token_provider(workload.address, tls=tls, grant_timeout=3)
            try:
                if ok:
                    assert await provider.token_for(binding)
                else:
                    with pytest.raises(GrantError, match="unreachable"):
                        await provider.token_for(binding)
            finally:
                await provider.aclose()
    finally:
        # Off the loop: the refused connection's socket closes on the loop's next turn.
        await asyncio.to_thread(issuer.stop)
