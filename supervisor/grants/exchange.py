"""RFC 7523 client-credentials exchange, sans I/O: build the form, judge the response.

Everything here is pure: the HTTP client in ``http_client.py`` feeds bytes in and gets a
``TokenResponse`` or a ``GrantError`` out. Nothing of the issuer's body leaves this module
except a validated token, its lifetime, a registered OAuth ``error`` code (shown to the
agent) and the sanitized ``error``/``error_description`` (audit log only).
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from supervisor.grants.errors import GrantError
from supervisor.profiles.hosts import cleartext_allowed_host
from supervisor.profiles.model import ASSERTION_TYPES, GrantSpec

MAX_RESPONSE_BYTES = 64 * 1024
MAX_ERROR_FIELD = 256

# RFC 9110 token68; fullmatch only ('$' alone would accept a trailing newline).
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")

# RFC 6749 sections 4.1.2.1 and 5.2: the codes the agent may see. Anything else an issuer
# puts in ``error`` is its own vocabulary (tenant names, internal states): audit log only
# (ARCHITECTURE.md S13).
RFC6749_ERRORS = frozenset(
    {
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "access_denied",
        "unsupported_response_type",
        "server_error",
        "temporarily_unavailable",
    }
)

STEP = "token_endpoint"
RESPONSE_STEP = "response"


def is_token68(value: object) -> bool:
    return isinstance(value, str) and _TOKEN68.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class TokenResponse:
    access_token: str = field(repr=False)  # never in a repr, a log line or an error
    expires_in: int | None


def endpoint_allowed(url: str) -> bool:
    """Defence in depth for the load-time rule: https, or http to loopback / k8s service hosts."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None:
        return False
    if parts.scheme == "https":
        return not host.endswith(".")
    if parts.scheme != "http":
        return False
    # The load-time rule, in one place (supervisor.profiles.hosts); a trailing dot is
    # refused there too, so both checks always agree.
    return not host.endswith(".") and cleartext_allowed_host(host)


def build_form(spec: GrantSpec, svid: str) -> dict[str, str]:
    """The form body: no ``client_id``; ``audience``/``scope`` only when non-empty."""
    if spec.client_assertion_type not in ASSERTION_TYPES:
        raise GrantError(STEP, "unsupported client assertion type", retryable=False)
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": spec.client_assertion_type,
        "client_assertion": svid,
    }
    if spec.audience:
        form["audience"] = spec.audience
    scope = " ".join(spec.scopes)
    if scope:
        form["scope"] = scope
    return form


def sanitize_text(value: str, limit: int = MAX_ERROR_FIELD) -> str:
    """Replace every non-printable character (controls, format characters, line/paragraph
    separators, non-ASCII spaces) with '?' and cut to ``limit`` characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in value[:limit])


def sanitize_error_body(body: bytes) -> dict[str, str]:
    """Only ``error`` and ``error_description`` (strings) survive, sanitized and cut."""
    parsed = _loads_object(body)
    if parsed is None:
        return {}
    result: dict[str, str] = {}
    for name in ("error", "error_description"):
        value = parsed.get(name)
        if isinstance(value, str) and value:
            result[name] = sanitize_text(value)
    return result


def error_for_status(status: int, body: bytes) -> GrantError:
    """The GrantError for a non-2xx answer; 5xx and 429 may succeed later, 4xx will not.

    Its reason (shown to the agent) has the status and a registered ``error`` code only;
    ``audit_detail`` adds the issuer's sanitized ``error`` and ``error_description``.
    """
    if 300 <= status < 400:
        return GrantError(STEP, f"token endpoint answered {status} (redirects are not followed)")
    reason = f"token endpoint answered {status}"
    fields = sanitize_error_body(body)
    code = fields.get("error")
    audit = reason
    if code is not None:
        audit += f": {code}"
        if code in RFC6749_ERRORS:
            reason += f": {code}"
    if "error_description" in fields:
        audit += f" ({fields['error_description']})"
    retryable = status >= 500 or status in (408, 429)
    return GrantError(STEP, reason, retryable=retryable, audit_detail=audit)


def parse_success(body: bytes) -> TokenResponse:
    """Validate a 2xx body: JSON object, token68 ``access_token``, Bearer, sane ``expires_in``."""
    parsed = _loads_object(body)
    if parsed is None:
        raise GrantError(RESPONSE_STEP, "token response is not a JSON object")
    token = parsed.get("access_token")
    if not isinstance(token, str) or not is_token68(token):
        raise GrantError(RESPONSE_STEP, "access_token missing or not token68")
    token_type = parsed.get("token_type")
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() != "bearer"
    ):
        raise GrantError(RESPONSE_STEP, "token_type is not Bearer")
    expires_in = parsed.get("expires_in")
    if expires_in is not None and (
        isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 0
    ):
        raise GrantError(RESPONSE_STEP, "expires_in is not a non-negative integer")
    return TokenResponse(access_token=token, expires_in=expires_in)


def _loads_object(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None
