"""Issue 12 item 9 at run time: a CONNECT to a credentialed host is never a raw tunnel,
whatever ``tls: skip`` another profile puts on the same host. The loader refuses such a
set (tests/profiles/test_validation.py); this proves the proxy also fails closed with a
table that was never validated together (defence in depth)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.profiles.loader import load_profiles
from supervisor.profiles.matcher import PolicyTable
from tests.proxy.harness import Env, FakeTokens, recv_response


def _profile(tmp_path: Path, name: str, doc: dict[str, Any]) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


class _Recording:
    def __init__(self) -> None:
        self.hosts: list[str] = []

    def server_context(self, host: str) -> Any:
        self.hosts.append(host)
        raise LookupError("the test needs no certificate")


@pytest.mark.parametrize("cred_path", [None, "/v1/**"])
def test_connect_to_a_credentialed_host_is_intercepted_despite_tls_skip(
    tmp_path: Path, cred_path: str | None
) -> None:
    interceptor = _Recording()
    env = Env(None, FakeTokens(), str(tmp_path / "audit.jsonl"), interceptor=interceptor)  # type: ignore[arg-type]
    try:
        port = env.upstream.port
        cred_ep: dict[str, Any] = {"host": "localhost", "port": port, "access": "full",
                                   "allowed_ips": ["127.0.0.0/8", "::1/128"]}
        if cred_path is not None:
            cred_ep["path"] = cred_path
        creds = load_profiles([_profile(tmp_path, "creds", {
            "id": "z-creds",
            "credentials": [{"name": "c", "token_grant": {
                "token_endpoint": "https://auth.example.com/token"}}],
            "endpoints": [cred_ep],
        })])
        skip = load_profiles([_profile(tmp_path, "skip", {
            "id": "a-skip", "credentials": [],
            "endpoints": [{"host": "localhost", "port": port, "tls": "skip", "access": "full",
                           "allowed_ips": ["127.0.0.0/8", "::1/128"]}],
        })])
        env.policy = PolicyTable(  # type: ignore[assignment]
            [*skip.profiles, *creds.profiles], [*skip.bindings, *creds.bindings]
        )
        with env.connect() as s:
            s.sendall(f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
                      .encode())
            status, _, _ = recv_response(s, head_only=True)
            s.sendall(b"\x16\x03\x01\x00\x05hello")  # a TLS record: the proxy must terminate
            s.settimeout(2)
            try:  # intercepted: the proxy finds no certificate and closes
                while s.recv(4096):
                    pass
            except TimeoutError:
                pass  # a raw tunnel: the upstream waits for the rest of a request
        assert status == 200
        assert env.proxy.counters.tunnels == 0, "a raw tunnel to a credentialed host"
        assert interceptor.hosts == ["localhost"]
        assert env.upstream.connections == 0
    finally:
        env.close()
