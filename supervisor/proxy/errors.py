"""The proxy's own error responses: JSON body plus ``X-OpenShell-Proxy-Error``."""

from __future__ import annotations

import json
import re

from supervisor.credentials.placeholders import redact

POLICY_DENIED = "policy_denied"
SSRF_DENIED = "ssrf_denied"
AUTHORITY_MISMATCH = "request_authority_mismatch"
TOKEN_GRANT_FAILED = "token_grant_failed"  # noqa: S105 (an error code)
UPSTREAM_UNREACHABLE = "upstream_unreachable"
BAD_REQUEST = "bad_request"
# Resource caps (``Limits``): too many agent connections, too many to one destination.
PROXY_OVERLOADED = "proxy_overloaded"
UPSTREAM_BUSY = "upstream_busy"
# The connecting executable is not among an endpoint's ``binaries`` (ARCHITECTURE.md 11).
BINARY_DENIED = "binary_denied"

STATUS = {
    POLICY_DENIED: 403,
    SSRF_DENIED: 403,
    AUTHORITY_MISMATCH: 403,
    TOKEN_GRANT_FAILED: 502,
    UPSTREAM_UNREACHABLE: 502,
    BAD_REQUEST: 400,
    PROXY_OVERLOADED: 503,
    UPSTREAM_BUSY: 503,
    BINARY_DENIED: 403,
}
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

_CTL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def sanitize(text: str, limit: int = 256) -> str:
    """Control characters replaced, credential placeholders shown as ``[CREDENTIAL]``
    (a refusal may quote the agent's path or body), length capped: safe for a log line or
    the agent."""
    text = _CTL.sub("?", text)
    if "openshell" in text or "%" in text:
        text = redact(text)
    return text[:limit]


class ProxyError(Exception):
    """A request refused by the proxy with one of the contract's error codes.

    ``detail`` is shown to the agent; ``audit_detail`` (default: ``detail``) is what the
    audit log records: it may say more (the resolved address, the issuer's own words).
    """

    def __init__(
        self, code: str, detail: str, *, status: int | None = None, audit_detail: str | None = None
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = sanitize(detail)
        self.audit_detail = self.detail if audit_detail is None else sanitize(audit_detail)
        self.status = status if status is not None else STATUS[code]


def error_response(status: int, code: str, detail: str, *, close: bool) -> bytes:
    body = json.dumps({"error": code, "detail": sanitize(detail)}).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-OpenShell-Proxy-Error: {code}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode() + body
