"""Errors of the token-grant path. Messages are safe to show the agent and to log:
they never contain a token, an SVID, an assertion or a query string, nor the issuer's
own words (those, sanitized, are in ``audit_detail``, for the audit log only)."""

from __future__ import annotations


class GrantError(Exception):
    """A token could not be obtained for a binding; the request must fail closed (502).

    ``step`` is one of ``"workload_api"``, ``"token_endpoint"``, ``"response"``, ``"backoff"``.
    ``retryable`` tells whether trying again later may succeed. ``audit_detail``: the
    fuller, sanitized story (e.g. the issuer's ``error_description``) for the audit log;
    never shown to the agent.
    """

    def __init__(
        self, step: str, reason: str, *, retryable: bool = True, audit_detail: str | None = None
    ) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        self.retryable = retryable
        self.audit_detail = audit_detail
