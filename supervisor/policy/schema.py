"""Raw policy YAML -> ``SandboxPolicy``, reporting every problem in one pass.

Semantics as OpenShell's policy schema reference: ``version`` must be 1; filesystem paths
absolute, without ``..``, at most 4096 characters, at most 256 in all, ``read_write`` not
``/``; ``landlock.compatibility`` ``best_effort`` (default) or ``hard_requirement``;
``process.run_as_user/run_as_group`` ``sandbox`` or an id from 1 to 4294967294;
``network_policies`` entries with endpoints (the provider-profile endpoint schema, plus
``credential_binding``) and binaries as ``{path: ...}`` objects; ``network_middlewares``
accepted with a warning (not supported here).
"""

from __future__ import annotations

import re
from typing import Any

from supervisor.policy.model import NetworkEntry, SandboxPolicy
from supervisor.profiles import validation as v
from supervisor.profiles.diagnostics import Sink
from supervisor.profiles.model import Endpoint
from supervisor.profiles.schema_ctx import Ctx as _Ctx
from supervisor.profiles.schema_ctx import type_name as _type_name
from supervisor.profiles.schema_endpoint import parse_endpoint as _parse_endpoint
from supervisor.sandbox.fsrules import FsPolicy

TOP_KEYS = frozenset({"version", "filesystem_policy", "landlock", "process",
                      "network_policies", "network_middlewares"})
FS_KEYS = frozenset({"include_workdir", "read_only", "read_write"})
LANDLOCK_KEYS = frozenset({"compatibility"})
PROCESS_KEYS = frozenset({"run_as_user", "run_as_group"})
ENTRY_KEYS = frozenset({"name", "endpoints", "binaries"})
BINARY_KEYS = frozenset({"path"})
BINDING_KEYS = frozenset({"provider"})
COMPATIBILITY = ("best_effort", "hard_requirement")
MAX_PATH = 4096
MAX_PATHS = 256
MAX_ID = 4294967294  # 4294967295 is the kernel's "no id"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def looks_like_policy(doc: object) -> bool:
    """A mapping with policy keys and no profile ``id``: how ``validate`` tells them apart."""
    return isinstance(doc, dict) and "id" not in doc and bool(TOP_KEYS & set(doc))


def parse_policy(raw: object, file: str, sink: Sink) -> SandboxPolicy | None:
    ctx = _Ctx(file, None, "", sink)
    m = ctx.mapping(raw, "", TOP_KEYS, ("version",))
    if m is None:
        if not isinstance(raw, dict):
            return None
        m = {k: val for k, val in raw.items() if isinstance(k, str) and k in TOP_KEYS}
    version = m.get("version")
    if version is not None and (type(version) is not int or version != 1):
        ctx.err("version", f"must be 1, got {version!r}")
    filesystem = _filesystem(ctx, m)
    user, group = _process(ctx, m.get("process"))
    network = _network(ctx, m.get("network_policies"))
    middlewares = _middlewares(ctx, m.get("network_middlewares"))
    if ctx.failed:
        return None
    return SandboxPolicy(file, filesystem, user, group, network, middlewares)


def _paths(ctx: _Ctx, fs: dict[str, Any], key: str) -> tuple[str, ...]:
    def check(path: str) -> str | None:
        if not path.startswith("/"):
            return "must be an absolute path"
        if len(path) > MAX_PATH:
            return f"longer than {MAX_PATH} characters"
        if "\x00" in path or v.check_text(path):
            return "must not contain control characters"
        if ".." in path.split("/"):
            return "must not contain '..' components"
        if key == "read_write" and path.rstrip("/") == "":
            return "'/' is too broad for read_write"
        return None

    return ctx.str_list(fs, key, "filesystem_policy", check) or ()


def _filesystem(ctx: _Ctx, m: dict[str, Any]) -> FsPolicy | None:
    hard = False
    raw_ll = m.get("landlock")
    if raw_ll is not None:
        ll = ctx.mapping(raw_ll, "landlock", LANDLOCK_KEYS, ())
        if ll is not None:
            hard = ctx.one_of(ll, "compatibility", "landlock", COMPATIBILITY,
                              "best_effort") == "hard_requirement"
    raw = m.get("filesystem_policy")
    if raw is None:
        if hard:
            ctx.warn("landlock", "no filesystem_policy: Landlock has nothing to enforce")
        return None
    fs = ctx.mapping(raw, "filesystem_policy", FS_KEYS, ())
    if fs is None:
        return None
    read_only = _paths(ctx, fs, "read_only")
    read_write = _paths(ctx, fs, "read_write")
    if len(read_only) + len(read_write) > MAX_PATHS:
        ctx.err("filesystem_policy", f"more than {MAX_PATHS} paths in read_only and read_write")
    include = ctx.get(fs, "include_workdir", "filesystem_policy", bool, False)
    return FsPolicy(read_only, read_write, include, hard)


