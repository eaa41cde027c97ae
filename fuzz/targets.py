"""The fuzz targets: name → entry point (one input, bytes), seed corpus and dictionary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fuzz.l7_oracles import check_canonical_path, check_graphql, check_jsonrpc
from fuzz.oracles import check_request_head, check_token_response

ROOT = Path(__file__).resolve().parent

_STATUSES = (200, 200, 400, 401, 429, 500, 503, 302)


def http_head(data: bytes) -> None:
    """What the agent sends: head detection, request parsing, upstream head, chunked body."""
    check_request_head(data)


def token_response(data: bytes) -> None:
    """What an issuer answers: success validation and error sanitizing (status from length)."""
    check_token_response(data, _STATUSES[len(data) % len(_STATUSES)])


def l7_path(data: bytes) -> None:
    """A request path: canonical form, idempotence, no dodge of a path deny rule."""
    check_canonical_path(data.decode("latin-1"))


def graphql_body(data: bytes) -> None:
    """A GraphQL-over-HTTP request (GET query string or POST body): classification."""
    check_graphql(data)


def jsonrpc_body(data: bytes) -> None:
    """A JSON-RPC / MCP request body: classification and the MCP tool decision."""
    check_jsonrpc(data)


@dataclass(frozen=True)
class Target:
    name: str
    entry: Callable[[bytes], None]

    @property
    def corpus(self) -> Path:
        return ROOT / "corpus" / self.name

    @property
    def dictionary(self) -> Path:
        return ROOT / "dicts" / f"{self.name}.dict"


TARGETS = {
    t.name: t
    for t in (
        Target("http_head", http_head),
        Target("token_response", token_response),
        Target("l7_path", l7_path),
        Target("graphql_body", graphql_body),
        Target("jsonrpc_body", jsonrpc_body),
    )
}
