"""The loader never raises anything but ProfileError, whatever the file holds."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.profiles.diagnostics import ProfileError
from supervisor.profiles.loader import load_profiles
from tests.profiles.helpers import BASE

KEYS = ["id", "credentials", "endpoints", "binaries", "name", "token_grant", "host", "port",
        "ports", "path", "audience_overrides", "token_endpoint", "scopes", "tls", "allowed_ips",
        "auth_style", "header_name", "cache_ttl_seconds", "audience", "bogus"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=True),
    st.sampled_from(["api.example.com", "*.example.com", "/v1/**", "https://a.example.com/t",
                     "http://x.example.com/t", "10.0.0.0/8", "", "**", "bearer", "skip"]),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=25,
)


def _load(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            load_profiles([str(path)])
        except ProfileError as exc:
            assert exc.errors and all(str(d) for d in exc.diagnostics)


@settings(max_examples=150, deadline=None)
@given(values)
def test_structured_garbage(doc: object) -> None:
    _load(yaml.safe_dump(doc))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(BASE)), values)
def test_mutated_valid_profile(key: str, value: object) -> None:
    _load(yaml.safe_dump({**BASE, key: value}))


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(":-[]{}&*!|>'\"%@`#,? \n\tabc019")), max_size=80))
def test_raw_yamlish_text(text: str) -> None:
    _load(text)


url_chars = st.sampled_from([
    *"hts:/[]@#?%.:-_*0123456789abcxyzABC \\\x00\x7f",
    "https://", "http://", "[::1]", "localhost", ".svc", "example.com", ":8080",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(url_chars, max_size=12).map("".join))
def test_field_checks_never_raise(text: str) -> None:
    from supervisor.profiles.patterns import parse_host_pattern, parse_path_pattern
    from supervisor.profiles.validation import (
        check_binary,
        check_header_name,
        check_scope,
        check_token_endpoint,
    )

    for check in (check_token_endpoint, check_header_name, check_scope, check_binary):
        result = check(text)
        assert result is None or isinstance(result, str)
    for parse in (parse_host_pattern, parse_path_pattern):
        try:
            parse(text)
        except ValueError:
            pass
