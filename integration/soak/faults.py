"""The fault schedule: phases of equal length, cycling, each setting or clearing one fault.

Every phase ends with all faults cleared again, so a run always finishes in a clean
``normal`` phase from which the proxy must recover.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from integration.soak.environment import SoakEnvironment

_ISSUER_ERROR = (
    b'{"error":"server_error","error_description":"injected\\u0000\\r\\nX-Evil: 1'
    + b"x" * 400
    + b'"}'
)


@dataclass(frozen=True)
class Phase:
    name: str
    apply: Callable[[SoakEnvironment, threading.Event], None]


def _normal(env: SoakEnvironment, stop: threading.Event) -> None:
    return None


def _issuer_500(env: SoakEnvironment, stop: threading.Event) -> None:
    assert env.issuer is not None
    env.issuer.faults.status = 500
    env.issuer.faults.body = _ISSUER_ERROR


def _issuer_slow(env: SoakEnvironment, stop: threading.Event) -> None:
    assert env.issuer is not None
    env.issuer.faults.delay = 1.5  # below the soak's 3 s grant timeout: slow but succeeds


def _issuer_timeout(env: SoakEnvironment, stop: threading.Event) -> None:
    assert env.issuer is not None
    env.issuer.faults.delay = 4.0  # above the grant timeout


def _issuer_bad_token(env: SoakEnvironment, stop: threading.Event) -> None:
    assert env.issuer is not None
    env.issuer.faults.access_token = "tok\r\nX-Injected: 1"  # not token68: must never be used


def _issuer_4xx(env: SoakEnvironment, stop: threading.Event) -> None:
    assert env.issuer is not None
    env.issuer.faults.status = 401
    env.issuer.faults.body = b'{"error":"invalid_client"}'


def _workload_unavailable(env: SoakEnvironment, stop: threading.Event) -> None:
    assert env.workload is not None
    env.workload.faults.fail_code = grpc.StatusCode.UNAVAILABLE
    env.workload.faults.fail_next = 10**6  # until cleared


def _workload_slow(env: SoakEnvironment, stop: threading.Event) -> None:
    assert env.workload is not None
    env.workload.faults.delay = 6.0  # above the 5 s Workload API deadline


def _restart_alpha(env: SoakEnvironment, stop: threading.Event) -> None:
    env.restart_service("alpha", 2.0, stop)


def _restart_beta(env: SoakEnvironment, stop: threading.Event) -> None:
    env.restart_service("beta", 2.0, stop)


# Ends with a normal phase: the baseline that follows the warm-up cycle starts clean.
SCHEDULE: tuple[Phase, ...] = (
    Phase("normal", _normal),
    Phase("issuer_500", _issuer_500),
    Phase("normal", _normal),
    Phase("issuer_slow", _issuer_slow),
    Phase("workload_unavailable", _workload_unavailable),
    Phase("issuer_4xx", _issuer_4xx),
    Phase("normal", _normal),
    Phase("restart_alpha", _restart_alpha),
    Phase("issuer_timeout", _issuer_timeout),
    Phase("issuer_bad_token", _issuer_bad_token),
    Phase("workload_slow", _workload_slow),
    Phase("restart_beta", _restart_beta),
    Phase("normal", _normal),
)


def clear(env: SoakEnvironment) -> None:
    if env.issuer is not None:
        env.issuer.reset_faults()
    if env.workload is not None:
        with env.workload.lock:
            env.workload.faults.fail_next = 0
            env.workload.faults.delay = 0.0
