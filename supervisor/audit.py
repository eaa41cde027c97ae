"""OCSF 1.x JSON-lines audit events.

One ``AuditLog`` per run: the file is opened once, each event is one ``json.dumps`` and one
locked write. Callers pass hosts, ports and paths (never query strings); every string is
scrubbed of control characters here as a second line of defence. No token, SVID or
assertion is ever handed to this module.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from typing import IO, Any

OCSF_VERSION = "1.3.0"
_PRODUCT = {"name": "openshell-supervisor", "vendor_name": "OpenShell"}

HTTP_ACTIVITY = 4002
NETWORK_ACTIVITY = 4001
NETWORK_CATEGORY = 4
CONFIG_STATE = 5019  # Device Config State Change
DISCOVERY_CATEGORY = 5

SEVERITY_INFORMATIONAL = 1
SEVERITY_MEDIUM = 3
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
    return _CTL.sub("?", value)[:limit]


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def strip_query(path: str) -> str:
    return path.split("?", 1)[0].split("#", 1)[0]


class AuditLog:
    """``path``: a file (appended), ``'-'`` for stderr, ``None`` to disable."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._own = False
        self._out: IO[str] | None
        if path is None:
            self._out = None
        elif path == "-":
            self._out = sys.stderr
        else:
            # 0600 when we create it: the agent has no business reading other requests'
            # metadata; O_NOFOLLOW so a planted symlink cannot redirect the log.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            self._out = os.fdopen(fd, "a", encoding="utf-8")
            self._own = True

    @property
    def enabled(self) -> bool:
        return self._out is not None

    def close(self) -> None:
        with self._lock:
            if self._own and self._out is not None:
                self._out.close()
            self._out = None

    def emit(self, event: dict[str, Any]) -> None:
        """Write one event (already OCSF-shaped); strings are scrubbed."""
        out = self._out
        if out is None:
            return
        line = json.dumps(_clean(event), separators=(",", ":"), ensure_ascii=True) + "\n"
        with self._lock:
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                pass  # an audit sink failure must not take the proxy down

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
    ) -> None:
        """HTTP Activity: a request with a grant, or one the proxy refused.

        ``severity`` overrides the default (Informational if allowed, else Medium): a policy
        violation let through by ``enforcement: audit`` is Allowed with severity Medium.
        """
        if self._out is None:
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
            "url": {"scheme": scheme, "hostname": host, "port": port, "path": strip_query(path)},
        }
        event["dst_endpoint"] = {"hostname": host, "port": port}
        if dst_ip is not None:
            event["dst_endpoint"]["ip"] = dst_ip
        if status_code is not None:
            event["http_response"] = {"code": status_code}
        if reason is not None:
            event["status_detail"] = reason
        if binding_id is not None:
            event["unmapped"] = {"binding": binding_id}
        self.emit(event)

    def parse_rejection(self, *, reason: str, status_code: int, peer: str | None = None) -> None:
        """A head the strict parser refused (nothing was forwarded)."""
        if self._out is None:
            return
        event = self._base(HTTP_ACTIVITY, NETWORK_CATEGORY, 99, allowed=False, message=reason)
        event["http_response"] = {"code": status_code}
        event["status_detail"] = reason
        if peer is not None:
            event["src_endpoint"] = {"ip": peer}
        self.emit(event)

    def config_event(self, message: str, **fields: Any) -> None:
        """Configuration state (startup, reload accepted or refused)."""
        if self._out is None:
            return
        ok = fields.pop("ok", True)
        event = self._base(CONFIG_STATE, DISCOVERY_CATEGORY, 1, allowed=bool(ok), message=message)
        if fields:
            event["unmapped"] = fields
        self.emit(event)
