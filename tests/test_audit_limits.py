"""Audit bounds: token bucket, summaries, the non-blocking writer, the agent stderr framing."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor import audit
from supervisor.audit import AuditLog
from supervisor.audit_limits import Suppressed, TokenBucket, summary_key
from supervisor.sandbox.stderr_relay import MAX_LINE, PREFIX, escape, frame


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@given(st.floats(0.5, 1000), st.integers(1, 200),
       st.lists(st.floats(0, 5, allow_nan=False), max_size=200))
def test_bucket_never_grants_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[float]
) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock)
    granted = 0
    for step in steps:
        clock.now += step
        granted += bucket.take()
        granted += bucket.take()
    elapsed = clock.now - 100.0
    assert granted <= burst + rate * elapsed + 1e-6


def test_bucket_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 2, clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now += 0.15  # 1.5 tokens
    assert bucket.take() and not bucket.take()


def _event(host: str, code: int = 403, allowed: bool = False) -> dict[str, object]:
    return {"class_uid": 4002, "action_id": 1 if allowed else 2,
            "dst_endpoint": {"hostname": host, "port": 80}, "http_response": {"code": code}}


@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=300), st.integers(1, 3))
def test_suppressed_counts_every_event_once(hosts: list[str], limit: int) -> None:
    s = Suppressed(limit=limit)
    for host in hosts:
        s.add(_event(host))
    fields = s.take()
    if not hosts:
        assert fields is None
        return
    assert fields is not None
    assert fields["suppressed"] == len(hosts)
    assert sum(g["count"] for g in fields["groups"]) + fields.get("other", 0) == len(hosts)
    assert len(fields["groups"]) <= limit
    assert s.take() is None


def test_summary_key_tolerates_any_shape() -> None:
    assert summary_key({}) == (None, "denied", None, None, None)
    assert summary_key({"dst_endpoint": "x", "http_response": 3})[2:] == (None, None, None)


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_rate_limited_events_are_summarized_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    log = AuditLog(str(path), rate=1, burst=5, clock=clock)
    for i in range(50):
        log.http_event(method="GET", scheme="http", host=f"h{i % 2}", port=80, path="/",
                       allowed=False, message="policy_denied", status_code=403)
    log.close()
    lines = _lines(path)
    single = [e for e in lines if e["class_uid"] == 4002]
    (summary,) = [e for e in lines if e["class_uid"] == 5019]
    assert len(single) == 5
    assert summary["unmapped"]["suppressed"] == 45  # type: ignore[index]
    assert {g["hostname"]: g["count"] for g in summary["unmapped"]["groups"]} == {  # type: ignore[index]
        "h0": 22, "h1": 23}
    counts = log.counters()
    assert counts["rate_limited"] == 45 and counts["written"] == 6
    assert log.dropped_total == 45


def test_a_sink_that_stops_reading_never_blocks_emit(tmp_path: Path) -> None:
    """A FIFO nobody reads: emit stays fast, the overflow is counted, and what was queued
    is written once the reader comes back."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        log = AuditLog(str(fifo), burst=100_000, rate=1e6, queue_lines=100)
        started = time.monotonic()
        for i in range(2000):
            log.config_event("x" * 400, i=i)
        assert time.monotonic() - started < 2.0
        assert log.counters()["queue_full"] > 0
        received = b""

        def drain() -> None:
            nonlocal received
            while True:
                try:
                    chunk = os.read(reader, 1 << 20)
                except BlockingIOError:
                    return
                if not chunk:
                    return
                received += chunk

        deadline = time.monotonic() + 10
        while log.counters()["written"] + log.counters()["queue_full"] < 2000:
            drain()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        log.close()
        drain()
    finally:
        os.close(reader)
    counts = log.counters()
    assert counts["written"] == received.count(b"\n")
    assert counts["written"] + counts["queue_full"] == 2000


