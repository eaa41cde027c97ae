"""The demo's ticks say what its checks said (a failed check never prints a green tick)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from supervisor.devenv.demo import Outcome, _show_grants, tick


def _render(grants: int, svids: int) -> tuple[str, Outcome]:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    outcome = Outcome()
    _show_grants(console, outcome, grants, svids)
    return buf.getvalue(), outcome


def test_tick_follows_the_check() -> None:
    assert "✓" in tick(True) and "✗" not in tick(True)
    assert "✗" in tick(False) and "✓" not in tick(False)


def test_grants_held() -> None:
    text, outcome = _render(2, 2)
    assert outcome.ok
    assert text.count("✓") == 2 and "✗" not in text
    assert "signed 2 JWT-SVIDs" in text


@pytest.mark.parametrize(("grants", "svids", "crosses"), [
    (1, 1, 1),   # a grant missing: the issuer line fails, the SVID line holds
    (3, 3, 1),
    (2, 0, 1),   # the Workload API counter read nothing (the old `jwt_svids` bug)
    (2, 5, 1),
    (0, 2, 2),
])
def test_failed_check_prints_a_cross(grants: int, svids: int, crosses: int) -> None:
    text, outcome = _render(grants, svids)
    assert not outcome.ok
    assert text.count("✗") == crosses
    assert text.count("✓") == 2 - crosses
