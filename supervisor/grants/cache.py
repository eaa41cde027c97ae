"""The token cache as plain data: lifetimes, LRU bound, expiry, failure backoff.

No I/O and no clock of its own: every method takes ``now`` (monotonic seconds), so the
provider decides time and tests drive it deterministically.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.grants.errors import GrantError
from supervisor.profiles.model import Binding, GrantSpec

DEFAULT_LIFETIME = 300
MAX_LIFETIME = 3600
EXPIRY_SKEW = 30
MIN_LIFETIME = 1.0
REFRESH_AT = 0.8  # fraction of the lifetime after which a used entry is renewed
BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
BACKOFF_JITTER = 0.2
DEFAULT_MAX_ENTRIES = 1024


@dataclass(frozen=True, slots=True)
class CacheKey:
    binding_id: str
    token_endpoint: str
    svid_audience: str
    assertion_type: str
    audience: str
    scopes: tuple[str, ...]

    @classmethod
    def for_binding(cls, binding: Binding) -> CacheKey:
        g = binding.grant
        return cls(binding.id, g.token_endpoint, g.jwt_svid_audience,
                   g.client_assertion_type, g.audience, g.scopes)


def lifetime(expires_in: int | None, cache_ttl_seconds: int | None) -> float:
    """min(expires_in or 300, 3600, cache_ttl if set) - 30 s skew, at least 1 s.

    Only an absent ``expires_in`` means 300: an explicit 0 says "expires now", so it
    gets the 1 s floor rather than five minutes of a dead token.
    """
    base = min(DEFAULT_LIFETIME if expires_in is None else expires_in, MAX_LIFETIME)
    if cache_ttl_seconds is not None:
        base = min(base, cache_ttl_seconds)
    return max(float(base - EXPIRY_SKEW), MIN_LIFETIME)


def backoff_delay(failures: int, rand: Callable[[], float]) -> float:
    """1 s doubling per consecutive failure up to 30 s, then ±20 % jitter (rand in [0, 1))."""
    base = min(BACKOFF_BASE * 2.0 ** min(failures - 1, 16), BACKOFF_MAX)
    return base * (1.0 + BACKOFF_JITTER * (2.0 * rand() - 1.0))


@dataclass(slots=True)
class Entry:
    token: str = field(repr=False)
    issued_at: float
    lifetime: float
    last_used: float
    spec: GrantSpec | None = None  # what to renew it with
    # The token object that passed the use-time token68 check (provider._checked): the
    # same immutable string passes it again, so it is not re-scanned on every request.
    checked: str | None = field(default=None, repr=False)

    @property
    def expires_at(self) -> float:
        return self.issued_at + self.lifetime

    def refresh_due(self, now: float) -> bool:
        """80 % of the lifetime has passed and the key was used within the last lifetime."""
        return (now >= self.issued_at + REFRESH_AT * self.lifetime
                and now - self.last_used <= self.lifetime)


@dataclass(slots=True)
class Failure:
    error: GrantError
    count: int
    until: float


class TokenCache:
    """LRU-bounded map of live tokens plus per-key failure backoff state."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.evictions = 0  # tokens dropped before use: expired, or pushed out by the LRU bound
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._failures: OrderedDict[CacheKey, Failure] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, now: float, *, touch: bool = True) -> Entry | None:
        """A live entry (marked used, moved to most recent) or None; an expired one is dropped."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if now >= entry.expires_at:
            del self._entries[key]
            self.evictions += 1
            return None
        if touch:
            entry.last_used = now
            self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, token: str, life: float, now: float,
            last_used: float | None = None, spec: GrantSpec | None = None) -> Entry:
        entry = Entry(token=token, issued_at=now, lifetime=life,
                      last_used=now if last_used is None else last_used, spec=spec)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self._failures.pop(key, None)
        self.purge(now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1
        return entry

    def purge(self, now: float) -> None:
        """Remove expired entries (a token is never served past its lifetime)."""
        for key in [k for k, e in self._entries.items() if now >= e.expires_at]:
            del self._entries[key]
            self.evictions += 1

    def fail(self, key: CacheKey, error: GrantError, now: float,
             rand: Callable[[], float]) -> Failure:
        previous = self._failures.pop(key, None)
        count = 1 if previous is None else previous.count + 1
        failure = Failure(error=error, count=count, until=now + backoff_delay(count, rand))
        self._failures[key] = failure
        while len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        return failure

    def backoff(self, key: CacheKey, now: float) -> Failure | None:
        """The failure whose backoff is still running for ``key``, if any.

        An elapsed failure is kept (its count drives the next delay) until a success.
        """
        failure = self._failures.get(key)
        return failure if failure is not None and now < failure.until else None

    def due_for_refresh(self, now: float) -> list[CacheKey]:
        return [k for k, e in self._entries.items()
                if now < e.expires_at and e.refresh_due(now)]

    def retain(self, binding_ids: set[str]) -> None:
        for store in (self._entries, self._failures):
            for key in [k for k in store if k.binding_id not in binding_ids]:
                del store[key]

    def keys(self) -> list[CacheKey]:
        return list(self._entries)
