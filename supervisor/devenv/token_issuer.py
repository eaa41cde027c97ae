"""A development OAuth token endpoint: RFC 7523 client assertions carrying JWT-SVIDs.

Real HTTP on loopback. It verifies the assertion against the Workload API's JWKS (fetched
over HTTP), checks ``aud`` = its expected SVID audience, ``exp``, and that ``sub`` is in
its trust domain; refuses ``client_id``; and issues ES256 access tokens (``aud`` = the
requested audience, ``scope``, ``azp`` = the SVID subject) verifiable at ``/jwks``.
Errors are RFC 6749 JSON. Fault knobs (``faults``) and the record of recent form
submissions are for tests.
"""

from __future__ import annotations

import argparse
import collections
import ssl
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt

from supervisor.devenv.http_util import (
    LoopbackHTTPServer,
    fetch_json,
    send_bytes,
    send_json,
    wait_for_termination,
)
from supervisor.devenv.keys import ALGORITHM, SigningKey, key_from_jwks

ASSERTION_TYPES = frozenset({
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe",
})
MAX_FORM_BYTES = 64 * 1024
DEFAULT_EXPIRES_IN = 300
_UNSET: Any = object()


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status, self.error, self.description = status, error, description


@dataclass
class IssuerFaults:
    """Runtime fault knobs; each applies to every following token request until reset."""

    delay: float = 0.0  # seconds before answering
    status: int | None = None  # answer with this status and ``body`` instead of a token
    body: bytes = b""
    content_type: str = "application/json"
    redirect: str | None = None  # answer 302 with this Location
    expires_in: Any = _UNSET  # override expires_in (any JSON value; None = omit)
    access_token: str | None = None  # override the issued token (e.g. with CR/LF)
    token_type: Any = _UNSET  # override token_type (None = omit)


@dataclass
class Submission:
    """One form submission, without secrets: the assertion is replaced by its claims."""

    fields: dict[str, list[str]]
    header_names: tuple[str, ...]
    assertion_claims: dict[str, Any] = field(default_factory=dict)


