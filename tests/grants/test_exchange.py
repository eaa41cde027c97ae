"""Sans-IO exchange helpers: the form, success validation, error sanitizing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.grants import exchange
from supervisor.grants.errors import GrantError
from supervisor.profiles.model import JWT_BEARER, JWT_SPIFFE, GrantSpec


def spec(audience: str = "alpha", scopes: tuple[str, ...] = ("a", "b"),
         assertion: str = JWT_BEARER) -> GrantSpec:
    return GrantSpec("https://issuer.test/token", "aud", assertion, audience, scopes, None)


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_form_exact_fields() -> None:
    assert exchange.build_form(spec(), "SVID") == {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": "SVID",
        "audience": "alpha",
        "scope": "a b",
    }


def test_form_omits_empty_audience_and_scope_and_never_has_client_id() -> None:
    form = exchange.build_form(spec(audience="", scopes=(), assertion=JWT_SPIFFE), "S")
    assert form == {"grant_type": "client_credentials", "client_assertion_type": JWT_SPIFFE,
                    "client_assertion": "S"}
    assert "client_id" not in form


def test_form_rejects_unknown_assertion_type() -> None:
    with pytest.raises(GrantError):
        exchange.build_form(spec(assertion="urn:other"), "S")


def test_valid_success() -> None:
    r = exchange.parse_success(body(access_token="abc.DEF-_~+/==", token_type="bEaReR",
                                    expires_in=60))
    assert r.access_token == "abc.DEF-_~+/==" and r.expires_in == 60
    assert "abc" not in repr(r)  # the token never shows in a repr
    assert exchange.parse_success(body(access_token="t")).expires_in is None


@pytest.mark.parametrize("token", [
    "a\r\nX-Injected: 1", "a\nb", "abc\n", "a b", " abc", "abc ", "tök", "a=b", "=", "", "a\tb",
    "a\x00", None, 12, ["a"],
])
def test_bad_access_tokens_rejected(token: object) -> None:
    with pytest.raises(GrantError) as info:
        exchange.parse_success(body(access_token=token, token_type="Bearer"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("extra", [
    {"token_type": "DPoP"}, {"token_type": "mac"}, {"token_type": 1},
    {"expires_in": -1}, {"expires_in": "60"}, {"expires_in": True}, {"expires_in": 1.5},
])
def test_bad_metadata_rejected(extra: dict[str, object]) -> None:
    with pytest.raises(GrantError):
        exchange.parse_success(body(access_token="tok", **extra))


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'"tok"', b"", b"\xff\xfe", b"{" * 5000])
def test_non_object_bodies_rejected(raw: bytes) -> None:
    with pytest.raises(GrantError):
        exchange.parse_success(raw)


def test_error_body_sanitized_and_cut() -> None:
    raw = json.dumps({"error": "invalid_client\n", "error_description": "a" * 300,
                      "secret_debug": "do-not-leak"}).encode()
    assert exchange.sanitize_error_body(raw) == {"error": "invalid_client?",
                                                 "error_description": "a" * 256}
    err = exchange.error_for_status(401, raw)
    assert not err.retryable
    assert "do-not-leak" not in str(err) and "\n" not in str(err)
    assert "invalid_client" not in str(err)  # not a registered code once sanitized
    assert err.audit_detail is not None and "do-not-leak" not in err.audit_detail
    assert "invalid_client?" in err.audit_detail and "a" * 256 in err.audit_detail


def test_error_status_classes() -> None:
    assert exchange.error_for_status(500, b"<html>").retryable
    assert exchange.error_for_status(429, b"").retryable
    assert not exchange.error_for_status(400, b"").retryable
    assert "redirect" in str(exchange.error_for_status(302, b""))


@pytest.mark.parametrize("url,ok", [
    ("https://issuer.example/token", True),
    ("http://127.0.0.1:8080/token", True),
    ("http://[::1]/token", True),
    ("http://localhost/token", True),
    ("http://issuer.auth.svc/token", True),
    ("http://issuer.auth.svc.cluster.local/token", True),
    ("http://issuer.example/token", False),
    ("http://10.0.0.1/token", False),
    ("ftp://127.0.0.1/", False),
    ("https://user:pw@issuer.example/", False),
    ("https:///nohost", False),
])
def test_endpoint_allowed(url: str, ok: bool) -> None:
    assert exchange.endpoint_allowed(url) is ok


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_token68_property(value: str) -> None:
    accepted = exchange.is_token68(value)
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~+/-")
    stripped = value.rstrip("=")
    assert accepted == (bool(stripped) and set(stripped) <= allowed)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=20), st.one_of(st.text(), st.integers(), st.none())))
def test_sanitized_fields_are_safe(fields: dict[str, object]) -> None:
    out = exchange.sanitize_error_body(json.dumps(fields).encode())
    assert set(out) <= {"error", "error_description"}
    for value in out.values():
        assert len(value) <= 256
        assert all(ch.isprintable() or ch == " " for ch in value)


@pytest.mark.parametrize("status", [400, 401, 500])
def test_issuer_text_goes_to_the_audit_detail_only(status: int) -> None:
    """Issue 12 item 3: the agent sees the step, the status and a registered RFC 6749
    ``error`` code; ``error_description`` and unregistered codes reach the audit only."""
    raw = json.dumps({"error": "invalid_client",
                      "error_description": "user alice@corp not in realm\r\nX: 1"}).encode()
    err = exchange.error_for_status(status, raw)
    assert str(err) == f"token_endpoint: token endpoint answered {status}: invalid_client"
    assert "alice" not in str(err) and "alice" not in err.reason
    assert err.audit_detail is not None and "user alice@corp not in realm??X: 1" in err.audit_detail
    private = exchange.error_for_status(
        status, json.dumps({"error": "tenant_7f3_locked", "error_description": "d"}).encode())
    assert private.reason == f"token endpoint answered {status}"
    assert private.audit_detail is not None and "tenant_7f3_locked (d)" in private.audit_detail


def test_every_rfc6749_error_code_is_shown() -> None:
    for code in ("invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
                 "unsupported_grant_type", "invalid_scope", "access_denied",
                 "unsupported_response_type", "server_error", "temporarily_unavailable"):
        body = json.dumps({"error": code}).encode()
        assert exchange.error_for_status(400, body).reason.endswith(f": {code}")
    for code in ("Invalid_Client", "invalid_client ", "invalid_token", "x"):
        body = json.dumps({"error": code}).encode()
        assert exchange.error_for_status(400, body).reason == "token endpoint answered 400"
