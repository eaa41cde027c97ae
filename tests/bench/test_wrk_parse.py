"""wrk output parsing and the Lua script the harness generates."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.bench.wrk import (
    CLIENT_TOKEN,
    MARKER,
    lua_script,
    parse_wrk,
    pick_representative,
    result_from_output,
    to_us,
)

WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:60881/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    80.22us  119.20us   3.74ms   99.05%
    Req/Sec    13.56k     5.54k   35.13k    90.48%
  Latency Distribution
     50%   77.00us
     75%   89.00us
     90%    1.20ms
     99%    2.50s
  28287 requests in 2.10s, 4.80MB read
Requests/sec:  13473.07
Transfer/sec:      2.29MB
"""

HOOK = (
    MARKER + '{"requests": 28287, "duration_us": 2099521, "bytes": 5035086, "errors": '
    '{"connect": 0, "read": 3, "write": 0, "status": 0, "timeout": 0}, "latency_us": '
    '{"min": 19.0, "max": 3744.0, "mean": 80.220, "stdev": 119.199, "percentiles": '
    '{"50": 76.0, "99": 178.0, "99.9": 2237.0}}}\n'
)


def test_parse_text_part() -> None:
    rps, dist, hook, non2xx = parse_wrk(WRK_OUTPUT)
    assert rps == pytest.approx(13473.07)
    assert dist == {"p50": 77.0, "p75": 89.0, "p90": 1200.0, "p99": 2_500_000.0}
    assert hook is None
    assert non2xx == 0


def test_non_2xx_and_socket_errors_without_hook() -> None:
    out = WRK_OUTPUT.replace(
        "Requests/sec:",
        "  Socket errors: connect 0, read 12, write 1, timeout 2\n"
        "  Non-2xx or 3xx responses: 41\nRequests/sec:",
    )
    r = result_from_output("x", 1, out)
    assert r.errors == {"status": 41, "connect": 0, "read": 12, "write": 1, "timeout": 2}


def test_hook_percentiles_win_over_rounded_text() -> None:
    r = result_from_output("direct", 1, WRK_OUTPUT + HOOK)
    assert r.requests == 28287
    assert r.duration_s == pytest.approx(2.099521)
    assert r.latency_us["p50"] == 76.0  # from the histogram, not "77.00us"
    assert r.latency_us["p75"] == 89.0  # only in the text: kept
    assert r.latency_us["p99.9"] == 2237.0
    assert r.percentiles_us == {"50": 76.0, "99": 178.0, "99.9": 2237.0}
    assert r.errors["read"] == 3


def test_missing_requests_line_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_validity_ignores_close_read_errors_but_not_status_errors() -> None:
    r = result_from_output("tinyproxy", 32, WRK_OUTPUT + HOOK.replace('"read": 3', '"read": 28287'))
    assert r.valid
    bad = result_from_output("ours", 32, WRK_OUTPUT + HOOK.replace('"status": 0', '"status": 500'))
    assert not bad.valid


def test_lua_script_forms() -> None:
    proxied = lua_script(8080, via_proxy=True)
    assert 'wrk.path = "http://127.0.0.1:8080/"' in proxied
    assert 'wrk.headers["Host"] = "127.0.0.1:8080"' in proxied
    assert "Authorization" not in proxied
    direct = lua_script(8080, via_proxy=False, client_auth=True)
    assert 'wrk.path = "/"' in direct
    assert f'"Bearer {CLIENT_TOKEN}"' in direct


@settings(max_examples=50)
@given(
    value=st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False),
    unit=st.sampled_from(["us", "ms", "s"]),
)
def test_units(value: object, unit: str) -> None:
    factor = {"us": 1, "ms": 1000, "s": 1_000_000}[unit]
    assert to_us(str(value), unit) == pytest.approx(float(str(value)) * factor)


def test_pick_representative_prefers_valid_then_fastest() -> None:
    fast_bad = result_from_output("t", 1, WRK_OUTPUT + HOOK.replace('"status": 0', '"status": 999'))
    fast_bad.rps = 99_999.0
    slow = result_from_output("t", 1, WRK_OUTPUT + HOOK)
    slow.rps = 100.0
    quick = result_from_output("t", 1, WRK_OUTPUT + HOOK)
    quick.rps = 200.0
    chosen = pick_representative([fast_bad, slow, quick])
    assert chosen is quick
    assert chosen.repeats_rps == [99_999.0, 100.0, 200.0]
    assert [r["valid"] for r in chosen.rounds] == [False, True, True]
    assert chosen.rounds[2]["p50_us"] == 76.0
    with pytest.raises(ValueError):
        pick_representative([])
