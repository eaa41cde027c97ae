"""Reading a sandbox policy file and merging its network entries with the profiles.

Each ``network_policies`` entry becomes a profile of its own (id ``policy:<key>``, no
credentials) whose endpoints carry the entry's binaries; an endpoint with
``credential_binding: {provider: P}`` becomes an endpoint of a profile ``policy:<key>:P``
holding P's static credentials, so P's placeholders are bound to it (ARCHITECTURE.md 9, 10).
The merged list then goes through the profile checks and tables like any other, so the
one overlap rule applies between entries and profiles alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from supervisor.policy.model import NetworkEntry, SandboxPolicy
from supervisor.policy.schema import looks_like_policy, parse_policy
from supervisor.profiles.diagnostics import ProfileError, Sink
from supervisor.profiles.loader import _digest_file, _documents, _read, assemble, read_profiles
from supervisor.profiles.model import Endpoint, Profile
from supervisor.profiles.profileset import ProfileSet
from supervisor.record import replace

ENTRY_PREFIX = "policy:"


def is_policy_file(path: str) -> bool:
    """True when ``path`` parses as a policy document (for ``validate``); False otherwise,
    including when it cannot be read or parsed (the profile loader then says why)."""
    data = _read(path, Sink())
    if data is None:
        return False
    docs = _documents(path, data, Sink())
    return len(docs) == 1 and docs[0][0] is None and looks_like_policy(docs[0][1])


def read_policy(path: str, sink: Sink, digest: Any | None = None) -> SandboxPolicy | None:
    data = _read(path, sink)
    if digest is not None:
        _digest_file(digest, path, data)
    if data is None:
        return None
    docs = _documents(path, data, sink)
    if not docs:
        return None
    if len(docs) != 1 or docs[0][0] is not None:
        sink.error(path, None, "", "a sandbox policy file holds one mapping, not a list")
        return None
    return parse_policy(docs[0][1], path, sink)


def load_policy(path: str) -> SandboxPolicy:
    sink = Sink()
    policy = read_policy(path, sink)
    if policy is None or sink.error_count:
        raise ProfileError(sink.diagnostics)
    return policy


def load_config(
    profile_paths: Sequence[str], policy_path: str | None
) -> tuple[ProfileSet, SandboxPolicy | None]:
    """Profiles and the policy's network entries as one validated profile set.

    Raises ``ProfileError`` with every diagnostic of every file."""
    sink = Sink()
    digest = hashlib.sha256()
    profiles = read_profiles(profile_paths, sink, digest)
    policy = None
    if policy_path is not None:
        policy = read_policy(policy_path, sink, digest)
        if policy is not None:
            profiles.extend(entry_profiles(policy, profiles, sink))
    return assemble(profiles, sink, digest.hexdigest()), policy


def entry_profiles(policy: SandboxPolicy, profiles: Sequence[Profile], sink: Sink) -> list[Profile]:
    by_id = {p.id: p for p in profiles}
    out: list[Profile] = []
    for entry in policy.network:
        if entry.endpoints:
            out.append(_profile(policy, entry, ENTRY_PREFIX + entry.key, entry.endpoints, ()))
        providers: dict[str, list[Endpoint]] = {}
        for endpoint, provider in entry.bound:
            target = by_id.get(provider)
            where = f"network_policies.{entry.key}.credential_binding"
            if target is None:
                sink.error(policy.source, None, where, f"no loaded profile {provider!r}")
                continue
            if target.endpoints:
                sink.error(policy.source, None, where, f"profile {provider!r} declares "
                           "endpoints: only an endpointless profile can be bound")
                continue
            if any(c.token_grant is not None for c in target.credentials):
                sink.error(policy.source, None, where, f"profile {provider!r} has token-grant "
                           "credentials: credential_binding binds static credentials only")
                continue
            providers.setdefault(provider, []).append(endpoint)
        for provider, endpoints in providers.items():
            out.append(_profile(policy, entry, f"{ENTRY_PREFIX}{entry.key}:{provider}",
                                tuple(endpoints), by_id[provider].credentials))
    return out


def _profile(policy: SandboxPolicy, entry: NetworkEntry, pid: str,
             endpoints: tuple[Endpoint, ...], credentials: tuple[Any, ...]) -> Profile:
    return Profile(
        id=pid, display_name=entry.name, description="", category="sandbox policy",
        credentials=credentials,
        endpoints=tuple(replace(e, binaries=entry.binaries) for e in endpoints),
        binaries=entry.binaries, source=policy.source,
    )
