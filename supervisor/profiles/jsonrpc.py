"""JSON-RPC 2.0 and MCP (Streamable HTTP) request classification: what a body asks for.

Pure: bytes in, ``JsonRpcInfo`` out, never an exception. What is read, as OpenShell's
``l7/jsonrpc.rs`` reads it: each call's method (and, for MCP ``tools/call``, the tool
name ``params.name``), whether the body carries client-to-server responses, and whether
it is a batch (every element is judged; one denial denies the batch). Anything malformed
is an ``error``, which no rule allows (fail closed).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

MCP_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_BATCH = 256  # a larger batch is refused rather than judged element by element
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    tool: str | None = None  # MCP tools/call params.name


@dataclass(frozen=True, slots=True)
class JsonRpcInfo:
    calls: tuple[Call, ...] = ()
    is_batch: bool = False
    has_response: bool = False  # the client sent result/error objects (answers)
    receive_stream: bool = False  # MCP GET opening the server-to-client SSE stream
    error: str | None = None


RECEIVE_STREAM = JsonRpcInfo(receive_stream=True)


def classify(body: bytes, *, mcp: bool, strict_tool_names: bool = True) -> JsonRpcInfo:
    try:
        value = json.loads(body, parse_constant=_reject_constant,
                           object_pairs_hook=unique_keys)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return JsonRpcInfo(error="invalid JSON")
    if _too_deep(value):
        return JsonRpcInfo(error="JSON nested too deeply")
    if isinstance(value, list):
        if not value:
            return JsonRpcInfo(is_batch=True, error="empty batch")
        if len(value) > MAX_BATCH:
            return JsonRpcInfo(is_batch=True, error=f"batch larger than {MAX_BATCH}")
        calls: list[Call] = []
        has_response = False
        for item in value:
            kind = _message(item, mcp, strict_tool_names)
            if isinstance(kind, str):
                return JsonRpcInfo(is_batch=True, error=f"batch item invalid: {kind}")
            if kind is None:
                has_response = True
            else:
                calls.append(kind)
        return JsonRpcInfo(tuple(calls), is_batch=True, has_response=has_response)
    kind = _message(value, mcp, strict_tool_names)
    if isinstance(kind, str):
        return JsonRpcInfo(error=kind)
    if kind is None:
        return JsonRpcInfo(has_response=True)
    return JsonRpcInfo((kind,))


def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object with each key once. Parsers disagree on duplicates (Python keeps the
    last, others the first or refuse): '{"method":"x","method":"y"}' must not be judged
    as one call and run as another, so such a body is invalid."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return out


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-standard JSON constant {name}")


def _too_deep(value: object) -> bool:
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > _MAX_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _message(value: object, mcp: bool, strict: bool) -> Call | str | None:
    """A call, ``None`` for a response object, or the reason the message is invalid."""
    if not isinstance(value, dict):
        return "message must be an object"
    if value.get("jsonrpc") != "2.0":
        return "missing or unsupported 'jsonrpc' version (must be \"2.0\")"
    has_method = "method" in value
    has_result = "result" in value or "error" in value
    if has_method and has_result:
        return "message has both method and result/error"
    if has_result:
        return _response(value)
    if not has_method:
        return "missing 'method'"
    method = value["method"]
    if not isinstance(method, str) or not method:
        return "'method' must be a non-empty string"
    if "id" in value and not _valid_id(value["id"]):
        return "'id' must be a string, a number or null"
    params = value.get("params")
    if params is not None and not isinstance(params, dict | list):
        return "'params' must be an object or an array"
    if not mcp:
        return Call(method)
    if params is not None and not isinstance(params, dict):
        return "MCP params must be an object"
    if method != "tools/call":
        return Call(method)
    if "id" not in value:
        return "tools/call must be a request (with an id)"
    name = params.get("name") if isinstance(params, dict) else None
    if not isinstance(name, str):
        return "tools/call needs a string params.name"
    if strict and MCP_TOOL_NAME.fullmatch(name) is None:
        return "tool name outside the MCP-recommended pattern [A-Za-z0-9_.-]{1,128}"
    args = params.get("arguments") if isinstance(params, dict) else None
    if args is not None and not isinstance(args, dict):
        return "tools/call params.arguments must be an object"
    return Call(method, name)


def _response(value: dict[str, object]) -> str | None:
    if ("result" in value) == ("error" in value):
        return "a response has exactly one of result and error"
    if "id" not in value or not _valid_id(value["id"]):
        return "a response needs an id (string, number or null)"
    if "error" in value and not isinstance(value["error"], dict):
        return "a response error must be an object"
    return None


def _valid_id(value: object) -> bool:
    return value is None or (
        isinstance(value, str | int | float) and not isinstance(value, bool)
    )
