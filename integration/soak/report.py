"""The soak's figures and verdict (pure: built from counters and samples, no I/O)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from integration.soak.monitor import Sample, growth

MAX_GROWTH = 0.10
MIN_RECOVERY = 0.90


@dataclass
class Figures:
    minutes: float
    requests: Counter[tuple[str, str]]  # (kind, outcome)
    unexpected: Counter[tuple[str, str]]
    good_by_phase: Counter[tuple[str, str]]
    phase_order: list[str]
    wrongly_forwarded: dict[str, int]  # source → count
    services_accepted: dict[str, int]
    recovery: float | None  # share of good requests answered 200 at the end
    rss_growth: float | None
    fd_growth: float | None  # of the stable fds (see monitor.Sample.stable_fds)
    max_traffic_fds: int
    traffic_fd_bound: int
    samples: list[Sample]
    audit_leaks: int
    audit_events: int
    proxy_alive: bool
    stale_retries: int
    violations: list[str] = field(default_factory=list)


def judge(f: Figures) -> list[str]:
    """Every target the run missed, as one line each (empty: the soak passed)."""
    out: list[str] = []
    wrong = sum(f.wrongly_forwarded.values())
    if wrong:
        out.append(f"{wrong} wrongly forwarded requests: {f.wrongly_forwarded}")
    if f.unexpected:
        out.append(f"{sum(f.unexpected.values())} unexpected outcomes: {dict(f.unexpected)}")
    if f.audit_leaks:
        out.append(f"{f.audit_leaks} audit lines carry a query string or a token")
    if not f.proxy_alive:
        out.append("the proxy process died")
    if f.max_traffic_fds > f.traffic_fd_bound:
        out.append(f"{f.max_traffic_fds} connection sockets at once (bound {f.traffic_fd_bound})")
    for name, g in (("RSS", f.rss_growth), ("open fds", f.fd_growth)):
        if g is None:
            out.append(f"{name} growth not measured (no samples)")
        elif g >= MAX_GROWTH:
            out.append(f"{name} grew {g:.1%} from baseline to end (limit {MAX_GROWTH:.0%})")
    if f.recovery is None or f.recovery < MIN_RECOVERY:
        out.append(f"no recovery after the faults: {f.recovery} of good requests ok at the end")
    if not any(o == "ok" for (k, o) in f.requests if k == "good"):
        out.append("no good request ever succeeded")
    return out


def text(f: Figures) -> str:
    total = sum(f.requests.values())
    lines = [f"soak: {f.minutes:g} min, {total} requests ({f.stale_retries} keep-alive retries)"]
    by_kind: dict[str, Counter[str]] = {}
    for (kind, outcome), n in f.requests.items():
        by_kind.setdefault(kind, Counter())[outcome] += n
    for kind in sorted(by_kind):
        parts = ", ".join(f"{o} {n}" for o, n in by_kind[kind].most_common())
        lines.append(f"  {kind:<11} {sum(by_kind[kind].values()):>7}: {parts}")
    phases: dict[str, Counter[str]] = {}
    for (phase, outcome), n in f.good_by_phase.items():
        phases.setdefault(phase, Counter())[outcome] += n
    lines.append("  good requests by phase:")
    for phase in [p for p in f.phase_order if p in phases]:
        c = phases[phase]
        lines.append(f"    {phase:<30} ok {c['ok']:>6} / {sum(c.values()):>6}  "
                     + ", ".join(f"{o} {n}" for o, n in c.items() if o != "ok"))  # fmt: skip
    lines.append(f"  services accepted: {f.services_accepted}")
    lines.append(f"  WRONGLY FORWARDED: {sum(f.wrongly_forwarded.values())} {f.wrongly_forwarded}")
    lines.append(f"  unexpected outcomes: {sum(f.unexpected.values())} {dict(f.unexpected)}")
    lines.append(f"  audit: {f.audit_events} events, {f.audit_leaks} leaking lines")
    rec = "n/a" if f.recovery is None else f"{f.recovery:.1%}"
    lines.append(f"  recovery (good ok in the final window): {rec}")
    lines.append("  proxy process over time (t s, RSS MiB, open fds = stable + connections):")
    step = max(1, len(f.samples) // 20)
    for s in f.samples[::step]:
        lines.append(f"    {s.t:7.1f}  {s.rss_kib / 1024:7.1f}  {s.fds:5d} = "
                     f"{s.stable_fds:3d} + {s.traffic_fds:3d}")  # fmt: skip
    lines.append(f"  connection sockets: max {f.max_traffic_fds} (bound {f.traffic_fd_bound})")
    for name, g in (("RSS", f.rss_growth), ("open fds (stable)", f.fd_growth)):
        lines.append(f"  {name} growth baseline → end: "
                     + ("n/a" if g is None else f"{g:+.1%}"))  # fmt: skip
    verdict = "PASS" if not f.violations else "FAIL"
    lines.append(f"  verdict: {verdict}")
    lines.extend(f"    - {v}" for v in f.violations)
    return "\n".join(lines)


def as_json(f: Figures) -> dict[str, Any]:
    return {
        "minutes": f.minutes,
        "requests": {f"{k}/{o}": n for (k, o), n in f.requests.items()},
        "wrongly_forwarded": f.wrongly_forwarded,
        "unexpected": {f"{k}/{o}": n for (k, o), n in f.unexpected.items()},
        "recovery": f.recovery,
        "rss_growth": f.rss_growth,
        "fd_growth": f.fd_growth,
        "samples": [[s.t, s.rss_kib, s.fds, s.traffic_fds] for s in f.samples],
        "max_traffic_fds": f.max_traffic_fds,
        "audit_leaks": f.audit_leaks,
        "violations": f.violations,
    }


def dumps(f: Figures) -> str:
    return json.dumps(as_json(f), indent=1)


__all__ = ["Figures", "dumps", "growth", "judge", "text"]
