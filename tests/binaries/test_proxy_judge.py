"""The proxy judges a connection once, off its event loop (no root: a fake lookup):
keep-alive requests reuse the judgement; connections to unrestricted tables are not looked
up at all; a lookup that fails denies with binary_denied."""

from __future__ import annotations

import threading
from pathlib import Path

from supervisor.binaries.identity import ConnectionIdentity, IdentityError, ProcessIdentity
from supervisor.profiles.loader import load_profiles
from tests.proxy.harness import Env, recv_response


class Lookups:
    def __init__(self, exe: str | None) -> None:
        self.exe = exe
        self.threads: list[int] = []

    def __call__(self, client: tuple[str, int], proxy: tuple[str, int]) -> ConnectionIdentity:
        self.threads.append(threading.get_ident())
        if self.exe is None:
            raise IdentityError("cannot read /proc (test)")
        return ConnectionIdentity((ProcessIdentity(1, self.exe, (self.exe,), ()),))


def _env(tmp_path: Path, lookups: Lookups, binaries: str) -> Env:
    env = Env(None, None, str(tmp_path / "audit.jsonl"), identify=lookups)  # type: ignore[arg-type]
    p = tmp_path / "profile.yaml"
    p.write_text(f"id: local\ncredentials: []\nendpoints: [{{host: 127.0.0.1, port: "
                 f"{env.upstream.port}, allowed_ips: [127.0.0.0/8]}}]\nbinaries: {binaries}\n")
    env.policy = load_profiles([str(p)]).table  # type: ignore[assignment]
    return env


def _get_twice(env: Env) -> list[int]:
    port = env.upstream.port
    s = env.connect()
    try:
        statuses = []
        for _ in range(2):
            s.sendall(f"GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
                      .encode())
            statuses.append(recv_response(s)[0])
            if statuses[-1] != 200:
                break
        return statuses
    finally:
        s.close()


def test_judged_once_per_connection_off_the_loop(tmp_path: Path) -> None:
    lookups = Lookups("/usr/bin/curl")
    env = _env(tmp_path, lookups, "[/usr/bin/curl]")
    try:
        assert _get_twice(env) == [200, 200]
        assert len(lookups.threads) == 1  # the keep-alive request reused it
        assert lookups.threads[0] != env.thread.ident  # not on the event loop's thread
        assert _get_twice(env) == [200, 200]
        assert len(lookups.threads) == 2  # a new connection is judged anew
    finally:
        env.close()


def test_unrestricted_tables_never_look_up(tmp_path: Path) -> None:
    lookups = Lookups("/usr/bin/curl")
    env = _env(tmp_path, lookups, "[]")
    try:
        assert _get_twice(env) == [200, 200]
        assert lookups.threads == []
    finally:
        env.close()


def test_a_failed_lookup_denies(tmp_path: Path) -> None:
    env = _env(tmp_path, Lookups(None), "[/usr/bin/curl]")
    try:
        assert _get_twice(env) == [403]
        assert env.upstream.requests == 0
    finally:
        env.close()
