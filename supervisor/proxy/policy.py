"""Interfaces the proxy is coded against: the route table and the TLS interceptor.

The profile matcher (``supervisor.profiles.matcher.PolicyTable``) and the interception CA
(``supervisor.proxy.interception``) implement these structurally; tests use fakes.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from supervisor.profiles.matcher import PolicyTable
from supervisor.profiles.model import Binding, Endpoint


class RoutePolicy(Protocol):
    def match_endpoint(
        self, host: str, port: int, path: str, usable: Callable[[Endpoint], bool] | None = None
    ) -> Endpoint | None: ...

    def match_binding(
        self, host: str, port: int, path: str, usable: Callable[[Binding], bool] | None = None
    ) -> Binding | None: ...

    def declares(self, host: str, port: int) -> bool: ...


class BinaryJudge(Protocol):
    """The connecting executable of one agent connection (ARCHITECTURE.md 11)."""

    def allows(self, patterns: tuple[str, ...]) -> bool: ...

    def denial(self) -> str: ...

    def binary(self) -> str | None: ...


@runtime_checkable
class InspectionHint(Protocol):
    """Optional: a table that knows whether any endpoint/binding on (host, port) needs
    request-level inspection. Without it the proxy decides conservatively from "/"."""

    def needs_inspection(self, host: str, port: int) -> bool: ...


@runtime_checkable
class BindingHint(Protocol):
    """Optional: a table that knows whether any credential binding (any path) covers
    (host, port). Without it the proxy asks for the binding at "/"."""

    def binds(self, host: str, port: int) -> bool: ...


def may_inject(policy: RoutePolicy, host: str, port: int) -> bool:
    """Could a request through a tunnel to (host, port) get a credential?"""
    # The profile table by its type first: a check against a runtime_checkable protocol
    # walks the protocol's attributes on every call (several per CONNECT).
    if type(policy) is PolicyTable or isinstance(policy, BindingHint):
        return policy.binds(host, port)
    return policy.match_binding(host, port, "/") is not None


class Interceptor(Protocol):
    def server_context(self, host: str) -> ssl.SSLContext: ...


def connect_needs_inspection(policy: RoutePolicy, host: str, port: int) -> bool:
    """Does a CONNECT to a declared (host, port) have to be opened up (intercepted)?"""
    if type(policy) is PolicyTable or isinstance(policy, InspectionHint):
        return policy.needs_inspection(host, port)
    endpoint = policy.match_endpoint(host, port, "/")
    if endpoint is None:
        return True  # declared only for some paths: paths can only be checked inside
    if policy.match_binding(host, port, "/") is not None:
        return True
    return endpoint.access not in (None, "full")
