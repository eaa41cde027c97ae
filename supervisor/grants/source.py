"""The interface the proxy uses to obtain tokens (tests may supply a fake)."""

from __future__ import annotations

from typing import Protocol

from supervisor.profiles.model import Binding


class TokenSource(Protocol):
    async def token_for(self, binding: Binding) -> str:
        """Return a token68 access token for ``binding`` or raise ``GrantError``."""
        ...
