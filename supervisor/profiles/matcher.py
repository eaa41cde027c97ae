"""Per-request policy lookup: which endpoint and which binding apply to a request.

Built once per profile set. Literal hosts are indexed in a dict keyed by (host, port);
pattern hosts sit in a short per-port list sorted most-specific-first. Every pattern is
compiled at build time; a lookup runs at most one dict probe plus precompiled regexes.

Winner: highest specificity (see ``patterns.specificity``); ties, which validation
rejects for bindings, are broken by a key that does not depend on load order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

from supervisor.profiles.hosts import normalize_host
from supervisor.profiles.model import Binding, Endpoint, Profile
from supervisor.profiles.patterns import (
    HostPattern,
    PathPattern,
    canonical_path,
    parse_host_pattern,
    parse_path_pattern,
    specificity,
)
from supervisor.record import record

T = TypeVar("T")
_Order = tuple[tuple[int, ...], tuple[str, ...]]


@record
class _Entry(Generic[T]):
    host: HostPattern
    path: PathPattern | None
    order: _Order  # ascending = better
    value: T

    def path_ok(self, path: str | None) -> bool:
        # ``path`` is canonical or None (= a path that must match no path glob).
        return self.path is None or (path is not None and self.path.matches(path))


class _Index(Generic[T]):
    """Literal hosts: one dict probe. Patterns: bucketed by their literal label suffix
    (``*.svc.example.com`` → ``svc.example.com``), so a lookup only tries the buckets of
    the request host's own suffixes instead of every pattern."""

    def __init__(self, items: Iterable[tuple[str, int, str | None, tuple[str, ...], T]]) -> None:
        literal: dict[tuple[str, int], list[_Entry[T]]] = defaultdict(list)
        patterns: dict[int, dict[str, list[_Entry[T]]]] = defaultdict(lambda: defaultdict(list))
        for host, port, path, tiebreak, value in items:
            hp = parse_host_pattern(host)
            pp = parse_path_pattern(path) if path is not None else None
            spec = specificity(hp, pp)
            entry = _Entry(hp, pp, (tuple(-x for x in spec), tiebreak), value)
            if hp.is_literal:
                literal[(hp.text, port)].append(entry)
            else:
                patterns[port][_literal_suffix(hp)].append(entry)
        self._literal = {k: tuple(sorted(v, key=_order)) for k, v in literal.items()}
        self._literal_keys = frozenset(self._literal)
        self._patterns = {
            port: {sfx: tuple(sorted(v, key=_order)) for sfx, v in buckets.items()}
            for port, buckets in patterns.items()
        }

    def match(self, host: str, port: int, path: str | None,
              usable: Callable[[T], bool] | None = None) -> T | None:
        """The best entry for the request (among those ``usable`` accepts, if given)."""
        best: _Entry[T] | None = None
        for entry in self._literal.get((host, port), ()):
            if entry.path_ok(path) and (usable is None or usable(entry.value)):
                best = entry
                break
        buckets = self._patterns.get(port)
        if buckets:
            for suffix in _suffixes(host):
                for entry in buckets.get(suffix, ()):
                    if best is not None and entry.order >= best.order:
                        break  # sorted: nothing further in this bucket can win
                    if (entry.host.matches(host) and entry.path_ok(path)
                            and (usable is None or usable(entry.value))):
                        best = entry
                        break
        return None if best is None else best.value

    @property
    def literal_keys(self) -> frozenset[tuple[str, int]]:
        return self._literal_keys

    def covers(self, host: str, port: int) -> bool:
        if (host, port) in self._literal:
            return True
        return next(self.candidates(host, port), None) is not None

    def candidates(self, host: str, port: int) -> Iterator[_Entry[T]]:
        """Every entry whose host and port match, whatever its path."""
        yield from self._literal.get((host, port), ())
        buckets = self._patterns.get(port)
        if buckets:
            for suffix in _suffixes(host):
                for entry in buckets.get(suffix, ()):
                    if entry.host.matches(host):
                        yield entry


def _literal_suffix(host: HostPattern) -> str:
    """The labels after the last wildcard label ("" if the pattern ends in one)."""
    last_wild = max(i for i, label in enumerate(host.labels) if "*" in label)
    return ".".join(host.labels[last_wild + 1 :])


def _suffixes(host: str) -> Iterator[str]:
    """``a.b.c`` → ``b.c``, ``c``, ``""`` (a pattern needs at least one label before)."""
    i = host.find(".")
    while i >= 0:
        yield host[i + 1 :]
        i = host.find(".", i + 1)
    yield ""


def _order(entry: _Entry[T]) -> _Order:
    return entry.order


@record
class Route:
    """Every endpoint that bears on one request (ARCHITECTURE.md 4.2's overlap rule).

    ``inspected``: some endpoint on the host:port has an inspected protocol (or a token
    is injected there), so requests are judged by rules (``rules.judge``) over
    ``matching``; otherwise the host:port is L4 and a request only needs a ``matching``
    endpoint. ``selected`` is the most specific inspected endpoint whose path matches:
    it fixes the protocol (GraphQL/JSON-RPC body inspection), the body limits and the
    enforcement mode, as OpenShell selects one L7 configuration per request.
    """

    declared: bool  # some endpoint covers host:port (whatever its path)
    inspected: bool
    matching: tuple[Endpoint, ...]  # host, port and path match; most specific first
    selected: Endpoint | None
    binary_refused: bool = False  # endpoints match but none allows the connecting binary


_MAX_DESTS = 4096


