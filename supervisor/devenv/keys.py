"""Signing keys of the development servers: EC P-256, ES256, JWKS with RFC 7638 key ids.

Shared by the development Workload API (JWT-SVIDs) and token issuer (access tokens); the
demo services verify tokens against the JWKS these keys publish.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SigningKey:
    """A fresh EC P-256 key pair; ``kid`` is the RFC 7638 thumbprint of its public JWK."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        numbers = self._private.public_key().public_numbers()
        self._x = _b64url(numbers.x.to_bytes(32, "big"))
        self._y = _b64url(numbers.y.to_bytes(32, "big"))
        thumb_input = json.dumps(
            {"crv": "P-256", "kty": "EC", "x": self._x, "y": self._y},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        self.kid = _b64url(hashlib.sha256(thumb_input).digest())

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._private.public_key()

    def public_jwk(self, *, use: str = "sig") -> dict[str, str]:
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": self._x,
            "y": self._y,
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": use,
        }

    def jwks(self, *, use: str = "sig") -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.public_jwk(use=use)]}

    def jwks_bytes(self, *, use: str = "sig") -> bytes:
        return json.dumps(self.jwks(use=use)).encode()

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._private, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": "JWT"}
        )


def key_from_jwks(jwks: dict[str, Any], kid: str) -> Any:
    """The public key with ``kid`` from a JWKS document; ``KeyError`` when absent."""
    for entry in jwks.get("keys", []):
        if isinstance(entry, dict) and entry.get("kid") == kid:
            return jwt.PyJWK(entry).key
    raise KeyError(kid)
