"""Which static-credential variables a request may use: the binding table.

Built from every loaded profile that declares static credentials (a credential without
``token_grant``). A variable is bound to the endpoints of *every* profile that declares it
(the union: the supervisor has one environment, so ``GITHUB_TOKEN`` in ``github.yaml`` and
``copilot.yaml`` is one value usable at both profiles' endpoints). A request's scope is the
set of variables whose endpoints match its (host, port, path without query), plus the
rewrite and signing options of the matching endpoints. Pure and immutable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from supervisor.profiles.hosts import normalize_host
from supervisor.profiles.patterns import (
    HostPattern,
    PathPattern,
    Specificity,
    canonical_path,
    parse_host_pattern,
    parse_path_pattern,
    specificity,
)
from supervisor.record import record

Signing = Literal["sigv4", "sigv4:body", "sigv4:no_body"]
SIGNING_MODES: tuple[Signing, ...] = ("sigv4", "sigv4:body", "sigv4:no_body")
# SigV4 needs these two; a session token is added when it has a value.
AWS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 (a variable name)
AWS_SESSION = "AWS_SESSION_TOKEN"


@record
class BoundEndpoint:
    """One endpoint of a profile that declares static credentials, with its options."""

    host: str
    ports: tuple[int, ...]
    path: str | None
    body_rewrite: bool = False
    websocket_rewrite: bool = False
    signing: Signing | None = None
    signing_service: str | None = None
    signing_region: str | None = None
    # Executables allowed to use the endpoint (ARCHITECTURE.md 11); None = any process.
    binaries: tuple[str, ...] | None = None


@record
class StaticCredential:
    profile_id: str
    name: str
    env_vars: tuple[str, ...]
    required: bool
    endpoints: tuple[BoundEndpoint, ...]  # the declaring profile's endpoints


@record
class SigningSpec:
    mode: Signing
    service: str
    region: str | None  # None = infer from the host


@record
class Scope:
    variables: frozenset[str]
    body_rewrite: bool = False
    websocket_rewrite: bool = False
    signing: SigningSpec | None = None


EMPTY = Scope(frozenset())


@record
class _Entry:
    host: HostPattern
    ports: frozenset[int]
    path: PathPattern | None
    variables: frozenset[str]
    endpoint: BoundEndpoint
    rank: Specificity

    def matches(self, host: str, port: int, path: str | None) -> bool:
        if port not in self.ports or not self.host.matches(host):
            return False
        return self.path is None or (path is not None and self.path.matches(path))


def _path(raw: str | None) -> PathPattern | None:
    # OpenShell: an empty path, '**' or '/**' binds every path.
    if raw is None or raw in ("", "**", "/**"):
        return None
    return parse_path_pattern(raw)


class BindingTable:
    """Variable → endpoints, for one immutable profile set (thread-safe: read-only)."""

    def __init__(self, credentials: Sequence[StaticCredential]) -> None:
        self.credentials = tuple(credentials)
        by_profile: dict[str, set[str]] = {}
        endpoints: dict[str, tuple[BoundEndpoint, ...]] = {}
        for c in credentials:
            by_profile.setdefault(c.profile_id, set()).update(c.env_vars)
            endpoints[c.profile_id] = c.endpoints
        literal: dict[tuple[str, int], list[_Entry]] = {}
        patterns: list[_Entry] = []
        for profile_id, variables in by_profile.items():
            for ep in endpoints[profile_id]:
                hp = parse_host_pattern(ep.host)
                pp = _path(ep.path)
                e = _Entry(hp, frozenset(ep.ports), pp, frozenset(variables), ep,
                           specificity(hp, pp))
                if hp.is_literal:
                    for port in ep.ports:
                        literal.setdefault((hp.text, port), []).append(e)
                else:
                    patterns.append(e)
        self.variables: frozenset[str] = frozenset(v for vs in by_profile.values() for v in vs)
        self._literal = literal
        self._patterns = tuple(patterns)

    def __bool__(self) -> bool:
        return bool(self.variables)

    def _matching(self, host: str, port: int, path: str | None) -> Iterable[_Entry]:
        for e in self._literal.get((host, port), ()):
            if e.matches(host, port, path):
                yield e
        for e in self._patterns:
            if e.matches(host, port, path):
                yield e

    def covers(self, host: str, port: int) -> bool:
        """Is some endpoint with static credentials on host:port (any path)?"""
        if not self.variables:
            return False
        h = normalize_host(host)
        if (h, port) in self._literal:
            return True
        return any(port in e.ports and e.host.matches(h) for e in self._patterns)

    def scope(self, host: str, port: int, path: str,
              usable: Callable[[BoundEndpoint], bool] | None = None) -> Scope:
        """The scope of a request; ``path`` without the query. ``usable`` keeps only the
        endpoints the connecting process may use (a credential serves its profile's
        binaries only, whatever endpoint let the request out)."""
        if not self.variables:
            return EMPTY
        matching = [e for e in self._matching(normalize_host(host), port, canonical_path(path))
                    if usable is None or usable(e.endpoint)]
        if not matching:
            return EMPTY
        variables = frozenset().union(*(e.variables for e in matching))
        signer = max(
            (e for e in matching if e.endpoint.signing is not None),
            key=lambda e: e.rank,
            default=None,
        )
        signing = None
        if signer is not None:
            ep = signer.endpoint
            assert ep.signing is not None
            signing = SigningSpec(ep.signing, ep.signing_service or "", ep.signing_region)
        # Positional (variables, body_rewrite, websocket_rewrite, signing): a record's
        # quickest call (this is once per request with static credentials).
        return Scope(
            variables,
            any(e.endpoint.body_rewrite for e in matching),
            any(e.endpoint.websocket_rewrite for e in matching),
            signing,
        )
