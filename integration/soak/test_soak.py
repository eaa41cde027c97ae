"""The soak's plan and verdict (pure), and one compressed end-to-end run (~45 s)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from integration.soak import report
from integration.soak.faults import SCHEDULE
from integration.soak.monitor import Sample, growth
from integration.soak.plan import make_plan


@pytest.mark.parametrize("minutes", [2, 3, 10])
def test_plan_covers_the_run_with_a_full_warmup_cycle(minutes: int) -> None:
    plan = make_plan(minutes * 60)
    segs = plan.segments
    assert segs[0].start == 0 and segs[-1].end == plan.duration
    assert all(a.end == b.start for a, b in itertools.pairwise(segs))
    assert [s.phase for s in segs[: len(SCHEDULE)]] == list(range(len(SCHEDULE)))
    assert segs[len(SCHEDULE)].name == "baseline" and segs[-1].name == "final"
    assert plan.baseline[1] <= segs[-1].start <= plan.final[0]


def test_plan_refuses_a_run_too_short_for_its_windows() -> None:
    with pytest.raises(ValueError, match="too short"):
        make_plan(60)


def _figures(**over: object) -> report.Figures:
    base: dict[str, object] = dict(
        minutes=1.0, requests=Counter({("good", "ok"): 10}), unexpected=Counter(),
        good_by_phase=Counter(), phase_order=[], wrongly_forwarded={"x": 0},
        services_accepted={}, recovery=1.0, rss_growth=0.01, fd_growth=0.0,
        max_traffic_fds=5, traffic_fd_bound=30, samples=[Sample(0, 1000, 20, 4)],
        audit_leaks=0, audit_events=10, proxy_alive=True, stale_retries=0,
    )  # fmt: skip
    base.update(over)
    return report.Figures(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"wrongly_forwarded": {"canary": 1}}, "wrongly forwarded"),
        ({"unexpected": Counter({("malformed", "ok"): 1})}, "unexpected"),
        ({"rss_growth": 0.10}, "RSS grew"),
        ({"fd_growth": 0.2}, "open fds grew"),
        ({"fd_growth": None}, "not measured"),
        ({"recovery": 0.5}, "no recovery"),
        ({"audit_leaks": 2}, "audit"),
        ({"proxy_alive": False}, "died"),
        ({"max_traffic_fds": 31}, "connection sockets"),
    ],
)
def test_each_target_is_judged(over: dict[str, object], needle: str) -> None:
    assert report.judge(_figures()) == []
    violations = report.judge(_figures(**over))
    assert len(violations) == 1 and needle in violations[0]
    assert "FAIL" in report.text(_figures(**over, violations=violations))


def test_growth_compares_window_medians() -> None:
    assert growth([100, 100, 300], [110, 110, 0]) == pytest.approx(0.10)
    assert growth([], [1]) is None


@pytest.mark.slow
def test_compressed_soak_passes(tmp_path: object) -> None:
    from integration.soak.run import main

    code = main(["--minutes", "0.75", "--phase-seconds", "1", "--final-seconds", "12",
                 "--clients", "3"])  # fmt: skip
    assert code == 0
