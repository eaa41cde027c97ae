"""Workload API client against the real development server (gRPC over a tmp unix socket)."""

from __future__ import annotations

import socket
import threading
import time

import grpc
import jwt
import pytest
from spiffe._proto import workload_pb2, workload_pb2_grpc

from supervisor.devenv.workload_api import WorkloadAPIServer
from supervisor.grants.errors import GrantError
from supervisor.grants.workload import WorkloadSvidSource, normalize_address
from tests.grants.conftest import fetch_refusal

pytestmark = pytest.mark.anyio

AUD = "https://issuer.test/realms/sandbox"


@pytest.mark.parametrize("given,expected", [
    ("unix:///run/spire/agent.sock", "unix:/run/spire/agent.sock"),
    ("/run/spire/agent.sock", "unix:/run/spire/agent.sock"),
    ("unix:/run/spire/agent.sock", "unix:/run/spire/agent.sock"),
    ("unix:///run/spire/../spire/agent.sock", "unix:/run/spire/agent.sock"),
])
def test_normalize_address(given: str, expected: str) -> None:
    assert normalize_address(given) == expected


@pytest.mark.parametrize("bad", ["tcp://127.0.0.1:8081", "relative.sock", "unix://host/x",
                                 "unix:relative", "/a?b", ""])
def test_normalize_address_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(bad)


async def test_fetch_exactly_one_audience(workload: WorkloadAPIServer) -> None:
    src = WorkloadSvidSource(workload.address, deadline=2)
    try:
        svid = await src.fetch(AUD)
    finally:
        await src.aclose()
    # The server saw one audience (not one per character) and the SVID carries only it.
    assert workload.counters.last_audiences == (AUD,)
    claims = jwt.decode(svid, workload.key.public_key, algorithms=["ES256"], audience=AUD)
    assert claims["aud"] == AUD and claims["sub"] == workload.spiffe_id


async def test_plain_path_address_works(workload: WorkloadAPIServer) -> None:
    src = WorkloadSvidSource(workload.socket_path, deadline=2)
    try:
        assert await src.fetch("x")
    finally:
        await src.aclose()


@pytest.mark.parametrize("knob", ["wrong_audience", "extra_audience"])
async def test_svid_with_other_audience_rejected(workload: WorkloadAPIServer, knob: str) -> None:
    setattr(workload.faults, knob, "https://someone.else")
    err = await fetch_refusal(workload.address, AUD, deadline=2)
    assert err.step == "workload_api"
    assert "eyJ" not in str(err)  # no JWT in the message


@pytest.mark.parametrize("code,retryable", [
    (grpc.StatusCode.UNAVAILABLE, True),
    (grpc.StatusCode.INVALID_ARGUMENT, False),
    (grpc.StatusCode.PERMISSION_DENIED, False),
])
async def test_status_classification(workload: WorkloadAPIServer, code: grpc.StatusCode,
                                     retryable: bool) -> None:
    workload.faults.fail_next, workload.faults.fail_code = 1, code
    src = WorkloadSvidSource(workload.address, deadline=2)
    try:
        with pytest.raises(GrantError) as info:
            await src.fetch(AUD)
        assert info.value.retryable is retryable
        assert code.name in str(info.value) and "injected" not in str(info.value)
        assert await src.fetch(AUD)  # next call succeeds on a fresh channel
    finally:
        await src.aclose()


async def test_missing_socket_fails_fast(sock_dir: str) -> None:
    err = await fetch_refusal(f"{sock_dir}/absent.sock", AUD, deadline=1)
    assert err.retryable and "not found" in str(err)


async def test_hanging_server_hits_deadline(workload: WorkloadAPIServer) -> None:
    workload.faults.delay = 30
    start = time.monotonic()
    err = await fetch_refusal(workload.address, AUD, deadline=0.5)
    assert err.retryable and "deadline" in str(err)
    assert time.monotonic() - start < 10  # bounded by the deadline, not the 30 s delay


async def test_silent_socket_hits_deadline(sock_dir: str) -> None:
    # A listener that accepts and never speaks HTTP/2.
    path = f"{sock_dir}/silent.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    src = WorkloadSvidSource(path, deadline=0.5)
    try:
        with pytest.raises(GrantError) as info:
            await src.fetch(AUD)
        assert info.value.retryable
    finally:
        await src.aclose()
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()


async def test_restarted_agent_is_picked_up(sock_dir: str) -> None:
    path = f"{sock_dir}/agent.sock"
    first = WorkloadAPIServer(path).start()
    src = WorkloadSvidSource(path, deadline=1)
    try:
        assert await src.fetch(AUD)
        first.stop()
        with pytest.raises(GrantError) as info:
            await src.fetch(AUD)
        assert info.value.retryable
        second = WorkloadAPIServer(path).start()  # new process, new key, same path
        try:
            svid = await src.fetch(AUD)
            assert jwt.get_unverified_header(svid)["kid"] == second.key.kid
            assert second.counters.fetch_jwt_svid == 1
        finally:
            second.stop()
    finally:
        await src.aclose()


async def test_restart_with_stale_socket_file(sock_dir: str) -> None:
    # The socket file stays but nobody listens (agent crashed): UNAVAILABLE, then recovery.
    path = f"{sock_dir}/agent.sock"
    server = WorkloadAPIServer(path).start()
    src = WorkloadSvidSource(path, deadline=1)
    try:
        assert await src.fetch(AUD)
        server.stop()
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)  # file exists, not listening → connection refused
        with pytest.raises(GrantError) as info:
            await src.fetch(AUD)
        assert info.value.retryable
        stale.close()
        server.start()
        assert await src.fetch(AUD)
    finally:
        await src.aclose()
        server.stop()


def test_server_requires_security_header(workload: WorkloadAPIServer) -> None:
    with grpc.insecure_channel(f"unix:{workload.socket_path}") as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        md = (("workload.spiffe.io", "true"),)
        resp = stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["x"]), timeout=2,
                                 metadata=md)
        assert resp.svids[0].spiffe_id == workload.spiffe_id
        with pytest.raises(grpc.RpcError) as info:
            stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=[]), timeout=2, metadata=md)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert workload.counters.rejected_missing_header == 1


def test_bundles_and_validate_via_py_spiffe(workload: WorkloadAPIServer) -> None:
    from spiffe import TrustDomain, WorkloadApiClient

    with WorkloadApiClient(workload.address, default_timeout=2) as client:
        bundles = client.fetch_jwt_bundles()
        bundle = bundles.get_bundle_for_trust_domain(TrustDomain("example.org"))
        assert bundle is not None and bundle.get_jwt_authority(workload.key.kid) is not None
        svid = client.fetch_jwt_svid(audience={"svc"})
        assert client.validate_jwt_svid(svid.token, "svc").spiffe_id == svid.spiffe_id
        with pytest.raises(Exception):
            client.validate_jwt_svid(svid.token, "other")
    # The HTTP JWKS serves the same key.
    from supervisor.devenv.http_util import fetch_json

    assert fetch_json(workload.jwks_url)["keys"][0]["kid"] == workload.key.kid