class TokenIssuer:
    """The development token endpoint. ``start()``/``stop()``; also a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        jwks_url: str,
        expected_svid_audience: str,
        trust_domain: str,
        expires_in: int = DEFAULT_EXPIRES_IN,
        record: int = 32,
        key: SigningKey | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._tls = tls
        self.jwks_url_upstream = jwks_url
        self.expected_svid_audience = expected_svid_audience
        self.trust_domain = trust_domain
        self.expires_in = expires_in
        self.key = key or SigningKey()
        self.faults = IssuerFaults()
        self.submissions: collections.deque[Submission] = collections.deque(maxlen=record)
        self.requests = 0
        self.issued = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._svid_jwks: dict[str, Any] | None = None
        self._host, self._port = host, port
        self._http: LoopbackHTTPServer | None = None

    # -- URLs ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._http is None:
            raise RuntimeError("issuer not started")
        return self._http.base_url

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/jwks"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> TokenIssuer:
        self.stopping.clear()
        handler = type("IssuerHandler", (_Handler,), {"owner": self})
        self._http = LoopbackHTTPServer(handler, self._host, self._port, self._tls)
        self._port = self._http.server.server_address[1]
        self._http.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> TokenIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_faults(self) -> None:
        with self.lock:
            self.faults = IssuerFaults()

    # -- the grant -----------------------------------------------------------------------

    def issue(self, form: dict[str, list[str]]) -> dict[str, Any]:
        """Validate a token request and return the token response (or raise OAuthError)."""
        for name, values in form.items():
            if len(values) != 1:
                raise OAuthError(400, "invalid_request", f"repeated parameter {name}")
        one = {k: v[0] for k, v in form.items()}
        if "client_id" in one:
            raise OAuthError(400, "invalid_request", "client_id is not accepted")
        if one.get("grant_type") != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "only client_credentials")
        if one.get("client_assertion_type") not in ASSERTION_TYPES:
            raise OAuthError(400, "invalid_request", "unsupported client_assertion_type")
        assertion = one.get("client_assertion", "")
        if not assertion:
            raise OAuthError(400, "invalid_request", "client_assertion is required")
        subject = self._verify_assertion(assertion)
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.base_url,
            "sub": subject,
            "azp": subject,
            "iat": now,
            "exp": now + self.expires_in,
            "jti": uuid.uuid4().hex,
        }
        if one.get("audience"):
            claims["aud"] = one["audience"]
        if one.get("scope"):
            claims["scope"] = one["scope"]
        return {
            "access_token": self.key.sign(claims),
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            **({"scope": one["scope"]} if one.get("scope") else {}),
        }

    def _verify_assertion(self, assertion: str) -> str:
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
        except jwt.PyJWTError:
            raise OAuthError(401, "invalid_client", "client_assertion is not a JWT") from None
        if not isinstance(kid, str):
            raise OAuthError(401, "invalid_client", "client_assertion has no kid")
        key = self._svid_key(kid)
        try:
            claims = jwt.decode(
                assertion, key, algorithms=[ALGORITHM], audience=self.expected_svid_audience,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.InvalidAudienceError:
            raise OAuthError(401, "invalid_client", "client_assertion audience mismatch") from None
        except jwt.PyJWTError:
            raise OAuthError(401, "invalid_client", "client_assertion is not valid") from None
        # The SVID must carry exactly the expected audience (no token for other parties).
        aud = claims["aud"]
        if (aud if isinstance(aud, list) else [aud]) != [self.expected_svid_audience]:
            raise OAuthError(401, "invalid_client", "client_assertion audience mismatch")
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.startswith(
            f"spiffe://{self.trust_domain}/"
        ):
            raise OAuthError(401, "invalid_client", "subject outside the trust domain")
        return subject

    def _svid_key(self, kid: str) -> Any:
        """The Workload API key ``kid``; the JWKS is refetched once for an unknown kid."""
        for attempt in range(2):
            with self.lock:
                jwks = self._svid_jwks
            if jwks is None or attempt == 1:
                try:
                    jwks = fetch_json(self.jwks_url_upstream)
                except (OSError, ValueError):
                    raise OAuthError(503, "temporarily_unavailable",
                                     "cannot fetch the SVID JWKS") from None
                with self.lock:
                    self._svid_jwks = jwks
            try:
                return key_from_jwks(jwks or {}, kid)
            except KeyError:
                continue
            except jwt.PyJWTError:
                break
        raise OAuthError(401, "invalid_client", "unknown signing key")


class _Handler(BaseHTTPRequestHandler):
    owner: TokenIssuer

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] in ("/jwks", "/.well-known/jwks.json"):
            send_bytes(self, 200, self.owner.key.jwks_bytes(), "application/json")
        else:
            send_json(self, 404, {"error": "not_found"})

    def do_POST(self) -> None:
        o = self.owner
        if self.path.split("?", 1)[0] != "/token":
            send_json(self, 404, {"error": "not_found"})
            return
        try:
            form = self._read_form()
        except OAuthError as err:
            self.close_connection = True
            send_json(self, err.status, {"error": err.error, "error_description": err.description})
            return
        with o.lock:
            o.requests += 1
            faults = IssuerFaults(**vars(o.faults))
            o.submissions.append(_record(form, tuple(k.lower() for k in self.headers)))
        if faults.delay and o.stopping.wait(faults.delay):
            return
        if faults.redirect is not None:
            send_bytes(self, 302, b"", "text/plain", {"Location": faults.redirect})
            return
        if faults.status is not None:
            send_bytes(self, faults.status, faults.body, faults.content_type)
            return
        try:
            response = o.issue(form)
        except OAuthError as err:
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
            send_json(self, err.status,
                      {"error": err.error, "error_description": err.description}, headers)
            return
        if faults.access_token is not None:
            response["access_token"] = faults.access_token
        for name in ("expires_in", "token_type"):
            value = getattr(faults, name)
            if value is None:
                response.pop(name, None)
            elif value is not _UNSET:
                response[name] = value
        with o.lock:
            o.issued += 1
        send_json(self, 200, response)

    def _read_form(self) -> dict[str, list[str]]:
        ctype = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise OAuthError(400, "invalid_request", "form body required")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise OAuthError(400, "invalid_request", "Content-Length required") from None
        if not 0 <= length <= MAX_FORM_BYTES:
            raise OAuthError(400, "invalid_request", "form too large")
        raw = self.rfile.read(length)
        try:
            return urllib.parse.parse_qs(raw.decode("ascii"), keep_blank_values=True,
                                         strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            raise OAuthError(400, "invalid_request", "malformed form") from None

    def log_message(self, format: str, *args: Any) -> None:
        pass  # request lines are not secret, but the test output stays quiet


def _record(form: dict[str, list[str]], header_names: tuple[str, ...]) -> Submission:
    fields = {k: list(v) for k, v in form.items()}
    claims: dict[str, Any] = {}
    if "client_assertion" in fields:
        assertion = fields["client_assertion"][0]
        fields["client_assertion"] = ["<redacted>"]
        try:
            decoded = jwt.decode(assertion, options={"verify_signature": False})
            claims = {k: decoded[k] for k in ("sub", "aud", "iss", "exp") if k in decoded}
        except jwt.PyJWTError:
            claims = {}
    return Submission(fields=fields, header_names=header_names, assertion_claims=claims)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m supervisor.devenv.token_issuer",
        description="Development OAuth token endpoint (client_credentials with a JWT-SVID "
        "client assertion, RFC 7523). Serves POST /token and GET /jwks on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=0, help="listen port (0 = any free port)")
    parser.add_argument("--svid-jwks-url", required=True,
                        help="JWKS of the Workload API (its HTTP JWKS endpoint)")
    parser.add_argument("--expected-svid-audience", required=True,
                        help="the 'aud' every client assertion must carry")
    parser.add_argument("--trust-domain", required=True, help="SPIFFE trust domain of clients")
    parser.add_argument("--expires-in", type=int, default=DEFAULT_EXPIRES_IN,
                        help="access-token lifetime (s)")
    args = parser.parse_args(argv)
    issuer = TokenIssuer(args.host, args.port, jwks_url=args.svid_jwks_url,
                         expected_svid_audience=args.expected_svid_audience,
                         trust_domain=args.trust_domain, expires_in=args.expires_in).start()
    print(f"token endpoint: {issuer.token_url}  JWKS: {issuer.jwks_url}", flush=True)
    wait_for_termination()
    issuer.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
