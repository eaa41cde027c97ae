"""OCSF audit lines: shape, severity, scrubbing, no query strings."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from supervisor.audit import AuditLog


def _lines(p: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_http_events(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    log = AuditLog(str(p))
    log.http_event(
        method="GET",
        scheme="https",
        host="h",
        port=443,
        path="/a?token=zzz",
        allowed=True,
        message="credential injected",
        status_code=200,
        binding_id="b",
    )
    log.http_event(
        method="PATCH",
        scheme="https",
        host="h",
        port=443,
        path="/a",
        allowed=False,
        message="token_grant_failed",
        reason="bad\r\n\x1b[31mthing",
    )
    log.close()
    ok, bad = _lines(p)
    assert ok["class_uid"] == 4002 and ok["category_uid"] == 4 and ok["activity_id"] == 3
    assert ok["type_uid"] == 400203 and ok["severity_id"] == 1 and ok["action_id"] == 1
    assert ok["http_request"]["url"]["path"] == "/a"  # type: ignore[index]
    assert "zzz" not in p.read_text()
    assert bad["severity_id"] == 3 and bad["action_id"] == 2 and bad["activity_id"] == 99
    assert "\r" not in bad["status_detail"] and "\x1b" not in bad["status_detail"]  # type: ignore[operator]


def test_config_event_and_parse_rejection(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    log = AuditLog(str(p))
    log.config_event("profiles reloaded", profiles=["a\tb"], ok=True)
    log.config_event("reload refused", ok=False)
    log.parse_rejection(reason="bare LF in head", status_code=400)
    log.close()
    cfg, refused, rej = _lines(p)
    assert cfg["class_uid"] == 5019 and cfg["unmapped"] == {"profiles": ["a?b"]}
    assert refused["severity_id"] == 3
    assert rej["http_response"] == {"code": 400}


def test_thread_safe_whole_lines(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    log = AuditLog(str(p), burst=10_000)  # all of them, not a summary

    def work() -> None:
        for i in range(200):
            log.config_event("x" * 500, i=i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert len(_lines(p)) == 800


def test_disabled_log_is_a_no_op() -> None:
    log = AuditLog(None)
    assert not log.enabled
    log.config_event("nothing")


def test_severity_override(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    log = AuditLog(str(p))
    log.http_event(
        method="POST",
        scheme="https",
        host="h",
        port=443,
        path="/",
        allowed=True,
        message="access rule violated (enforcement: audit)",
        severity=3,
    )
    log.close()
    (ev,) = _lines(p)
    assert ev["action_id"] == 1 and ev["disposition_id"] == 1 and ev["severity_id"] == 3


def test_audit_file_is_private_and_never_follows_a_symlink(tmp_path: Path) -> None:
    import os
    import stat

    from supervisor.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path))
    log.config_event("x")
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    target = tmp_path / "elsewhere"
    link = tmp_path / "link.jsonl"
    os.symlink(target, link)
    with pytest.raises(OSError):
        AuditLog(str(link))
    assert not target.exists()
