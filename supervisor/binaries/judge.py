"""One agent connection's binary judge: the identity is looked up on first need and kept
for the connection's life (keep-alive requests and an intercepted tunnel's inner requests
reuse it). A failed lookup is kept too: the connection gets no binary grant (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable

from supervisor.binaries.identity import ConnectionIdentity, IdentityError


class ConnectionJudge:
    __slots__ = ("_error", "_identity", "_lookup")

    def __init__(self, lookup: Callable[[], ConnectionIdentity]) -> None:
        self._lookup: Callable[[], ConnectionIdentity] | None = lookup
        self._identity: ConnectionIdentity | None = None
        self._error: str | None = None

    def _get(self) -> ConnectionIdentity | None:
        if self._lookup is not None:
            lookup, self._lookup = self._lookup, None
            try:
                self._identity = lookup()
            except IdentityError as exc:
                self._error = str(exc)
        return self._identity

    def prime(self) -> None:
        """Look up now (the proxy calls it on a worker thread: hashing a binary seen for
        the first time must not stall the event loop)."""
        self._get()

    def allows(self, patterns: tuple[str, ...]) -> bool:
        identity = self._get()
        return identity is not None and identity.allowed(patterns)

    def denial(self) -> str:
        identity = self._get()
        if identity is None:
            return f"binary unknown ({self._error})"
        return identity.why_denied()

    def binary(self) -> str | None:
        """The connecting executable(s), once looked up (for the audit event)."""
        return self._identity.name if self._identity is not None else None

    @property
    def looked_up(self) -> bool:
        return self._lookup is None
