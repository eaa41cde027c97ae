"""The soak's timeline, computed up front (pure): warm-up cycle, baseline, cycles, final.

    | warm-up: one full fault cycle | baseline (normal) | more cycles ... | final (normal) |

Growth is measured from the baseline window to the end of the final window, both under
the same normal traffic; recovery is judged at the end of the final window, after any
backoff from the last fault has expired (backoff is capped at 30 s ± 20 %).
"""

from __future__ import annotations

from dataclasses import dataclass

from integration.soak.faults import SCHEDULE

MIN_FINAL = 40.0


@dataclass(frozen=True)
class Segment:
    name: str
    start: float
    end: float
    phase: int | None  # index into SCHEDULE; None for baseline/final


@dataclass(frozen=True)
class Plan:
    duration: float
    phase_seconds: float
    segments: tuple[Segment, ...]
    baseline: tuple[float, float]  # sampling window for the growth baseline
    final: tuple[float, float]  # sampling window for the end figures and recovery

    def names(self) -> list[str]:
        """Segment names in time order, each once."""
        return list(dict.fromkeys(seg.name for seg in self.segments))

    def segment_at(self, t: float) -> Segment:
        for seg in self.segments:
            if seg.start <= t < seg.end:
                return seg
        return self.segments[-1]


def make_plan(
    duration: float, phase_seconds: float | None = None, final_seconds: float = MIN_FINAL
) -> Plan:
    n = len(SCHEDULE)
    p = phase_seconds or min(12.0, max(3.0, duration * 0.4 / n))
    baseline_len = max(2 * p, 16.0)
    if duration < n * p + baseline_len + final_seconds:
        raise ValueError(
            f"{duration:.0f} s is too short: one fault cycle ({n * p:.0f} s), the baseline "
            f"({baseline_len:.0f} s) and the final phase ({final_seconds:.0f} s) do not fit"
        )
    segs: list[Segment] = []
    t = 0.0
    for i, ph in enumerate(SCHEDULE):
        segs.append(Segment(f"warmup:{ph.name}", t, t + p, i))
        t += p
    segs.append(Segment("baseline", t, t + baseline_len, None))
    base = (t + baseline_len / 2, t + baseline_len)
    t += baseline_len
    final_start = duration - final_seconds
    i = 1  # the cycle continues after its first (normal) phase, which the baseline was
    while t + 0.5 < final_start:
        ph = SCHEDULE[i % n]
        end = min(t + p, final_start)
        segs.append(Segment(ph.name, t, end, i % n))
        t = end
        i += 1
    segs.append(Segment("final", final_start, duration, None))
    return Plan(duration, p, tuple(segs), base, (duration - final_seconds / 2, duration))
