"""A hostile agent against static credentials (ARCHITECTURE.md 9), through the running
proxy with profiles loaded from YAML: trying to get a value back in one of our own
answers, to get it sent where it is not bound, or to get a value, a placeholder or a
variable name into a log. Plain HTTP to a loopback upstream; every exchange is real."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from supervisor.credentials.from_profiles import static_credentials
from supervisor.credentials.store import CredentialStore
from supervisor.profiles.loader import load_profiles
from tests.proxy.harness import Env, recv_response

VALUE = "sk-REAL-value-0123456789abcdef"
VAR = "API_KEY"
P = f"openshell:resolve:env:{VAR}"

PROFILE = """\
id: attacked
credentials:
  - {{name: key, env_vars: [API_KEY], auth_style: header, header_name: x-api-key}}
endpoints:
  - host: 127.0.0.1
    port: {port}
    path: /graphql
    protocol: graphql
    access: read-only
    graphql_max_body_bytes: 512
    request_body_credential_rewrite: true
    allowed_ips: [127.0.0.0/8]
  - host: 127.0.0.1
    port: {port}
    path: /rest/**
    protocol: rest
    access: read-only
    allowed_ips: [127.0.0.0/8]
"""


def _env(tmp_path: Path, values: dict[str, str], text: str = PROFILE) -> Env:
    holder: list[CredentialStore] = []
    e = Env(None, None, str(tmp_path / "audit.jsonl"),  # type: ignore[arg-type]
            static_credentials=lambda: holder[0].state)
    p = tmp_path / "profile.yaml"
    p.write_text(text.format(port=e.upstream.port))
    profiles = load_profiles([str(p)])
    e.policy = profiles.table  # type: ignore[assignment]
    holder.append(CredentialStore(static_credentials(profiles.profiles), values, None))
    return e


@pytest.fixture
def env(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG)
    e = _env(tmp_path, {VAR: VALUE})
    yield e
    e.close()
    audit = Path(e.audit_path or "").read_text()
    for text in (audit, caplog.text):
        for secret in (VALUE, "resolve:env", VAR):
            assert secret not in text, (secret, text)


def request(env: Env, method: str, target: str, body: bytes = b"",
            headers: str = "") -> tuple[int, dict[str, str], bytes]:
    port = env.upstream.port
    with env.connect() as s:
        s.sendall(f"{method} http://127.0.0.1:{port}{target} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1:{port}\r\nContent-Length: {len(body)}\r\n{headers}"
                  "Connection: close\r\n\r\n".encode() + body)
        return recv_response(s)


def graphql(env: Env, doc: dict[str, Any]) -> tuple[int, bytes]:
    status, _, body = request(env, "POST", "/graphql", json.dumps(doc).encode(),
                              "Content-Type: application/json\r\n")
    return status, body


def test_graphql_refusal_never_quotes_the_substituted_value(env: Env) -> None:
    """The body is judged as the agent sent it: a refusal that quotes the operation name
    or the parser's complaint quotes the placeholder, never what replaced it."""
    for doc in (
        {"query": "query q { a }", "operationName": P},
        {"query": "query q { a " + P + " }"},
        {"query": 'mutation { delete(key: "' + P + '") }'},
    ):
        status, body = graphql(env, doc)
        assert status == 403, body
        assert VALUE.encode() not in body and json.loads(body)["error"] == "policy_denied"
    assert b"POST" not in env.upstream.received  # nothing went upstream


def test_graphql_inspection_limit_holds_when_the_body_was_read_for_rewriting(env: Env) -> None:
    """graphql_max_body_bytes bounds what is judged, whoever read the body first."""
    status, body = graphql(env, {"query": "query q { a }", "pad": "x" * 1024})
    assert status == 403 and b"inspection limit" in body
    status, body = graphql(env, {"query": "query q { a }", "k": P})
    assert status == 200, body


def test_refusal_reasons_in_the_audit_hide_the_placeholder(env: Env) -> None:
    """A path refused by the rules is named in the reason (status_detail) too."""
    status, _, body = request(env, "POST", f"/rest/{P}/x")
    assert status == 403 and json.loads(body)["error"] == "policy_denied"
    env.audit.close()
    events = [json.loads(x) for x in Path(env.audit_path or "").read_text().splitlines()]
    assert any("[CREDENTIAL]" in e.get("status_detail", "") for e in events)


def test_a_value_past_latin1_goes_out_as_utf8_and_nothing_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Heads are latin-1 text inside the proxy; a value with a character past U+00FF cut
    the connection and logged that character in the traceback."""
    caplog.set_level(logging.DEBUG)
    value = "key-\u20ac-\u00e9-x"
    e = _env(tmp_path, {VAR: value})
    try:
        status, _, _ = request(e, "GET", "/rest/x", headers=f"x-api-key: {P}\r\n")
    finally:
        e.close()
    assert status == 200
    assert f"x-api-key: {value}".encode() in e.upstream.received
    assert "Traceback" not in caplog.text and "\\u20ac" not in caplog.text


REDIRECT = """\
id: redirecting
credentials:
  - {{name: key, env_vars: [API_KEY], auth_style: header, header_name: x-api-key}}
endpoints:
  - {{host: 127.0.0.1, port: {port}, protocol: rest, access: read-only,
     allowed_ips: [127.0.0.0/8]}}
"""


class Reflector:
    """An origin that answers as many real ones do: a redirect that keeps the request's
    target (a trailing-slash or moved-resource 301), and a header echoing the request's
    x-api-key (as a debugging header or a WebSocket subprotocol would)."""

    def __init__(self) -> None:
        self.port = 0
        self.server: Any = None

    async def start(self) -> None:
        import asyncio

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
            target = head.split(" ")[1]
            key = next((ln.split(":", 1)[1].strip() for ln in head.split("\r\n")
                        if ln.lower().startswith("x-api-key:")), "-")
            if "upgrade: websocket" in head.lower():  # a 101 echoing the request's header
                w.write((f"HTTP/1.1 101 Switching {key}\r\nConnection: Upgrade\r\n"
                         f"Upgrade: websocket\r\nX-Echo: {key}\r\n\r\n").encode("latin-1"))
            else:
                w.write((f"HTTP/1.1 301 Moved {key}\r\n"
                         f"Location: http://elsewhere.test{target}/\r\nX-Echo: {key}\r\n"
                         f"Link: <http://elsewhere.test{target}>; rel=next\r\n"
                         "Content-Length: 0\r\n\r\n").encode("latin-1"))
            await w.drain()
            w.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


def test_a_response_head_never_hands_back_a_substituted_value(tmp_path: Path) -> None:
    """A redirect keeping the query (or a header echoing the request) would give the agent
    the value, and its client, following the redirect, would send it to a host it is not
    bound to. In a response head the values of this request show as their placeholders."""
    holder: list[CredentialStore] = []
    e = Env(None, None, str(tmp_path / "audit.jsonl"),  # type: ignore[arg-type]
            static_credentials=lambda: holder[0].state)
    origin = Reflector()
    try:
        e.call(origin.start())
        p = tmp_path / "profile.yaml"
        p.write_text(REDIRECT.format(port=origin.port))
        profiles = load_profiles([str(p)])
        e.policy = profiles.table  # type: ignore[assignment]
        holder.append(
            CredentialStore(static_credentials(profiles.profiles), {VAR: "sk-a/b c€"}, None)
        )
        head = _head(e, f"GET http://127.0.0.1:{origin.port}/v1/{P}?key={P}&x=1 HTTP/1.1\r\n"
                        f"Host: 127.0.0.1:{origin.port}\r\nx-api-key: {P}\r\n"
                        "Connection: close\r\n\r\n")
        switched = _head(e, f"GET http://127.0.0.1:{origin.port}/ws HTTP/1.1\r\n"
                            f"Host: 127.0.0.1:{origin.port}\r\nx-api-key: {P}\r\n"
                            "Connection: Upgrade\r\nUpgrade: websocket\r\n"
                            "Sec-WebSocket-Version: 13\r\n"
                            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    finally:
        if origin.server is not None:
            origin.server.close()
        e.close()
    text = head
    assert text.startswith(f"HTTP/1.1 301 Moved {P}\r\n"), text
    assert f"Location: http://elsewhere.test/v1/{P}?key={P}&x=1/\r\n" in text, text
    assert f"X-Echo: {P}\r\n" in text and "sk-a" not in text and "b%20c" not in text
    assert switched.startswith(f"HTTP/1.1 101 Switching {P}\r\n"), switched
    assert f"X-Echo: {P}\r\n" in switched and "sk-a" not in switched


def _head(env: Env, raw: str) -> str:
    with env.connect() as s:
        s.sendall(raw.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            got = s.recv(65536)
            assert got, head
            head += got
    return head.decode("latin-1")
