"""Method overrides: the method an upstream framework may run a request as instead of the
one on its request line. Pure (no I/O).

Rails (Rack::MethodOverride), Express method-override, Symfony/Laravel and Google's APIs
honour an override header on a POST; Symfony/Laravel a ``_method`` query parameter too;
Rails and Symfony a ``_method`` form field (Rack parses a POST without a Content-Type as a
form). The L7 decision judges a request as each method named, so an override can never
run a method the rules deny.

Not read: ``_method`` inside a multipart body (Rails) or a JSON body (Laravel). Reading
those whole would refuse every large upload (a wheel to PyPI, a blob to GitHub) on a
host whose rules deny some method; see ARCHITECTURE.md 4.2.
"""

from __future__ import annotations

from collections.abc import Sequence

from supervisor.profiles.canonical import query_params
from supervisor.proxy.http1 import METHOD_OVERRIDES

PARAM = "_method"
# What Rack::MethodOverride lets a POST become (the widest of the frameworks above).
OVERRIDABLE = ("GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "LINK", "UNLINK")
# Bodies read for a '_method' field only when an override would change the decision;
# a larger one is refused then (fail closed).
BODY_LIMIT = 1 << 20
_FORM = "application/x-www-form-urlencoded"


def override_methods(
    method: str, headers: Sequence[tuple[str, str]], query: dict[str, list[str]]
) -> list[str]:
    """The methods a header or a ``_method`` query parameter names (upper-cased, each
    once, ``method`` itself left out)."""
    named: list[str] = []
    for name, value in headers:  # a loop: most requests name no override at all
        if name.lower() in METHOD_OVERRIDES:
            named += value.split(",")
    named += query.get(PARAM, ())
    return _methods(method, named) if named else []


def _content_types(headers: Sequence[tuple[str, str]]) -> list[str]:
    return [v.split(";", 1)[0].strip().lower() for k, v in headers
            if k.lower() == "content-type"]


def body_may_override(method: str, headers: Sequence[tuple[str, str]]) -> bool:
    """Is this a POST whose body a framework reads as a form (urlencoded or untyped)?"""
    types = _content_types(headers)
    return method.upper() == "POST" and (not types or _FORM in types)


def body_overrides(method: str, body: bytes) -> list[str]:
    """The methods a form body's ``_method`` fields name."""
    return _methods(method, query_params(body.decode("latin-1")).get(PARAM, []))


def _methods(method: str, named: list[str]) -> list[str]:
    wanted = (m.strip(" \t").upper() for m in named)
    return [m for m in dict.fromkeys(wanted) if m and m != method.upper()]