def _process(ctx: _Ctx, raw: object) -> tuple[str | None, str | None]:
    if raw is None:
        return None, None
    process = ctx.mapping(raw, "process", PROCESS_KEYS, ())
    if process is None:
        return None, None
    return _identity(ctx, process, "run_as_user"), _identity(ctx, process, "run_as_group")


def _identity(ctx: _Ctx, process: dict[str, Any], key: str) -> str | None:
    if process.get(key) is None:
        return None
    value = process[key]
    text = str(value) if type(value) is int else value
    if not isinstance(text, str):
        ctx.err(f"process.{key}", f"expected a string, got {_type_name(value)}")
        return None
    if text == "sandbox":
        return text
    if not text.isascii() or not text.isdigit():
        ctx.err(f"process.{key}", f"must be 'sandbox' or a numeric id, got {text!r}")
        return None
    number = int(text)
    if number == 0:
        ctx.err(f"process.{key}", "0 (root) is not allowed")
        return None
    if number > MAX_ID:
        ctx.err(f"process.{key}", f"must be at most {MAX_ID}")
        return None
    return str(number)


def _network(ctx: _Ctx, raw: object) -> tuple[NetworkEntry, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        ctx.err("network_policies", f"expected a mapping, got {_type_name(raw)}")
        return ()
    entries = []
    for key, value in raw.items():
        if not isinstance(key, str) or _KEY.fullmatch(key) is None:
            ctx.err(f"network_policies.{key}", "entry key must be 1-128 characters of "
                    "A-Z a-z 0-9 . _ - starting with a letter or digit")
            continue
        entry = _entry(ctx, key, value)
        if entry is not None:
            entries.append(entry)
    return tuple(entries)


def _entry(ctx: _Ctx, key: str, raw: object) -> NetworkEntry | None:
    path = f"network_policies.{key}"
    m = ctx.mapping(raw, path, ENTRY_KEYS, ("endpoints",))
    if m is None:
        return None
    before = ctx.sink.error_count
    name = ctx.get(m, "name", path, str, key, v.check_text)
    endpoints: list[Endpoint] = []
    bound: list[tuple[Endpoint, str]] = []
    raw_eps = m.get("endpoints")
    if not isinstance(raw_eps, list):
        ctx.err(f"{path}.endpoints", f"expected a list, got {_type_name(raw_eps)}")
        raw_eps = []
    for i, raw_ep in enumerate(raw_eps):
        parsed = _endpoint(ctx, raw_ep, f"{path}.endpoints[{i}]")
        if parsed is not None:
            endpoint, provider = parsed
            (bound.append((endpoint, provider)) if provider is not None
             else endpoints.append(endpoint))
    binaries = _binaries(ctx, m.get("binaries"), f"{path}.binaries")
    if m.get("binaries") is None:
        ctx.warn(f"{path}.binaries", "no binaries: no process may use these endpoints "
                 "(as OpenShell; list the executables, or '/**' for any)")
    if ctx.sink.error_count != before:
        return None
    return NetworkEntry(key, name, tuple(endpoints), tuple(bound), binaries)


def _endpoint(ctx: _Ctx, raw: object, path: str) -> tuple[Endpoint, str | None] | None:
    if not isinstance(raw, dict):
        ctx.err(path, f"expected a mapping, got {_type_name(raw)}")
        return None
    raw = dict(raw)
    provider: str | None = None
    binding = raw.pop("credential_binding", None)
    if binding is not None:
        bm = ctx.mapping(binding, f"{path}.credential_binding", BINDING_KEYS, ("provider",))
        if bm is not None:
            provider = ctx.get(bm, "provider", f"{path}.credential_binding", str, "",
                               v.check_identifier) or None
    if raw.get("protocol") == "tcp":
        # No transparent capture here: a native TCP client does not use the proxy. The
        # entry still opens host:port to clients that do (a CONNECT tunnel, no inspection).
        ctx.warn(f"{path}.protocol", "'tcp' (transparent capture) is not supported: reachable "
                 "only as a CONNECT tunnel through the proxy")
    endpoint = _parse_endpoint(ctx, raw, path)
    if endpoint is None:
        return None
    return endpoint, provider


def _binaries(ctx: _Ctx, raw: object, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        ctx.err(path, f"expected a list, got {_type_name(raw)}")
        return ()
    out: list[str] = []
    for i, item in enumerate(raw):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            ctx.err(where, "expected {path: ...} (a binary object), got a string")
            continue
        m = ctx.mapping(item, where, BINARY_KEYS, ("path",))
        if m is None:
            continue
        value = ctx.get(m, "path", where, str, "", v.check_binary)
        if value:
            out.append(value)
    return tuple(out)


def _middlewares(ctx: _Ctx, raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        ctx.err("network_middlewares", f"expected a mapping, got {_type_name(raw)}")
        return ()
    keys = tuple(str(k) for k in raw)
    if keys:
        ctx.warn("network_middlewares", "not supported: ignored "
                 f"({', '.join(repr(k) for k in keys)})")
    return keys


