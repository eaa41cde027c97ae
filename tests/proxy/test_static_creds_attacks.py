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
