"""A development SPIFFE Workload API: real gRPC on a unix socket, real ES256 JWT-SVIDs.

Implements FetchJWTSVID, FetchJWTBundles (stream) and ValidateJWTSVID with py-spiffe's
generated stubs and, like SPIRE, refuses calls without the ``workload.spiffe.io: true``
metadata. Its JWKS is also served over HTTP on loopback so the development token issuer
can verify client assertions. Fault knobs (``faults``) are for tests; never use this in
production: it hands an SVID to anyone who can open the socket.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import grpc
import jwt
from google.protobuf import struct_pb2

from supervisor.devenv.http_util import (
    LoopbackHTTPServer,
    send_bytes,
    send_json,
    wait_for_termination,
)
from supervisor.devenv.keys import ALGORITHM, SigningKey
from supervisor.grants.spiffe_import import ignore_dsa_deprecation

ignore_dsa_deprecation()  # before py-spiffe's first import (see supervisor.grants.spiffe_import)

from spiffe._proto import workload_pb2, workload_pb2_grpc  # noqa: E402

DEFAULT_SPIFFE_ID = "spiffe://example.org/openshell/sandbox"
DEFAULT_SVID_TTL = 300
HEADER_KEY = "workload.spiffe.io"


@dataclass
class WorkloadFaults:
    """Runtime fault knobs (set attributes or call the helpers; they take effect at once)."""

    delay: float = 0.0  # seconds before answering FetchJWTSVID
    fail_next: int = 0  # answer this many FetchJWTSVID calls with fail_code
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    wrong_audience: str | None = None  # replace the SVID's aud with this
    extra_audience: str | None = None  # add this to the SVID's aud


@dataclass
class WorkloadCounters:
    fetch_jwt_svid: int = 0
    fetch_jwt_bundles: int = 0
    validate_jwt_svid: int = 0
    rejected_missing_header: int = 0
    last_audiences: tuple[str, ...] = ()


class _Servicer(workload_pb2_grpc.SpiffeWorkloadAPIServicer):
    def __init__(self, owner: WorkloadAPIServer) -> None:
        self._o = owner

    def _check_header(self, context: grpc.ServicerContext) -> None:
        md = dict(context.invocation_metadata())
        if md.get(HEADER_KEY) != "true":
            with self._o.lock:
                self._o.counters.rejected_missing_header += 1
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "security header missing from request")

    def FetchJWTSVID(
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        self._check_header(context)
        o = self._o
        with o.lock:
            o.counters.fetch_jwt_svid += 1
            audiences = tuple(request.audience)
            o.counters.last_audiences = audiences
            faults = o.faults
            fail = faults.fail_next > 0
            if fail:
                faults.fail_next -= 1
            delay, code = faults.delay, faults.fail_code
            wrong, extra = faults.wrong_audience, faults.extra_audience
        if delay and o.stopping.wait(delay):
            context.abort(grpc.StatusCode.UNAVAILABLE, "server stopping")
        if fail:
            context.abort(code, "injected fault")
        if not audiences or any(not a for a in audiences):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience must be specified")
        if request.spiffe_id and request.spiffe_id != o.spiffe_id:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no identity issued")
        aud: list[str] = [wrong] if wrong is not None else list(audiences)
        if extra is not None:
            aud.append(extra)
        token = o.sign_svid(aud)
        return workload_pb2.JWTSVIDResponse(
            svids=[workload_pb2.JWTSVID(spiffe_id=o.spiffe_id, svid=token)]
        )

    def FetchJWTBundles(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[Any]:
        self._check_header(context)
        with self._o.lock:
            self._o.counters.fetch_jwt_bundles += 1
        yield workload_pb2.JWTBundlesResponse(bundles=self._o.bundles())
        # A real agent keeps the stream open and pushes rotations; we have none to push.
        while context.is_active() and not self._o.stopping.wait(0.2):
            pass

    def ValidateJWTSVID(
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        self._check_header(context)
        with self._o.lock:
            self._o.counters.validate_jwt_svid += 1
        if not request.audience or not request.svid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "audience and svid are required")
        try:
            claims = jwt.decode(
                request.svid,
                self._o.key.public_key,
                algorithms=[ALGORITHM],
                audience=request.audience,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.PyJWTError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "JWT-SVID is not valid")
        struct = struct_pb2.Struct()
        struct.update({k: v for k, v in claims.items() if isinstance(v, str | int | float | list)})
        return workload_pb2.ValidateJWTSVIDResponse(spiffe_id=claims["sub"], claims=struct)


class _JwksHandler(BaseHTTPRequestHandler):
    owner: WorkloadAPIServer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in ("/jwks", "/keys", "/.well-known/jwks.json"):
            send_bytes(self, 200, self.owner.key.jwks_bytes(use="jwt-svid"), "application/json")
        else:
            send_json(self, 404, {"error": "not_found"})

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WorkloadAPIServer:
    """The development Workload API. ``start()``/``stop()``; also a context manager."""

    def __init__(
        self,
        socket_path: str,
        *,
        spiffe_id: str = DEFAULT_SPIFFE_ID,
        issuer: str | None = None,
        svid_ttl: int = DEFAULT_SVID_TTL,
        jwks_host: str = "127.0.0.1",
        jwks_port: int = 0,
        key: SigningKey | None = None,
    ) -> None:
        if not spiffe_id.startswith("spiffe://") or "/" not in spiffe_id[len("spiffe://"):]:
            raise ValueError("spiffe_id must look like spiffe://<trust-domain>/<path>")
        self.socket_path = os.path.abspath(socket_path)
        self.spiffe_id = spiffe_id
        self.trust_domain = spiffe_id[len("spiffe://"):].split("/", 1)[0]
        self.issuer = issuer
        self.svid_ttl = svid_ttl
        self.key = key or SigningKey()
        self.faults = WorkloadFaults()
        self.counters = WorkloadCounters()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._jwks_host, self._jwks_port = jwks_host, jwks_port
        self._grpc: grpc.Server | None = None
        self._http: LoopbackHTTPServer | None = None

    @property
    def address(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def jwks_url(self) -> str:
        if self._http is None:
            raise RuntimeError("server not started")
        return f"{self._http.base_url}/jwks"

    def sign_svid(self, audience: list[str]) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": self.spiffe_id,
            "aud": audience[0] if len(audience) == 1 else audience,
            "iat": now,
            "exp": now + self.svid_ttl,
            "jti": uuid.uuid4().hex,
        }
        if self.issuer:
            claims["iss"] = self.issuer
        return self.key.sign(claims)

    def bundles(self) -> dict[str, bytes]:
        return {f"spiffe://{self.trust_domain}": self.key.jwks_bytes(use="jwt-svid")}

    def start(self) -> WorkloadAPIServer:
        self.stopping.clear()
        handler = type("JwksHandler", (_JwksHandler,), {"owner": self})
        self._http = LoopbackHTTPServer(handler, self._jwks_host, self._jwks_port)
        self._jwks_port = self._http.server.server_address[1]  # keep the port across restarts
        self._http.start()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16,
                                                        thread_name_prefix="devenv-wlapi"))
        workload_pb2_grpc.add_SpiffeWorkloadAPIServicer_to_server(  # type: ignore[no-untyped-call]
            _Servicer(self), server
        )
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        if server.add_insecure_port(f"unix:{self.socket_path}") == 0:
            self._http.stop()
            raise OSError(f"cannot listen on {self.socket_path}")
        server.start()
        self._grpc = server
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._grpc is not None:
            self._grpc.stop(grace=0).wait(5)
            self._grpc = None
        if self._http is not None:
            self._http.stop()
            self._http = None
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)

    def __enter__(self) -> WorkloadAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.devenv.workload_api",
        description="Development SPIFFE Workload API (JWT-SVIDs only) on a unix socket. "
        "For local testing: anyone who can open the socket gets an SVID.",
    )
    parser.add_argument("--socket", required=True, help="unix socket path to listen on")
    parser.add_argument("--spiffe-id", default=DEFAULT_SPIFFE_ID, help="SPIFFE ID of the SVIDs")
    parser.add_argument("--issuer", default=None, help="'iss' claim of the SVIDs (optional)")
    parser.add_argument("--svid-ttl", type=int, default=DEFAULT_SVID_TTL, help="SVID lifetime (s)")
    parser.add_argument("--jwks-port", type=int, default=0,
                        help="loopback port of the HTTP JWKS (0 = any free port)")
    args = parser.parse_args(argv)
    server = WorkloadAPIServer(args.socket, spiffe_id=args.spiffe_id, issuer=args.issuer,
                               svid_ttl=args.svid_ttl, jwks_port=args.jwks_port).start()
    print(f"workload API: unix://{server.socket_path}  JWKS: {server.jwks_url}", flush=True)
    wait_for_termination()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
