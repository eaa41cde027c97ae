"""Bounds on the audit stream (pure, no I/O): a token bucket and a summary of what it held back.

A denial loop in the agent (thousands of refused requests a second) must not fill the
audit log's disk, and must not hide what happened either: events over the rate are not
written one by one but counted per (class, decision, host, port, code) and reported in one
summary event per interval (supervisor/audit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from supervisor.record import field, record

DEFAULT_RATE = 50.0  # events per second, sustained
DEFAULT_BURST = 500  # events at once
SUMMARY_KEYS = 64  # distinct keys counted in one summary; the rest is 'other'


@record(frozen=False)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; ``take`` spends one if there is one."""

    rate: float
    burst: int
    clock: Callable[[], float]
    _tokens: float = field(init=False)
    _last: float = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._tokens = float(self.burst)
        self._last = self.clock()

    def take(self) -> bool:
        now = self.clock()
        if now > self._last:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def summary_key(event: Mapping[str, Any]) -> tuple[object, ...]:
    """What a held-back event is counted under: class, decision, destination, status."""
    dst = event.get("dst_endpoint") or {}
    response = event.get("http_response") or {}
    return (
        event.get("class_uid"),
        "allowed" if event.get("action_id") == 1 else "denied",
        dst.get("hostname") if isinstance(dst, Mapping) else None,
        dst.get("port") if isinstance(dst, Mapping) else None,
        response.get("code") if isinstance(response, Mapping) else None,
    )


@record(frozen=False)
class Suppressed:
    """Counts of held-back events since the last summary, per ``summary_key``."""

    limit: int = SUMMARY_KEYS
    total: int = 0
    other: int = 0
    by_key: dict[tuple[object, ...], int] = field(default_factory=dict)

    def add(self, event: Mapping[str, Any]) -> None:
        self.total += 1
        key = summary_key(event)
        if key in self.by_key or len(self.by_key) < self.limit:
            self.by_key[key] = self.by_key.get(key, 0) + 1
        else:
            self.other += 1

    def take(self) -> dict[str, Any] | None:
        """The summary's fields (and reset), or None when nothing was held back."""
        if self.total == 0:
            return None
        groups = [
            {"class_uid": k[0], "decision": k[1], "hostname": k[2], "port": k[3], "code": k[4],
             "count": n}
            for k, n in sorted(self.by_key.items(), key=lambda kv: -kv[1])
        ]
        fields: dict[str, Any] = {"suppressed": self.total, "groups": groups}
        if self.other:
            fields["other"] = self.other
        self.total, self.other, self.by_key = 0, 0, {}
        return fields
