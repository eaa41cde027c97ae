"""Fixtures of the token-grant tests: real dev servers on a tmp unix socket and loopback."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator

import pytest

from supervisor.devenv.token_issuer import TokenIssuer
from supervisor.devenv.workload_api import WorkloadAPIServer
from supervisor.grants.errors import GrantError
from supervisor.grants.workload import WorkloadSvidSource
from supervisor.profiles.model import JWT_BEARER, Binding, Endpoint, GrantSpec

SVID_AUDIENCE = "https://issuer.test/realms/sandbox"
TRUST_DOMAIN = "example.org"


async def fetch_refusal(address: str, audience: str, deadline: float) -> GrantError:
    """The GrantError one fetch from a fresh source raises (the source closed after it)."""
    src = WorkloadSvidSource(address, deadline=deadline)
    try:
        with pytest.raises(GrantError) as info:
            await src.fetch(audience)
    finally:
        await src.aclose()
    return info.value


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingListener:
    """A loopback TCP listener that counts connections and closes them at once."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def make_binding(
    token_endpoint: str,
    *,
    binding_id: str = "demo/token@alpha.test:443",
    svid_audience: str = SVID_AUDIENCE,
    audience: str = "alpha",
    scopes: tuple[str, ...] = ("alpha", "profile"),
    cache_ttl: int | None = None,
    assertion_type: str = JWT_BEARER,
) -> Binding:
    endpoint = Endpoint(
        host="alpha.test", ports=(443,), path=None, protocol="rest", tls="",
        access="full", enforcement="enforce", allowed_ips=(),
    )
    grant = GrantSpec(
        token_endpoint=token_endpoint, jwt_svid_audience=svid_audience,
        client_assertion_type=assertion_type, audience=audience, scopes=scopes,
        cache_ttl_seconds=cache_ttl,
    )
    return Binding(
        id=binding_id, profile_id="demo", credential_name="token", host="alpha.test",
        port=443, path=None, auth_style="bearer", header_name="Authorization",
        grant=grant, endpoint=endpoint,
    )


@pytest.fixture
def sock_dir() -> Iterator[str]:
    # Short path: unix socket paths are limited to 108 bytes.
    d = tempfile.mkdtemp(prefix="wl-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def workload(sock_dir: str) -> Iterator[WorkloadAPIServer]:
    server = WorkloadAPIServer(f"{sock_dir}/agent.sock").start()
    yield server
    server.stop()


@pytest.fixture
def issuer(workload: WorkloadAPIServer) -> Iterator[TokenIssuer]:
    srv = TokenIssuer(jwks_url=workload.jwks_url, expected_svid_audience=SVID_AUDIENCE,
                      trust_domain=TRUST_DOMAIN).start()
    yield srv
    srv.stop()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    lst = CountingListener()
    yield lst
    lst.close()


@pytest.fixture
def anyio_backend() -> str:
    # Async tests run on asyncio through anyio's pytest plugin (no pytest-asyncio needed).
    return "asyncio"