@record
class _Dest:
    entries: tuple[_Entry[Endpoint], ...]  # every endpoint on host:port, best first
    inspected: bool
    encoded_slash: bool


class PolicyTable:
    """Endpoint and binding lookup for one immutable profile set (thread-safe: read-only)."""

    def __init__(self, profiles: Sequence[Profile], bindings: Sequence[Binding]) -> None:
        self._endpoints: _Index[Endpoint] = _Index(
            (ep.host, port, ep.path, (p.id, f"{j:08d}"), ep)
            for p in profiles
            for j, ep in enumerate(p.endpoints)
            for port in ep.ports
        )
        self._bindings: _Index[Binding] = _Index(
            (b.host, b.port, b.path, (b.id,), b) for b in bindings
        )
        # Some endpoint is restricted to binaries: connections are judged (ARCHITECTURE.md 11).
        self.binaries_enforced = any(
            ep.binaries is not None for p in profiles for ep in p.endpoints
        )
        # Per (host, port): the candidates in order and what they imply. Bounded; reset
        # when full (the agent chooses hosts: it must not grow this without limit).
        self._dests: dict[tuple[str, int], _Dest] = {}

    def _dest(self, host: str, port: int) -> _Dest:
        key = (host, port)
        d = self._dests.get(key)
        if d is None:
            entries = tuple(sorted(self._endpoints.candidates(host, port), key=_order))
            d = _Dest(
                entries,
                any(e.value.inspected for e in entries) or self._bindings.covers(host, port),
                any(e.value.allow_encoded_slash for e in entries),
            )
            if len(self._dests) >= _MAX_DESTS:
                self._dests.clear()
            self._dests[key] = d
        return d

    def match_endpoint(self, host: str, port: int, path: str,
                       usable: Callable[[Endpoint], bool] | None = None) -> Endpoint | None:
        """The most specific endpoint for a request (that ``usable`` accepts, e.g. one whose
        binaries allow the connecting process); ``path`` excludes the query."""
        return self._endpoints.match(normalize_host(host), port, canonical_path(path), usable)

    def match_binding(self, host: str, port: int, path: str,
                      usable: Callable[[Binding], bool] | None = None) -> Binding | None:
        """The most specific credential binding for a request, or ``None`` (no injection)."""
        return self._bindings.match(normalize_host(host), port, canonical_path(path), usable)

    def route(self, host: str, port: int, path: str,
              usable: Callable[[Endpoint], bool] | None = None) -> Route:
        """Endpoints for a request; ``path`` is canonical (``canonical.canonicalize``).
        ``usable`` keeps only endpoints the connecting binary may use (``binaries``)."""
        # Plain loops: this runs for every request (a comprehension or generator expression
        # creates a function object each time on this Python).
        d = self._dest(normalize_host(host), port)
        on_path: list[Endpoint] = []
        for e in d.entries:
            if e.path is None or e.path.matches(path):
                on_path.append(e.value)
        if usable is None:
            matching, inspected = tuple(on_path), d.inspected
        else:
            # As OpenShell: only the endpoints of profiles whose binaries allow the process
            # take part -- in the decision and in whether rules apply at all (pip beside a
            # git-only rule set on github.com:443 stays an L4 client).
            kept: list[Endpoint] = []
            for ep in on_path:
                if usable(ep):
                    kept.append(ep)
            matching = tuple(kept)
            inspected = False
            for e in d.entries:
                if e.value.inspected and usable(e.value):
                    inspected = True
                    break
        selected = None
        for ep in matching:
            if ep.inspected:
                selected = ep
                break
        # Positional: a record's quickest call (this is once per request).
        return Route(bool(d.entries), inspected, matching, selected,
                     bool(on_path) and not matching)  # binary_refused

    def declared_exactly(self, host: str, port: int) -> bool:
        """Is host:port declared by an exact (non-wildcard) host? (SSRF, ARCHITECTURE.md 4.1)"""
        return (normalize_host(host), port) in self._endpoints.literal_keys

    def allows_encoded_slash(self, host: str, port: int) -> bool:
        """Does any endpoint on host:port keep %2F in paths (``allow_encoded_slash``)?"""
        return self._dest(normalize_host(host), port).encoded_slash

    def declares(self, host: str, port: int) -> bool:
        """Does any endpoint cover host:port (any path)? Used to admit CONNECT."""
        return self._endpoints.covers(normalize_host(host), port)

    def binds(self, host: str, port: int) -> bool:
        """Does any credential binding (on any path) cover host:port?"""
        return self._bindings.covers(normalize_host(host), port)

    def needs_inspection(self, host: str, port: int) -> bool:
        """Must a CONNECT tunnel to host:port be opened up to decide per request?

        Yes when a credential may be injected, when some paths are undeclared (no
        host-wide endpoint), or when an endpoint that could apply enforces an access
        preset narrower than ``full``. Conservative: may say yes when no is possible.
        """
        h = normalize_host(host)
        if self._bindings.covers(h, port):
            return True
        entries = list(self._endpoints.candidates(h, port))
        if any(e.value.inspected for e in entries):
            return True
        host_wide = [e for e in entries if e.path is None]
        if not host_wide:
            return True
        winner = min(host_wide, key=_order)
        return any(
            _enforces_access(e.value) for e in entries if e is winner or e.path is not None
        )


def _enforces_access(endpoint: Endpoint) -> bool:
    # Same rule as the proxy's per-request check: only 'enforce' with a method limit,
    # or rules the proxy must see each request for.
    if endpoint.rules is not None or endpoint.deny_rules:
        return True
    return endpoint.access not in (None, "full") and endpoint.enforcement == "enforce"
