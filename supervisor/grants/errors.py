"""Errors of the token-grant path. Messages are safe to show the agent and to log:
they never contain a token, an SVID, an assertion or a query string."""

from __future__ import annotations


class GrantError(Exception):
    """A token could not be obtained for a binding; the request must fail closed (502).

    ``step`` is one of ``"workload_api"``, ``"token_endpoint"``, ``"response"``, ``"backoff"``.
    ``retryable`` tells whether trying again later may succeed.
    """

    def __init__(self, step: str, reason: str, *, retryable: bool = True) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        self.retryable = retryable
