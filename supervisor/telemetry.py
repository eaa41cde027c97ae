"""What the supervisor counts while it runs: plain integers and fixed-bucket histograms
updated on the proxy's event loop, read by the metrics endpoint at scrape time
(ARCHITECTURE.md 8).

No dependency and no lock: every update happens on the proxy's one event-loop thread; a
scrape (another thread) reads ints and copies of small lists, which is safe in CPython.
Counting is always on (a dict increment per request); only the exposition is optional.

Label values are bounded by construction: a decision is one of two words, a code is one of
the proxy's own error codes or an upstream status class, an outcome one of a fixed set.
Nothing here ever holds a host, a path, a query or a token.
"""

from __future__ import annotations

import bisect
import functools
import re

# Seconds. Request durations run from sub-millisecond (a refusal) to minutes (a download).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)
WORKLOAD_API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0)

ALLOWED, DENIED = "allowed", "denied"
GRANT_OUTCOMES = ("success", "failure", "backoff")
CACHE_RESULTS = ("hit", "miss", "eviction")
TO_UPSTREAM, FROM_UPSTREAM = "to_upstream", "from_upstream"

# The proxy's error codes are identifiers of its own; anything else is folded into "other"
# so that no value derived from input can ever become a label.
_CODE = re.compile(r"[a-z0-9][a-z0-9_]{0,39}")


# Pure functions of their argument, called for every request: remembered. (The codes are
# the proxy's own and status classes: a handful of values.)
@functools.lru_cache(maxsize=128)
def code_label(code: str) -> str:
    return code if _CODE.fullmatch(code) else "other"


_STATUS_CLASSES = {status: f"{status // 100}xx" for status in range(100, 600)}


def status_class(status: int) -> str:
    """``2xx``...: an upstream's status, folded to five values."""
    return _STATUS_CLASSES.get(status, "other")


class Histogram:
    """Cumulative-on-read bucket counts, a sum and a count (Prometheus' histogram shape)."""

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= it) for each bucket, +Inf last."""
        counts = list(self.counts)
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class ProxyStats:
    """The proxy's side: requests by decision and code, their durations, upstream
    connections and the bytes exchanged with upstreams."""

    __slots__ = ("bytes_from_upstream", "bytes_to_upstream", "count_bytes", "duration",
                 "requests", "upstream_open")

    def __init__(self, *, count_bytes: bool = False) -> None:
        self.requests: dict[tuple[str, str], int] = {}
        self.duration = Histogram(REQUEST_BUCKETS)
        self.upstream_open = 0
        # Byte counting wraps every upstream read and write: only when someone looks.
        self.count_bytes = count_bytes
        self.bytes_to_upstream = 0
        self.bytes_from_upstream = 0

    def request(self, decision: str, code: str) -> None:
        key = (decision, code_label(code))
        self.requests[key] = self.requests.get(key, 0) + 1


class GrantStats:
    """The token provider's side: grants by outcome, cache results, Workload API calls."""

    __slots__ = ("cache", "grants", "workload_api_calls", "workload_api_failures",
                 "workload_api_seconds")

    def __init__(self) -> None:
        self.grants = dict.fromkeys(GRANT_OUTCOMES, 0)
        self.cache = dict.fromkeys(CACHE_RESULTS, 0)
        self.workload_api_calls = 0
        self.workload_api_failures = 0
        self.workload_api_seconds = Histogram(WORKLOAD_API_BUCKETS)
