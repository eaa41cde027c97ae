"""Reading profile files: YAML parsing, schema, validation, expansion, in one pass.

``load_profiles`` either returns a complete ``ProfileSet`` or raises ``ProfileError``
carrying every diagnostic found (never a traceback for bad input).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:  # the interpreter's own SHA-256: hashlib loads OpenSSL's libcrypto (~2 ms a run)
        from _sha256 import sha256
    except ImportError:  # pragma: no cover - builds without it (3.12 renamed it _sha2)
        from hashlib import sha256

from supervisor.credentials.from_profiles import check_static
from supervisor.profiles.bindings import expand_profile
from supervisor.profiles.diagnostics import ProfileError, Sink
from supervisor.profiles.matcher import PolicyTable
from supervisor.profiles.model import Binding, Endpoint, Profile
from supervisor.profiles.profileset import ProfileSet
from supervisor.profiles.schema import parse_profile
from supervisor.profiles.validation import (
    check_ambiguity,
    check_cleartext_bindings,
    check_endpoint_overlaps,
    check_profile,
    check_skip_tunnels,
)
from supervisor.profiles.yaml_import import yaml
from supervisor.record import replace

MAX_FILE_BYTES = 1 << 20  # a profile is a few KiB; refuse anything absurd

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """Safe loader that refuses duplicate mapping keys (YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {key_node.value!r}", key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_profiles(paths: Sequence[str]) -> ProfileSet:
    sink = Sink()
    digest = sha256()
    return assemble(read_profiles(paths, sink, digest), sink, digest.hexdigest())


def read_profiles(paths: Sequence[str], sink: Sink, digest: Any) -> list[Profile]:
    """Parse the profile files (each one fed to ``digest``); problems go to ``sink``."""
    profiles: list[Profile] = []
    ids: dict[str, str] = {}  # profile id → file that first declared it
    for path in paths:
        data = _read(path, sink)
        _digest_file(digest, path, data)
        if data is None:
            continue
        for index, raw in _documents(path, data, sink):
            raw_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(raw_id, str) and raw_id in ids:
                sink.error(
                    path, raw_id, "id",
                    f"duplicate profile id (already declared in {ids[raw_id]})",
                )
                continue
            if isinstance(raw_id, str):
                ids[raw_id] = path
            profile = parse_profile(raw, path, index, sink)
            if profile is not None:
                profiles.append(profile)
    return profiles


def assemble(profiles: list[Profile], sink: Sink, fingerprint: str) -> ProfileSet:
    """Cross-profile checks and the tables; raises ``ProfileError`` on any error in ``sink``."""
    profiles = [_endpoints_with_binaries(p) for p in profiles]
    profiles.sort(key=lambda p: p.id)
    bindings = _expand_and_check(profiles, sink)
    if sink.error_count:
        raise ProfileError(sink.diagnostics)
    warnings = tuple(d for d in sink.diagnostics if d.severity == "warning")
    return ProfileSet(
        profiles=tuple(profiles),
        bindings=bindings,
        table=PolicyTable(profiles, bindings),
        warnings=tuple(str(d) for d in warnings),
        diagnostics=warnings,
        fingerprint=fingerprint,
    )


def _endpoints_with_binaries(profile: Profile) -> Profile:
    """A profile's ``binaries`` restrict each of its endpoints (none listed: any process);
    symlinks in the listed paths are resolved (the kernel names executables by real path)."""
    from supervisor.binaries.globs import with_resolved

    def restricted(e: Endpoint) -> Endpoint:
        binaries = e.binaries if e.binaries is not None else (profile.binaries or None)
        if binaries is None:
            return e
        return replace(e, binaries=with_resolved(binaries))

    return replace(profile, endpoints=tuple(restricted(e) for e in profile.endpoints))


def fingerprint_files(paths: Sequence[str]) -> str:
    """Same value as ``ProfileSet.fingerprint`` for unchanged files; cheap change check."""
    digest = sha256()
    for path in paths:
        _digest_file(digest, path, _read(path, Sink()))
    return digest.hexdigest()


def _digest_file(digest: Any, path: str, data: bytes | None) -> None:
    encoded = path.encode("utf-8", "surrogateescape")
    digest.update(len(encoded).to_bytes(8, "big") + encoded)
    if data is None:
        digest.update(b"\xff" * 8)  # unreadable: distinct from any content
    else:
        digest.update(len(data).to_bytes(8, "big") + data)


def _read(path: str, sink: Sink) -> bytes | None:
    try:
        # O_NONBLOCK: opening a FIFO must not hang; we refuse non-regular files anyway.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        sink.error(path, None, "", f"cannot open: {exc.strerror or exc}")
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            sink.error(path, None, "", "not a regular file")
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:
            sink.error(path, None, "", f"larger than {MAX_FILE_BYTES} bytes")
            return None
        return b"".join(chunks)
    except OSError as exc:
        sink.error(path, None, "", f"cannot read: {exc.strerror or exc}")
        return None
    finally:
        os.close(fd)


def _documents(path: str, data: bytes, sink: Sink) -> list[tuple[int | None, object]]:
    """The raw profiles of one file: one mapping, or a list of them."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        sink.error(path, None, "", f"not UTF-8 text (byte {exc.start})")
        return []
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # safe: a (C)SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = _one_line(exc.problem or exc.context or "syntax error")
        sink.error(path, None, "", f"malformed YAML{where}: {problem}")
        return []
    # Anything else the YAML library throws on hostile input (invalid timestamps raise
    # ValueError, deep nesting RecursionError, ...) is still just "malformed YAML".
    except Exception as exc:
        sink.error(path, None, "", f"malformed YAML: {type(exc).__name__}")
        return []
    if isinstance(doc, list):
        if not doc:
            sink.warning(path, None, "", "file holds an empty list: no profiles")
        return list(enumerate(doc))
    if isinstance(doc, dict):
        return [(None, doc)]
    if doc is None:
        sink.error(path, None, "", "file is empty: expected a profile mapping or a list of them")
    else:
        sink.error(path, None, "", "expected a profile mapping or a list of them, "
                   f"got {type(doc).__name__}")
    return []


def _expand_and_check(profiles: list[Profile], sink: Sink) -> tuple[Binding, ...]:
    bindings: list[Binding] = []
    where: dict[str, tuple[str, str, str]] = {}
    for profile in profiles:
        check_profile(profile, sink)
        check_static(profile, sink)  # static credentials (ARCHITECTURE.md 9)
        expansion = expand_profile(profile, sink)
        check_cleartext_bindings(profile, expansion.bindings, expansion.fields, sink)
        bindings.extend(expansion.bindings)
        for b in expansion.bindings:
            where[b.id] = (profile.source, profile.id, expansion.fields[b.id])
    check_ambiguity(bindings, where, sink)
    check_skip_tunnels(profiles, bindings, sink)
    check_endpoint_overlaps(profiles, sink)
    bindings.sort(key=lambda b: b.id)
    return tuple(bindings)


def _one_line(text: str) -> str:
    """Diagnostics are single lines: replace control characters, cap the length."""
    return "".join(c if c.isprintable() else " " for c in text)[:200]
