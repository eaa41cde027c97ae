"""Bulk legs: curl's command line and summary, the interleaved rounds, which legs a run has."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from integration.bench import bulk
from integration.bench import metrics as m
from integration.bench.bulk import DOWN, UP, BulkLeg, curl_argv, parse_curl, run_bulk
from integration.bench.legs import Endpoints, StreamPorts, bulk_legs, stream_legs
from integration.bench.nginx import Upstream

LEG = BulkLeg("ours-intercept", "https://127.0.0.1:1/bulk/p", "https://127.0.0.1:2/sink",
              "http://127.0.0.1:3", Path("/ca.pem"))  # fmt: skip


def test_curl_argv() -> None:
    down = curl_argv(LEG, DOWN, Path("/p"), 60)
    assert down[-1] == LEG.download_url and ["-x", "http://127.0.0.1:3"] == down[8:10]
    assert "--cacert" in down and "-T" not in down and "Authorization" not in " ".join(down)
    up = curl_argv(BulkLeg("d", "http://a/", "http://b/sink", client_auth=True), UP, Path("/p"), 60)
    assert up[-3:] == ["-T", "/p", "http://b/sink"]
    assert ["--noproxy", "*"] == up[8:10] and "Expect:" in up
    assert any(a.startswith("Authorization: Bearer ") for a in up)


def test_parse_curl() -> None:
    out = 'body\nBULK 200 1073741824 0 0.5\n'
    assert parse_curl(out, DOWN, 2**30) == 0.5
    with pytest.raises(ValueError, match="moved 0"):
        parse_curl(out, UP, 2**30)
    with pytest.raises(ValueError, match="status 502"):
        parse_curl("BULK 502 0 0 0.1\n", DOWN, 0)
    with pytest.raises(ValueError):
        parse_curl("curl: (7) failed", DOWN, 1)


def test_payload_is_sparse_and_complete(tmp_path: Path) -> None:
    p = bulk.create_payload(tmp_path / "x" / "p.bin", 5 * 2**20)
    assert p.stat().st_size == 5 * 2**20
    assert p.stat().st_blocks * 512 < 2**20  # no data blocks written


def test_rounds_interleave_and_a_failing_cell_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def fake(leg: BulkLeg, direction: str, payload: Path, size: int) -> float:
        calls.append((leg.name, direction))
        if leg.name == "b" and direction == UP:
            raise RuntimeError("curl exited 7: refused")
        return {"a": 1.0, "b": 2.0}[leg.name]

    monkeypatch.setattr(bulk, "transfer", fake)
    legs = [BulkLeg("a", "u", "v"), BulkLeg("b", "u", "v")]
    results = run_bulk(legs, Path("/p"), 10**9, rounds=2, show=False)
    assert calls == [("a", DOWN), ("a", UP), ("b", DOWN), ("b", UP), ("a", DOWN), ("a", UP),
                     ("b", DOWN)]  # fmt: skip
    by = {(r.leg, r.direction): r for r in results}
    assert by[("a", DOWN)].gbps == 1.0 and by[("b", DOWN)].gbps == 0.5
    assert by[("b", UP)].gbps is None and "refused" in by[("b", UP)].error
    assert bulk.bulk_ratio(results, "a", "b", DOWN) == 2.0
    assert bulk.bulk_ratio(results, "a", "b", UP) is None


def test_rounds_measure_the_proxy_cpu_per_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 10.5, 10.5, 11.25, 20.0, 20.1])  # before/after each transfer

    monkeypatch.setattr(bulk, "process_cpu_seconds", lambda pid: next(clock))
    monkeypatch.setattr(bulk, "transfer", lambda *a: 1.0)
    legs = [BulkLeg("ours", "u", "v", cpu_pid=4242), BulkLeg("other", "u", "v")]
    results = run_bulk(legs, Path("/p"), 2**31, rounds=1, show=False)
    by = {(r.leg, r.direction): r for r in results}
    assert by[("ours", DOWN)].cpu_seconds == [0.5] and by[("ours", UP)].cpu_seconds == [0.75]
    assert by[("ours", DOWN)].cpu_per_gib == 0.25  # 2 GiB per transfer
    assert by[("other", DOWN)].cpu_seconds == [] and by[("other", DOWN)].cpu_per_gib is None
    assert next(clock) == 20.0  # the leg without a pid read no CPU time


def test_process_cpu_seconds_reads_a_live_process() -> None:
    import os
    import time

    before = bulk.process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert bulk.process_cpu_seconds(os.getpid()) >= before + 0.03


def test_missing_upload_server_is_an_error_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="no upload server"):
        bulk.transfer(BulkLeg("x", "http://127.0.0.1:9/", ""), UP, Path("/p"), 1)


UPSTREAM = Upstream(1, 2, 3, 4)


def test_legs_follow_the_components_that_started() -> None:
    ep = Endpoints(UPSTREAM, Path("/bench-ca.pem"))
    assert [leg.name for leg in bulk_legs(ep)] == [m.B_DIRECT_HTTP, m.B_DIRECT_TLS]
    assert bulk_legs(ep)[0].upload_url == ""  # no stream server: no sink
    assert stream_legs(ep) == []
    full = Endpoints(UPSTREAM, Path("/bench-ca.pem"), StreamPorts(5, 6, 7), tinyproxy=8,
                     mitmproxy=9, mitm_ca=Path("/mitm.pem"), ours=10, ours_ca=Path("/ours.pem"))  # fmt: skip
    legs = {leg.name: leg for leg in bulk_legs(full)}
    assert len(legs) == 9
    assert legs[m.B_OURS_INTERCEPT].cacert == Path("/ours.pem")
    assert legs[m.B_OURS_INTERCEPT].download_url.startswith("https://127.0.0.1:3/")
    assert legs[m.B_OURS_CONNECT].download_url.startswith("https://127.0.0.1:4/")
    assert legs[m.B_OURS_CONNECT].upload_url == "https://127.0.0.1:7/sink"
    assert legs[m.B_TINY_CONNECT].client_auth and not legs[m.B_OURS_FORWARD].client_auth
    assert legs[m.B_OURS_FORWARD].cpu_pid is None  # no pid given: no CPU column
    with_pid = {leg.name: leg for leg in bulk_legs(replace(full, ours_pid=77))}
    assert {n for n, leg in with_pid.items() if leg.cpu_pid == 77} == {
        m.B_OURS_FORWARD, m.B_OURS_CONNECT, m.B_OURS_INTERCEPT}
    assert legs[m.B_MITM_INTERCEPT].cacert == Path("/mitm.pem")
    streams = {leg.name: leg for leg in stream_legs(full)}
    assert streams[m.B_OURS_INTERCEPT].proxy_port == 10 and streams[m.B_OURS_INTERCEPT].port == 6
    assert streams[m.B_DIRECT_HTTP].client_auth and streams[m.B_DIRECT_HTTP].proxy_port is None
