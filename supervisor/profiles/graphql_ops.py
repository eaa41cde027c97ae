"""GraphQL-over-HTTP request classification: operation type, name and root fields.

Pure: (method, query parameters, body) in, ``GraphqlInfo`` out, never an exception. Read
as OpenShell's ``l7/graphql.rs`` reads it: ``GET`` takes ``query``/``operationName``/
``extensions``/``id`` from the query string (each at most once), ``POST`` a JSON object
or a batch (array) of them; the selected operation (by ``operationName``, or the only
one) gives its type (no keyword = query), name and root fields (fragments and inline
fragments expanded); an Automatic Persisted Query hash (``extensions.persistedQuery.
sha256Hash``) or a saved-query ``id``/``documentId``/``queryId`` without a document is a
persisted query, judged only through the endpoint's registry. Anything else is an
``error``, which no rule allows.

The document is parsed by graphql-core (a maintained, spec-conformant parser), imported
here only when a ``protocol: graphql`` endpoint is actually used, with a token limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from supervisor.profiles.jsonrpc import unique_keys

MAX_TOKENS = 20_000
MAX_BATCH = 64
_URL_PARAMS = ("query", "operationName", "variables", "extensions", "id", "documentId",
               "queryId")


@dataclass(frozen=True, slots=True)
class Operation:
    operation_type: str  # query | mutation | subscription; "" = persisted, unresolved
    operation_name: str | None = None
    fields: tuple[str, ...] = ()
    persisted_hash: str | None = None
    persisted_id: str | None = None

    @property
    def needs_registry(self) -> bool:
        return not self.operation_type


@dataclass(frozen=True, slots=True)
class GraphqlInfo:
    operations: tuple[Operation, ...] = field(default=())
    error: str | None = None


def classify(method: str, params: dict[str, list[str]], body: bytes) -> GraphqlInfo:
    try:
        if method == "GET":
            if body:
                # express-graphql reads what the URL lacks from the body, GET included.
                raise _Invalid("GraphQL GET request carries a body")
            return GraphqlInfo(_classify_get(params))
        if method == "POST":
            if any(k in params for k in _URL_PARAMS):
                # express-graphql (and others) take these from the URL before the body,
                # for POST too: the body judged would not be the operation run.
                raise _Invalid("GraphQL POST carries GraphQL parameters in its URL")
            return GraphqlInfo(_classify_post(body))
        return GraphqlInfo(error=f"unsupported GraphQL HTTP method {method}")
    except _Invalid as exc:
        return GraphqlInfo(error=str(exc))


class _Invalid(Exception):
    pass


def _one(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise _Invalid(f"GraphQL GET parameter {key!r} appears more than once")
    return values[0] or None


def _classify_get(params: dict[str, list[str]]) -> tuple[Operation, ...]:
    raw_ext = _one(params, "extensions")
    extensions: object = None
    if raw_ext is not None:
        try:
            extensions = json.loads(raw_ext, object_pairs_hook=unique_keys)
        except ValueError:
            extensions = None
    ids = [(k, v) for k in ("id", "documentId", "queryId") if (v := _one(params, k))]
    if len(ids) > 1:
        raise _Invalid("GraphQL GET persisted-query id parameters must not be combined")
    return (_envelope(_one(params, "query"), _one(params, "operationName"), extensions,
                      ids[0][1] if ids else None),)


def _classify_post(body: bytes) -> tuple[Operation, ...]:
    if not body:
        raise _Invalid("GraphQL POST body is empty")
    try:
        value = json.loads(body, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError, UnicodeDecodeError):
        raise _Invalid("GraphQL request body is not valid JSON") from None
    if isinstance(value, list):
        if not value:
            raise _Invalid("GraphQL batch request is empty")
        if len(value) > MAX_BATCH:
            raise _Invalid(f"GraphQL batch larger than {MAX_BATCH}")
        return tuple(_json_envelope(item) for item in value)
    if isinstance(value, dict):
        return (_json_envelope(value),)
    raise _Invalid("GraphQL JSON envelope must be an object or an array")


def _json_envelope(value: object) -> Operation:
    if not isinstance(value, dict):
        raise _Invalid("GraphQL batch item must be an object")
    query = value.get("query")
    name = value.get("operationName")
    pid = next(
        (value[k] for k in ("id", "documentId", "queryId") if isinstance(value.get(k), str)),
        None,
    )
    return _envelope(
        query if isinstance(query, str) else None,
        name if isinstance(name, str) else None,
        value.get("extensions"),
        pid,
    )


def _persisted_hash(extensions: object) -> str | None:
    if not isinstance(extensions, dict):
        return None
    pq = extensions.get("persistedQuery")
    h = pq.get("sha256Hash") if isinstance(pq, dict) else None
    return h if isinstance(h, str) and h else None


def _envelope(
    query: str | None, name: str | None, extensions: object, pid: str | None
) -> Operation:
    phash = _persisted_hash(extensions)
    if query is not None and query.strip():
        op = _document(query, name)
        return Operation(op.operation_type, op.operation_name, op.fields, phash, pid)
    if phash is not None or pid is not None:
        return Operation("", name, (), phash, pid)
    raise _Invalid("GraphQL request has no query document or persisted query identifier")


def _document(query: str, wanted: str | None) -> Operation:
    # graphql-core is imported on this path only: start-up never pays for it.
    from graphql import GraphQLError, parse
    from graphql.language import (
        FieldNode,
        FragmentDefinitionNode,
        FragmentSpreadNode,
        InlineFragmentNode,
        OperationDefinitionNode,
    )

    try:
        doc = parse(query, no_location=True, max_tokens=MAX_TOKENS)
    except GraphQLError as exc:
        raise _Invalid(f"GraphQL document parse error: {exc.message}") from None
    except RecursionError:
        raise _Invalid("GraphQL document nested too deeply") from None
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {
        d.name.value: d for d in doc.definitions if isinstance(d, FragmentDefinitionNode)
    }
    if not ops:
        raise _Invalid("GraphQL document contains no executable operation")
    if wanted:
        chosen = [o for o in ops if o.name is not None and o.name.value == wanted]
        if not chosen:
            raise _Invalid(f"GraphQL operationName {wanted!r} was not found")
        if len(chosen) > 1:
            # graphql-js's executor runs the LAST of them when validation is skipped.
            raise _Invalid(f"GraphQL operationName {wanted!r} names several operations")
        op = chosen[0]
    elif len(ops) == 1:
        op = ops[0]
    else:
        raise _Invalid("GraphQL document has several operations but no operationName")
    fields: set[str] = set()
    seen: set[str] = set()
    # Iterative walk of the root selection set (fragments expanded once each).
    stack: list[Any] = [op.selection_set]
    while stack:
        sel_set = stack.pop()
        if sel_set is None:
            continue
        for sel in sel_set.selections:
            if isinstance(sel, FieldNode):
                fields.add(sel.name.value)
            elif isinstance(sel, InlineFragmentNode):
                stack.append(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                fname = sel.name.value
                if fname not in seen and fname in fragments:
                    seen.add(fname)
                    stack.append(fragments[fname].selection_set)
    return Operation(
        op.operation.value, op.name.value if op.name is not None else None,
        tuple(sorted(fields)),
    )


def summary(info: GraphqlInfo) -> str:
    """One log-safe line: types, names and root fields (never variables or values)."""
    if info.error is not None:
        return f"graphql_error={info.error!r}"
    return "graphql_ops=" + ";".join(
        f"type={o.operation_type or '-'} name={o.operation_name or '-'} "
        f"fields={','.join(o.fields) or '-'}"
        for o in info.operations
    )
