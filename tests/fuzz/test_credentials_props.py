"""Properties of placeholder substitution and the binding table (hypothesis)."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, quote, unquote

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from supervisor.credentials import rewrite
from supervisor.credentials.placeholders import (
    MISMATCH,
    PREFIX,
    CredentialRefused,
    Resolver,
    contains_marker,
    placeholder,
)
from supervisor.credentials.scope import BindingTable, BoundEndpoint, StaticCredential

_names = st.from_regex(r"[A-Z][A-Z0-9_]{0,12}", fullmatch=True)
_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), min_size=1, max_size=30)
_filler = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).filter(
    lambda s: "openshell" not in s.lower() and "%" not in s
)


def _encode_some(text: str, mask: list[bool]) -> str:
    """Percent-encode the characters of ``text`` where ``mask`` says so."""
    return "".join(
        f"%{ord(c):02X}" if mask[i % len(mask)] and c.isascii() else c for i, c in enumerate(text)
    )


@given(var=_names, value=_values, before=_filler, after=_filler)
def test_raw_substitution_puts_the_value_where_the_placeholder_was(var, value, before, after):
    assume(not after[:1].isalnum() and not after.startswith("_"))
    assume(PREFIX not in value)
    r = Resolver({var: value}, frozenset({var}))
    out, n = r.substitute(before + placeholder(var) + after, "body")
    assert n == 1 and out == before + value + after


@given(var=_names, value=_values, mask=st.lists(st.booleans(), min_size=1, max_size=8),
       before=_filler.map(lambda s: quote(s, safe="/")), after=_filler.map(lambda s: quote(s, safe="/")))
def test_percent_encoded_placeholders_are_found_and_values_encoded(var, value, mask, before, after):
    assume(not after[:1].isalnum() and not after.startswith("_"))
    assume(PREFIX not in value and value not in (".", ".."))
    r = Resolver({var: value}, frozenset({var}))
    target = "/" + before + _encode_some(placeholder(var), mask) + after
    out = rewrite.path(r, target)
    assert out is not None
    assert unquote(out) == unquote("/" + before) + value + unquote(after)
    # The value never adds a path segment.
    assert out.count("/") == target.count("/")


@given(text=st.text(max_size=60), var=_names, value=_values, allowed=st.booleans(),
       mask=st.lists(st.booleans(), min_size=1, max_size=8), cut=st.integers(0, 60))
@settings(max_examples=300)
def test_output_never_carries_a_marker(text, var, value, allowed, mask, cut):
    """Whatever the agent sends: refused, or forwarded without any placeholder left."""
    text = text[:cut] + _encode_some(placeholder(var), mask) + text[cut:]
    r = Resolver({var: value}, frozenset({var}) if allowed else frozenset())
    for fn in (rewrite.path, rewrite.query, rewrite.header_value):
        try:
            out = fn(r, text)
        except CredentialRefused as exc:
            assert exc.code != MISMATCH or not allowed
            continue
        # None = nothing to replace, which our inserted placeholder rules out.
        assert out is not None and not contains_marker(out)


@given(var=_names, value=_values, user=_filler.filter(lambda s: ":" not in s))
def test_basic_round_trip(var, value, user):
    assume(PREFIX not in value and not any(ord(c) < 0x20 for c in value))
    r = Resolver({var: value}, frozenset({var}))
    raw = base64.b64encode(f"{user}:{placeholder(var)}".encode()).decode()
    out = rewrite.header_value(r, f"Basic {raw}")
    assert out is not None
    assert base64.b64decode(out.split(" ", 1)[1]).decode() == f"{user}:{value}"


@given(var=_names, value=st.text(max_size=30).filter(lambda v: v and PREFIX not in v),
       other=st.dictionaries(_filler.filter(lambda k: k != "k"), _filler, max_size=3))
def test_json_and_form_bodies_decode_to_the_value(var, value, other):
    r = Resolver({var: value}, frozenset({var}))
    doc = {**other, "k": placeholder(var)}
    out = rewrite.body(r, "application/json", json.dumps(doc).encode())
    assert out is not None and json.loads(out) == {**other, "k": value}
    form = "&".join([*(f"{quote(a)}={quote(b)}" for a, b in other.items()), f"k={placeholder(var)}"])
    out = rewrite.body(r, "application/x-www-form-urlencoded", form.encode())
    assert out is not None
    assert parse_qs(out.decode(), keep_blank_values=True)["k"] == [value]


_hosts = st.sampled_from(["api.a.com", "b.a.com", "x.b.com", "api.github.com"])


@given(decls=st.lists(st.tuples(st.sampled_from(["p1", "p2", "p3"]), _names, _hosts),
                      min_size=1, max_size=6),
       host=_hosts)
def test_binding_is_the_union_of_declaring_profiles_endpoints(decls, host):
    """A variable may be used at a host iff some profile declaring it lists that host."""
    profiles: dict[str, tuple[set[str], set[str]]] = {}
    for pid, var, h in decls:
        vs, hs = profiles.setdefault(pid, (set(), set()))
        vs.add(var)
        hs.add(h)
    creds = [
        StaticCredential(pid, "c", tuple(sorted(vs)), False,
                         tuple(BoundEndpoint(h, (443,), None) for h in sorted(hs)))
        for pid, (vs, hs) in profiles.items()
    ]
    table = BindingTable(creds)
    expected = {v for vs, hs in profiles.values() if host in hs for v in vs}
    assert table.scope(host, 443, "/x") .variables == expected
    assert table.scope(host, 80, "/x").variables == frozenset()


@given(var=_names, value=_values, parts=st.lists(st.tuples(_filler, st.integers(0, 2)), max_size=6),
       name=st.sampled_from(["Location", "Link", "X-Echo", "Set-Cookie"]))
def test_a_response_head_hides_every_form_of_a_sent_value(var, value, parts, name):
    """Whatever the upstream writes around the value (raw, or percent-encoded as the path or
    the query carried it), no form of it is left in the head the agent gets."""
    ph = placeholder(var)
    # Ends outside the placeholder's characters: no form can straddle a placeholder put
    # in its place (such a straddle reveals nothing, but would make the check below moot).
    assume(value[0] not in ph and value[-1] not in ph)
    reflected = rewrite.reflections({var: value})
    forms = [form for form, _ in reflected]
    assert len(forms) <= 3 and all(p == ph for _, p in reflected)
    text = "".join(f + forms[i % len(forms)] for f, i in parts)
    reason, headers = rewrite.hide_in_head(text, [(name, text), ("Content-Length", "7")],
                                           reflected)
    for out in (reason, headers[0][1]):
        assert all(form not in out for form in forms)
        assert out.count(ph) >= len(parts)
    assert headers[1] == ("Content-Length", "7")


@given(text=st.text(max_size=300), var=_names, mask=st.lists(st.booleans(), min_size=1, max_size=8),
       cut=st.integers(0, 300))
def test_refusal_reasons_never_carry_a_placeholder(text, var, mask, cut):
    """A refusal reason may quote the agent's path or body: as logged and as shown, any
    placeholder in it (raw or percent-encoded) is redacted, however it is cut."""
    from supervisor.audit import _redact
    from supervisor.proxy.errors import sanitize

    text = text[:cut] + _encode_some(placeholder(var), mask) + text[cut:]
    assert not contains_marker(sanitize(text))
    assert not contains_marker(_redact(text))


@given(secret=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), min_size=16,
                      max_size=40),
       before=st.binary(max_size=8), after=st.binary(max_size=8),
       how=st.sampled_from(["b64", "urlsafe", "quote", "plain"]))
def test_a_secret_wrapped_in_a_common_encoding_is_still_found(secret, before, after, how):
    """The 125 check sees through what configuration wraps a secret in: base64 whatever
    precedes it (a Docker auth is base64 of 'user:token'), percent-encoding (a URL)."""
    import base64

    from supervisor.sandbox.environment import leaked_secret

    data = before + secret.encode() + after
    value = {
        "b64": lambda: base64.b64encode(data).decode(),
        "urlsafe": lambda: base64.urlsafe_b64encode(data).decode(),
        "quote": lambda: quote(data, safe=""),
        "plain": lambda: data.decode("latin-1"),
    }[how]()
    if how == "plain":
        value = "x" + secret + "y"
    assert leaked_secret({"WRAPPED": value}, {secret}) == "WRAPPED"
    assert leaked_secret({}, {secret}, ["agent", value]) == "argument 1 of the command"
