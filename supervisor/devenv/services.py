"""Protected demo services ("alpha", "beta"): real HTTP servers that accept a request only
with a valid access token from the development token issuer, for their own audience and
scope.

A service answers ``GET /`` (any path) with JSON describing the token it accepted
(audience, scope, the SPIFFE ID the token was issued to) and ``401`` with a reason
otherwise. It never echoes the token. Verification uses the issuer's JWKS, fetched over
HTTP without any environment proxy (a demo service must not be fooled by HTTP_PROXY).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt

_JWKS_REFRESH_SECONDS = 30.0


class _JwksCache:
    """Keys of the token issuer, refetched at most every 30 s or on an unknown ``kid``."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        # An opener with an empty ProxyHandler ignores HTTP_PROXY and friends.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def key(self, kid: str) -> Any:
        with self._lock:
            stale = time.monotonic() - self._fetched_at > _JWKS_REFRESH_SECONDS
            if kid not in self._keys or stale:
                self._refresh()
            return self._keys.get(kid)

    def _refresh(self) -> None:
        with self._opener.open(self._url, timeout=5) as resp:
            doc = json.loads(resp.read(65536))
        keys: dict[str, Any] = {}
        for jwk in doc.get("keys", []):
            if isinstance(jwk, Mapping) and isinstance(jwk.get("kid"), str):
                keys[jwk["kid"]] = jwt.PyJWK.from_dict(dict(jwk)).key
        self._keys = keys
        self._fetched_at = time.monotonic()


@dataclass
class ServiceLog:
    """What a service accepted and refused (for the demo's report and for tests)."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ProtectedService:
    """One protected service on 127.0.0.1. ``required`` is both its audience and its scope."""

    def __init__(
        self,
        name: str,
        jwks_url: str,
        *,
        issuer: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.name = name
        self.issuer = issuer
        self.log = ServiceLog()
        self._jwks = _JwksCache(jwks_url)
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}/"

    def start(self) -> ProtectedService:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"service-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """Return the accepted claims or raise ValueError with a reason (never the token)."""
        if not authorization or not authorization.startswith("Bearer "):
            raise ValueError("missing bearer token")
        token = authorization[len("Bearer ") :]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise ValueError("malformed token") from None
        kid = header.get("kid")
        key = self._jwks.key(kid) if isinstance(kid, str) else None
        if key is None:
            raise ValueError("unknown signing key")
        options = {"require": ["exp", "aud", "scope"]}
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["ES256"],
                audience=self.name,
                issuer=self.issuer,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.InvalidAudienceError:
            raise ValueError(f"wrong audience (need {self.name!r})") from None
        except jwt.PyJWTError as err:
            raise ValueError(f"invalid token: {type(err).__name__}") from None
        scopes = str(claims.get("scope", "")).split()
        if self.name not in scopes:
            raise ValueError(f"missing scope {self.name!r}")
        return claims

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = f"demo-{service.name}"

            def do_GET(self) -> None:
                try:
                    claims = service.verify(self.headers.get("Authorization"))
                except ValueError as err:
                    with service.log.lock:
                        service.log.refused.append(str(err))
                    self._reply(401, {"service": service.name, "error": str(err)})
                    return
                seen = {
                    "service": service.name,
                    "aud": claims.get("aud"),
                    "scope": claims.get("scope"),
                    "subject": claims.get("azp") or claims.get("sub"),
                    "authorization_headers": len(self.headers.get_all("Authorization") or []),
                }
                with service.log.lock:
                    service.log.accepted.append(seen)
                self._reply(200, seen)

            do_HEAD = do_GET

            def do_TRACE(self) -> None:
                """Echo the request as Apache does by default (tests prove the proxy never
                lets a TRACE through: the echo would carry the injected token)."""
                with service.log.lock:
                    service.log.accepted.append({"service": service.name, "traced": True})
                data = (self.requestline + "\r\n" + str(self.headers)).encode("latin-1")
                self.send_response(200)
                self.send_header("Content-Type", "message/http")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_TRACK = do_TRACE

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet: the demo prints its own report

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.devenv.services",
        description="A protected demo service: accepts requests carrying an access token "
        "from the development token issuer whose audience and scope equal --name.",
    )
    parser.add_argument("--name", required=True, help="service name = required audience and scope")
    parser.add_argument("--jwks-url", required=True, help="the token issuer's JWKS URL")
    parser.add_argument("--issuer", help="required 'iss' claim (optional)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    service = ProtectedService(
        args.name, args.jwks_url, issuer=args.issuer, host=args.host, port=args.port
    )
    print(f"service {args.name} listening on {args.host}:{service.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        service._server.serve_forever()


if __name__ == "__main__":
    main()