def test_events_arriving_one_by_one_are_written_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events emitted by a thread that keeps letting the writer run (the event loop gives
    the interpreter lock up on every socket call) used to wake the writer, and cost a
    write, per event. The writer now lets lines gather for LINGER after the first one:
    a few writes for the lot, every event still written, in order, by close."""
    writes: list[int] = []
    real = audit.write_all

    def counting(fd: int, data: bytes) -> None:
        writes.append(data.count(b"\n"))
        real(fd, data)

    monkeypatch.setattr(audit, "write_all", counting)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), burst=100_000, rate=1e6)
    n = 100
    started = time.monotonic()
    for i in range(n):
        log.config_event("event", i=i)
        time.sleep(0.0005)  # gives the interpreter lock away, as a socket call does
    elapsed = time.monotonic() - started
    log.close()
    assert [e["unmapped"]["i"] for e in _lines(path)] == list(range(n))  # type: ignore[index]
    assert sum(writes) == n and log.counters()["written"] == n
    # One write per LINGER of emitting at most (and a couple at the edges); per event before.
    assert len(writes) <= elapsed / audit.LINGER + 3 and len(writes) < n / 2, writes


def test_a_lone_event_is_written_without_waiting_for_more(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    try:
        log.config_event("alone")
        deadline = time.monotonic() + 5
        while not path.read_text():
            assert time.monotonic() < deadline, "the first event waited for company"
            time.sleep(0.005)
        assert _lines(path)[0]["message"] == "alone"
    finally:
        log.close()


def test_events_after_close_are_counted(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "a.jsonl"))
    log.close()
    log.config_event("late")
    assert log.counters()["after_close"] == 1 and log.dropped_total == 1


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=MAX_LINE * 2 + 10), max_size=8))
def test_relayed_stderr_is_prefixed_line_by_line_and_complete(chunks: list[bytes]) -> None:
    out, pending = b"", b""
    for chunk in chunks:
        piece, pending = frame(pending, chunk)
        out += piece
    piece, pending = frame(pending, b"", final=True)
    out += piece
    assert pending == b""
    lines = out.split(b"\n")
    assert lines[-1] == b""
    assert all(line.startswith(PREFIX) and len(line) <= len(PREFIX) + 4 * MAX_LINE
               for line in lines[:-1])
    # Every byte the agent wrote is there, in order, each line (cut at MAX_LINE) escaped
    # on its own.
    data = b"".join(chunks)
    *ended, last = data.split(b"\n")
    pieces = [line[i : i + MAX_LINE] for line in ended for i in range(0, len(line) + 1, MAX_LINE)]
    pieces += [last[i : i + MAX_LINE] for i in range(0, len(last), MAX_LINE)]
    assert out == b"".join(PREFIX + escape(p) + b"\n" for p in pieces)


LINE_BREAKS = [b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85",
               b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\r\n"]
TERMINAL = [b"\x1b[2K", b"\x1b[1A", b"\x1b]0;x\x07", b"\xc2\x9b2K", b"\x08" * 7, b"\x7f"]


@settings(max_examples=300)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(LINE_BREAKS + TERMINAL)),
                max_size=12))
def test_no_reader_sees_a_line_the_agent_did_not_get_prefixed(parts: list[bytes]) -> None:
    """The attack (issue 12 review): "x\\r{forged OCSF}\\n" became "agent: x\\r{forged}" and
    any reader splitting lines as Python's text mode, str.splitlines or a terminal does saw
    a line of the agent's own, with no prefix; ESC sequences could erase the prefix on a
    terminal showing the log. FAILED before control characters were escaped."""
    out, pending = frame(b"", b"".join(parts))
    out += frame(pending, b"", final=True)[0]
    text = out.decode("utf-8", "surrogateescape")
    assert all(line.startswith(PREFIX.decode()) for line in text.splitlines())
    assert not any(c in text for c in "\x1b\x9b\x9d\x08\x7f\r")


@settings(max_examples=300)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(
    [b"\xff", b"\xc3", b"\xe2\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", "é€😀".encode()])),
    max_size=12))
def test_the_relayed_stream_is_always_valid_utf8(parts: list[bytes]) -> None:
    """Invalid UTF-8 from the agent made the whole stream undecodable for a strict reader
    (a log shipper, ``bytes.decode()``), audit lines included. Invalid bytes are shown as
    ``\\xNN`` now, valid text is kept. FAILED before."""
    out, pending = b"", b""
    for part in parts:
        piece, pending = frame(pending, part)
        out += piece
    out += frame(pending, b"", final=True)[0]
    text = out.decode("utf-8")  # strict
    assert all(line.startswith(PREFIX.decode()) for line in text.splitlines())
    whole = b"".join(parts)
    if b"\n" not in whole and len(whole) < MAX_LINE:
        valid = whole.decode("utf-8", "ignore")
        assert all(ch in text for ch in valid if ch.isprintable())


@settings(max_examples=500)
@given(st.text(), st.integers(0, 600))
def test_scrub_replaces_exactly_the_control_characters(value: str, limit: int) -> None:
    """The printable fast path gives what the substitution gives, for any text."""
    expected = re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", value)[:limit]
    assert audit.scrub(value, limit) == expected


_TEXT = st.text(max_size=20) | st.text(min_size=510, max_size=530) | st.sampled_from(
    ["\x00", "a\x1fb", "\x7f", "\x9f", "\x85", "\u00a0", "é", "\u2028"])
_JSONABLE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
    | st.dictionaries(_TEXT | st.integers(), inner, max_size=4),
    max_leaves=20,
)


def _reference_clean(value: object) -> object:
    """The rules as first written: every string through the substitution, keys too."""
    def scrub(v: str) -> str:
        return re.sub(r"[\x00-\x1f\x7f-\x9f]", "?", v)[:512]

    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _reference_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_clean(v) for v in value]
    return value


@settings(max_examples=150)
@given(st.dictionaries(_TEXT | st.integers(), _JSONABLE, max_size=6))
def test_an_audit_line_is_the_json_of_the_scrubbed_event(event: dict[object, object]) -> None:
    """The same line as json.dumps of the event cleaned by the first, plain rules: every
    string scrubbed (keys too), tuples as lists; one compact ASCII JSON line."""
    expected = _reference_clean(event)
    assert audit._clean(event) == expected
    line = audit._line(event)  # type: ignore[arg-type]
    assert line == json.dumps(expected, separators=(",", ":"), ensure_ascii=True) + "\n"
    assert "\n" not in line[:-1] and line.isascii()
