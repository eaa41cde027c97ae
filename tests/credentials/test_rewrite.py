"""Placeholder substitution in each part of a request (pure cores)."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import pytest

from supervisor.credentials import rewrite
from supervisor.credentials.placeholders import (
    MISMATCH,
    UNAVAILABLE,
    CredentialRefused,
    Resolver,
    placeholder,
)

KEY = "sk-ant-real/val ue+&="
R = Resolver({"ANTHROPIC_API_KEY": KEY, "GITHUB_TOKEN": "ghp_real"},
             frozenset({"ANTHROPIC_API_KEY"}))
P = placeholder("ANTHROPIC_API_KEY")


def refused(fn, *args) -> str:
    with pytest.raises(CredentialRefused) as info:
        fn(*args)
    return info.value.code


def test_header_whole_value_and_bearer():
    assert rewrite.header_value(R, P) == KEY
    assert rewrite.header_value(R, f"Bearer {P}") == f"Bearer {KEY}"
    assert rewrite.header_value(R, "Bearer nothing-here") is None


def test_basic_is_decoded_rewritten_and_reencoded():
    raw = base64.b64encode(f"x-access-token:{P}".encode()).decode()
    out = rewrite.header_value(R, f"Basic {raw}")
    assert out is not None and out.startswith("Basic ")
    assert base64.b64decode(out[6:]).decode() == f"x-access-token:{KEY}"
    plain = base64.b64encode(b"user:pass").decode()
    assert rewrite.header_value(R, f"Basic {plain}") is None
    # Without its padding (lenient servers decode it): found all the same, and refused
    # where the variable is not bound.
    for user in ("u", "us", "use"):
        bare = base64.b64encode(f"{user}:{P}".encode()).decode().rstrip("=")
        out = rewrite.header_value(R, f"Basic {bare}")
        assert out is not None and base64.b64decode(out[6:]).decode() == f"{user}:{KEY}"
        with pytest.raises(CredentialRefused):
            rewrite.header_value(Resolver({"ANTHROPIC_API_KEY": KEY}, frozenset()), f"Basic {bare}")


def test_mismatch_and_unavailable():
    assert refused(rewrite.header_value, R, placeholder("GITHUB_TOKEN")) == MISMATCH
    assert refused(rewrite.header_value, R, placeholder("NOT_EXPOSED")) == UNAVAILABLE
    assert refused(rewrite.header_value, R, "openshell:resolve:env:") == UNAVAILABLE
    # Only percent-encoded in a header: nobody decodes it upstream, so it cannot work.
    assert refused(rewrite.header_value, R, "openshell%3Aresolve%3Aenv%3AANTHROPIC_API_KEY") == UNAVAILABLE


def test_longest_name_wins():
    # GITHUB_TOKEN2 is another (unexposed) variable, never GITHUB_TOKEN followed by "2".
    r = Resolver({"GITHUB_TOKEN": "x"}, frozenset({"GITHUB_TOKEN"}))
    assert refused(rewrite.header_value, r, placeholder("GITHUB_TOKEN") + "2") == UNAVAILABLE
    assert rewrite.header_value(r, placeholder("GITHUB_TOKEN") + "-2") == "x-2"


def test_header_value_with_line_break_is_refused():
    r = Resolver({"V": "a\r\nInjected: 1"}, frozenset({"V"}))
    assert refused(rewrite.header_value, r, placeholder("V")) == UNAVAILABLE


def test_value_holding_a_placeholder_is_refused():
    r = Resolver({"V": placeholder("V")}, frozenset({"V"}))
    assert refused(rewrite.header_value, r, placeholder("V")) == UNAVAILABLE


def test_path_and_query_percent_encoded_both_ways():
    enc = P.replace(":", "%3A")
    assert rewrite.path(R, f"/v1/{enc}/x") == "/v1/sk-ant-real%2Fval%20ue+&=/x"
    q = rewrite.query(R, f"?a=1&key={enc}&b=%2F")
    assert q is not None
    assert parse_qs(q[1:])["key"] == [KEY]
    assert q.endswith("&b=%2F")  # the rest is kept byte for byte
    assert rewrite.path(R, "/v1/plain") is None and rewrite.query(R, "?a=b") is None


def test_dot_value_cannot_become_a_dot_segment():
    r = Resolver({"V": ".."}, frozenset({"V"}))
    assert refused(rewrite.path, r, "/a/" + placeholder("V")) == UNAVAILABLE


def test_head_counts_changes():
    h = rewrite.head(R, "/v1", "", [("x-api-key", P), ("accept", "*/*")])
    assert h.replaced == 1 and h.headers == [("x-api-key", KEY), ("accept", "*/*")]
    assert rewrite.head_has_placeholder("/v1", "", [("x-api-key", P)])
    assert not rewrite.head_has_placeholder("/v1", "?q=1", [("accept", "*/*")])


@pytest.mark.parametrize(
    ("ctype", "kind"),
    [("application/json", "json"), ("application/vnd.api+json; charset=utf-8", "json"),
     ("application/x-www-form-urlencoded", "form"), ("text/plain;charset=UTF-8", "text"),
     ("text/plain; charset=latin-1", None), ("application/octet-stream", None), (None, None)],
)
def test_body_kind(ctype, kind):
    assert rewrite.body_kind(ctype) == kind


def test_json_body_value_is_escaped():
    r = Resolver({"V": 'q"uo\\te\n'}, frozenset({"V"}))
    body = json.dumps({"key": placeholder("V"), "n": 1}).encode()
    out = rewrite.body(r, "application/json", body)
    assert out is not None and json.loads(out) == {"key": 'q"uo\\te\n', "n": 1}


def test_form_body_and_text_body():
    out = rewrite.body(R, "application/x-www-form-urlencoded", f"a=1&k={P}".encode())
    assert out is not None and parse_qs(out.decode())["k"] == [KEY]
    out = rewrite.body(R, "text/plain", f"key is {P}.".encode())
    assert out == f"key is {KEY}.".encode()
    assert rewrite.body(R, "text/plain", b"no placeholder") is None


def test_body_that_cannot_be_rewritten_fails_closed():
    assert refused(rewrite.body, R, "application/octet-stream", P.encode()) == UNAVAILABLE
    assert refused(rewrite.body, R, "text/plain", b"\xff" + P.encode()) == UNAVAILABLE


def test_websocket_text():
    assert rewrite.websocket_text(R, f'{{"auth":"{P}"}}') == f'{{"auth":"{KEY}"}}'
    assert rewrite.websocket_text(R, "hello") is None
    assert refused(rewrite.websocket_text, R, placeholder("GITHUB_TOKEN")) == MISMATCH


def test_errors_never_name_the_variable_or_value():
    # GITHUB_TOKEN is not allowed here: the refusal must come, and say nothing of it.
    with pytest.raises(CredentialRefused) as info:
        rewrite.header_value(R, placeholder("GITHUB_TOKEN"))
    exc = info.value
    text = f"{exc} {exc.detail} {exc.code} {exc.location}"
    assert "GITHUB_TOKEN" not in text and "ghp_real" not in text and "resolve" not in text
