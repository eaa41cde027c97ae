"""OCSF 1.x JSON-lines audit events.

One ``AuditLog`` per run. Callers pass hosts, ports and paths (never query strings); every
string is scrubbed of control characters here as a second line of defence. No token, SVID
or assertion is ever handed to this module.

Writing never blocks the caller (the proxy's event loop): ``emit`` serializes the event and
hands the line to a bounded queue that a writer thread drains. The writer is woken by the
first line queued, then lingers a few milliseconds (``LINGER``) so that a burst goes out in
one write: under load one wake-up per few ms instead of one per event, each of which took
the interpreter lock from the event loop. A full batch or ``close`` wakes it at once, and
``close`` writes everything still queued. A sink that stops reading
(a full stderr pipe, a stalled disk) costs events, never the proxy: what cannot be queued
is dropped and counted. A rate limit (token bucket, ``audit_limits``) bounds how fast the
log can grow, so an agent's denial loop cannot fill a disk; events over the rate are
counted per destination and reported in one summary event per interval. The counts are
logged at close and exposed by ``counters()`` / ``dropped_total`` (for metrics).
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from supervisor import logs
from supervisor.audit_limits import DEFAULT_BURST, DEFAULT_RATE, Suppressed, TokenBucket
from supervisor.stderr_io import STDERR_FD, STDERR_LOCK, write_all

log = logs.get(__name__)  # logging is imported on first use

QUEUE_LINES = 10_000  # lines waiting for the writer; beyond that, events are dropped
SUMMARY_INTERVAL = 10.0  # seconds between summaries of rate-limited events
FLUSH_TIMEOUT = 2.0  # how long close() waits for the writer
LINGER = 0.005  # seconds the writer lets lines gather after the first one
_BATCH = 256  # lines that wake the writer before LINGER is over
_IDLE_TICK = 0.2  # the writer's wake-up without lines (summaries, close)

OCSF_VERSION = "1.3.0"
_PRODUCT = {"name": "openshell-supervisor", "vendor_name": "OpenShell"}

HTTP_ACTIVITY = 4002
NETWORK_ACTIVITY = 4001
NETWORK_CATEGORY = 4
CONFIG_STATE = 5019  # Device Config State Change
DISCOVERY_CATEGORY = 5
DETECTION_FINDING = 2004
FINDINGS_CATEGORY = 2

SEVERITY_INFORMATIONAL = 1
SEVERITY_MEDIUM = 3
SEVERITY_HIGH = 4
ACTION_ALLOWED = 1
ACTION_DENIED = 2
STATUS_SUCCESS = 1
STATUS_FAILURE = 2

# OCSF HTTP Activity activity_id per method; anything else is 99 (Other).
_HTTP_ACTIVITY_IDS = {
    "CONNECT": 1,
    "DELETE": 2,
    "GET": 3,
    "HEAD": 4,
    "OPTIONS": 5,
    "POST": 6,
    "PUT": 7,
    "TRACE": 8,
}

_CTL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def scrub(value: str, limit: int = 512) -> str:
    # Control characters are never printable: most values skip the substitution.
    if value.isprintable():
        return value[:limit]
    return _CTL.sub("?", value)[:limit]


_LIMIT = 512  # scrub's default


def _clean(value: Any) -> Any:
    """Every string scrubbed (keys too), tuples as lists. An event is built by this module
    as plain dicts, strings and ints: those are handled inline (this runs for every
    event, and a call per key and value was most of its cost); anything else takes the
    general rules below, which give the same result."""
    kind = type(value)
    if kind is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str or len(k) > _LIMIT or not k.isprintable():
                k = scrub(str(k))
            vk = type(v)
            if vk is str:
                if len(v) > _LIMIT or not v.isprintable():
                    v = scrub(v)
            elif vk is not int:
                v = _clean(v)
            out[k] = v
        return out
    if kind is str:
        return value if len(value) <= _LIMIT and value.isprintable() else scrub(value)
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


# json.dumps with these options, without building an encoder for every line.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def _line(event: dict[str, Any]) -> str:
    return _ENCODE(_clean(event)) + "\n"


def _redact(path: str) -> str:
    # A credential placeholder in a path never reaches a log line (ARCHITECTURE.md 9).
    if "openshell" not in path.lower() and "%" not in path:
        return path
    from supervisor.credentials.placeholders import redact

    return redact(path)


def strip_query(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


class AuditLog:
    """``path``: a file (appended), ``'-'`` for stderr, ``None`` to disable."""

    def __init__(
        self,
        path: str | None,
        *,
        rate: float = DEFAULT_RATE,
        burst: int = DEFAULT_BURST,
        queue_lines: int = QUEUE_LINES,
        summary_interval: float = SUMMARY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._own = False
        self._closed = False
        self._stop = threading.Event()
        self._clock = clock
        self._bucket = TokenBucket(rate, burst, clock)
        self._suppressed = Suppressed()
        self._summary_interval = summary_interval
        # Lines for the writer, at most ``queue_lines`` (appended and taken under _lock).
        self._pending: collections.deque[str] = collections.deque()
        self._queue_lines = queue_lines
        self._wake = threading.Event()
        self._counts = {"written": 0, "rate_limited": 0, "queue_full": 0, "write_failed": 0,
                        "after_close": 0}
        self._writer: threading.Thread | None = None
        if path is None:
            return
        if path == "-":
            self._fd = STDERR_FD
        else:
            # 0600 when we create it: the agent has no business reading other requests'
            # metadata; O_NOFOLLOW so a planted symlink cannot redirect the log.
            self._fd = os.open(
                path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
            self._own = True
        self._writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self._writer.start()

    @property
    def enabled(self) -> bool:
        return self._fd is not None

    def counters(self) -> dict[str, int]:
        """Events written, and events lost by cause: ``rate_limited`` (summarized instead),
        ``queue_full`` (the sink did not keep up), ``write_failed``, ``after_close``."""
        with self._lock:
            return dict(self._counts)

    @property
    def dropped_total(self) -> int:
        """Every event not written as itself (the metric ``audit_events_dropped_total``)."""
        counts = self.counters()
        return sum(n for name, n in counts.items() if name != "written")

    def close(self) -> None:
        """Flush what is queued (waiting at most FLUSH_TIMEOUT), write the last summary,
        report losses; later events are counted as dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        writer = self._writer
        if writer is not None:
            self._stop.set()
            self._wake.set()
            writer.join(FLUSH_TIMEOUT)
            with self._lock:  # left behind by a stuck sink (or queued as close began)
                self._counts["write_failed"] += len(self._pending)
                self._pending.clear()
            if not writer.is_alive() and self._own and self._fd is not None:
                os.close(self._fd)
        counts = self.counters()
        lost = {name: n for name, n in counts.items() if name != "written" and n}
        if lost:
            log.warning(
                "audit: %d events written, %s", counts["written"],
                ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in lost.items()),
            )

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event (already OCSF-shaped; strings are scrubbed). Never blocks."""
        if self._fd is None:
            return
        with self._lock:
            if self._closed:
                self._counts["after_close"] += 1
                return
            if not self._bucket.take():
                self._counts["rate_limited"] += 1
                self._suppressed.add(event)
                return
        self._enqueue(_line(event))

    def _enqueue(self, line: str) -> None:
        pending = self._pending
        with self._lock:
            if len(pending) >= self._queue_lines:
                self._counts["queue_full"] += 1
                return
            pending.append(line)
            queued = len(pending)
        if queued == 1 or queued == _BATCH:  # the first line wakes the writer; a full batch
            self._wake.set()  # cuts its linger short

    # -- the writer thread ---------------------------------------------------------------

    def _summary_line(self) -> str | None:
        with self._lock:
            fields = self._suppressed.take()
        if fields is None:
            return None
        event = self._base(
            CONFIG_STATE, DISCOVERY_CATEGORY, 1, allowed=False,
            message=f"{fields['suppressed']} audit events over the rate limit, summarized",
        )
        event["unmapped"] = fields
        return _line(event)

    def _write_loop(self) -> None:
        next_summary = self._clock() + self._summary_interval
        wake, pending = self._wake, self._pending
        while True:
            wake.wait(_IDLE_TICK)
            if pending and not self._stop.is_set() and len(pending) < _BATCH:
                wake.clear()
                wake.wait(LINGER)  # let the burst gather: one write for all of it
            wake.clear()  # before taking: a line queued after this wakes the next round
            stopping = self._stop.is_set()
            with self._lock:
                batch = list(pending)
                pending.clear()
            final = stopping  # close(): nothing is queued after _stop (counted instead)
            if final or self._clock() >= next_summary:
                next_summary = self._clock() + self._summary_interval
                summary = self._summary_line()
                if summary is not None:
                    batch.append(summary)
            for i in range(0, len(batch), _BATCH):  # bounded writes (stderr is shared)
                self._write(batch[i : i + _BATCH])
            if final:
                return

    def _write(self, batch: list[str]) -> None:
        fd = self._fd
        assert fd is not None
        data = "".join(batch).encode("ascii")
        try:
            if fd == STDERR_FD:
                with STDERR_LOCK:
                    write_all(fd, data)
            else:
                write_all(fd, data)
        except OSError:
            with self._lock:
                self._counts["write_failed"] += len(batch)
            return
        with self._lock:
            self._counts["written"] += len(batch)

    def _base(
        self,
        class_uid: int,
        category_uid: int,
        activity_id: int,
        *,
        allowed: bool,
        message: str,
        severity: int | None = None,
    ) -> dict[str, Any]:
        if severity is None:
            severity = SEVERITY_INFORMATIONAL if allowed else SEVERITY_MEDIUM
        return {
            "class_uid": class_uid,
            "category_uid": category_uid,
            "activity_id": activity_id,
            "type_uid": class_uid * 100 + activity_id,
            "time": int(time.time() * 1000),
            "severity_id": severity,
            "action_id": ACTION_ALLOWED if allowed else ACTION_DENIED,
            "disposition_id": 1 if allowed else 2,
            "status_id": STATUS_SUCCESS if allowed else STATUS_FAILURE,
            "message": message,
            "metadata": {"version": OCSF_VERSION, "product": _PRODUCT},
        }

    def http_event(
        self,
        *,
        method: str,
        scheme: str,
        host: str,
        port: int,
        path: str,
        allowed: bool,
        message: str,
        status_code: int | None = None,
        reason: str | None = None,
        binding_id: str | None = None,
        dst_ip: str | None = None,
        severity: int | None = None,
        process: str | None = None,
    ) -> None:
        """HTTP Activity: a request with a grant, or one the proxy refused.

        ``process``: the executable that opened the agent's connection, when it was judged
        (ARCHITECTURE.md 11); recorded as the OCSF actor's process file.

        ``severity`` overrides the default (Informational if allowed, else Medium): a policy
        violation let through by ``enforcement: audit`` is Allowed with severity Medium.
        """
        if self._fd is None:
            return
        event = self._base(
            HTTP_ACTIVITY,
            NETWORK_CATEGORY,
            _HTTP_ACTIVITY_IDS.get(method, 99),
            allowed=allowed,
            message=message,
            severity=severity,
        )
        event["http_request"] = {
            "http_method": method,
            "url": {
                "scheme": scheme, "hostname": host, "port": port,
                "path": _redact(strip_query(path)),
            },
        }
        event["dst_endpoint"] = {"hostname": host, "port": port}
        if dst_ip is not None:
            event["dst_endpoint"]["ip"] = dst_ip
        if status_code is not None:
            event["http_response"] = {"code": status_code}
        if reason is not None:  # may quote a path or a body: placeholders hidden too
            event["status_detail"] = _redact(reason)
        if binding_id is not None:
            event["unmapped"] = {"binding": binding_id}
        if process is not None:
            event["actor"] = {"process": {"file": {"path": process}}}
        self.emit(event)

    def detection_finding(self, *, code: str, method: str, host: str, port: int, path: str) -> None:
        """A static-credential placeholder refused (ARCHITECTURE.md 9): beside the denied HTTP
        activity, a finding. Never the value, the placeholder, the variable or the query."""
        if self._fd is None:
            return
        event = self._base(
            DETECTION_FINDING, FINDINGS_CATEGORY, 1, allowed=False, message=code,
            severity=SEVERITY_HIGH,
        )
        event["finding_info"] = {
            "title": "credential placeholder refused",
            "uid": code,
            "types": [code],
        }
        event["resources"] = [{"type": "http_request", "name": f"{host}:{port}"}]
        event["unmapped"] = {
            "http_method": method, "host": host, "port": port, "path": _redact(strip_query(path)),
        }
        self.emit(event)

    def parse_rejection(self, *, reason: str, status_code: int, peer: str | None = None) -> None:
        """A head the strict parser refused (nothing was forwarded)."""
        if self._fd is None:
            return
        event = self._base(HTTP_ACTIVITY, NETWORK_CATEGORY, 99, allowed=False, message=reason)
        event["http_response"] = {"code": status_code}
        event["status_detail"] = reason
        if peer is not None:
            event["src_endpoint"] = {"ip": peer}
        self.emit(event)

    def config_event(self, message: str, **fields: Any) -> None:
        """Configuration state (startup, reload accepted or refused)."""
        if self._fd is None:
            return
        ok = fields.pop("ok", True)
        event = self._base(CONFIG_STATE, DISCOVERY_CATEGORY, 1, allowed=bool(ok), message=message)
        if fields:
            event["unmapped"] = fields
        self.emit(event)
