"""Token response validation and error sanitizing on hostile issuer bodies (beyond the
dict-of-text property in tests/grants): raw bytes, nested JSON, unicode controls."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz.oracles import check_token_response, is_clean_text, is_token68
from supervisor.grants import exchange
from supervisor.grants.errors import GrantError
from tests.fuzz.seeds import TOKEN_RESPONSES

_nasty_text = st.text(
    st.one_of(
        st.sampled_from(list("Aa0._~+/-= \t\r\n\x00\x1b\x7f\x85\xa0\u2028\u2029\u202e\ufeff")),
        st.characters(),
    ),
    max_size=300,
)
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), _nasty_text),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)  # fmt: skip
_fields = st.sampled_from(["access_token", "token_type", "expires_in", "error",
                           "error_description", "scope", "x"])  # fmt: skip


def _dumps(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_fields, _json_values, max_size=5), st.integers(100, 599))
def test_hostile_json_bodies(doc: dict[str, object], status: int) -> None:
    check_token_response(_dumps(doc), status)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.integers(100, 599))
def test_raw_bytes_bodies(data: bytes, status: int) -> None:
    check_token_response(data, status)


@settings(max_examples=200, deadline=None)
@given(_nasty_text, st.sampled_from([None, "Bearer", "bearer", "BEARER", "mac"]))
def test_only_token68_is_ever_accepted(token: str, token_type: str | None) -> None:
    doc: dict[str, object] = {"access_token": token}
    if token_type is not None:
        doc["token_type"] = token_type
    try:
        resp = exchange.parse_success(_dumps(doc))
    except GrantError:
        assert not is_token68(token) or token_type == "mac"
        return
    assert resp.access_token == token and is_token68(token)
    assert "\n" not in token and "\r" not in token and " " not in token


def test_seed_bodies() -> None:
    for body in TOKEN_RESPONSES:
        check_token_response(body)
    assert exchange.parse_success(TOKEN_RESPONSES[0]).expires_in == 300


@settings(max_examples=200, deadline=None)
@given(_nasty_text, st.integers(0, 600))
def test_sanitize_text_is_clean_and_bounded(value: str, limit: int) -> None:
    out = exchange.sanitize_text(value, limit)
    assert len(out) == min(len(value), limit) and is_clean_text(out)


_codes = st.one_of(
    st.sampled_from(["invalid_client", "invalid_grant", "server_error", "invalid_token",
                     "Invalid_Client", "invalid_client\n", "tenant_x_locked"]),
    _nasty_text,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(_codes, _nasty_text, st.sampled_from([400, 401, 403, 429, 500, 503]))
def test_issuer_words_never_reach_the_agent_text(code: str, desc: str, status: int) -> None:
    """Issue 12 item 3: whatever ``error``/``error_description`` say, the agent's text is
    the status plus a registered code; the description is in the audit text only."""
    body = _dumps({"error": code, "error_description": desc})
    check_token_response(body, status)
    err = exchange.error_for_status(status, body)
    assert err.reason in (f"token endpoint answered {status}",
                          f"token endpoint answered {status}: {code}")
    kept = exchange.sanitize_error_body(body).get("error_description")
    if kept is not None:
        assert err.audit_detail is not None and kept in err.audit_detail
