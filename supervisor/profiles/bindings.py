"""Expansion of profiles into bindings: (host pattern, port, path) → credential + grant.

Every credential with a ``token_grant`` binds to every endpoint (and port) of its
profile with the grant's defaults. Each audience override then narrows to the
endpoints it matches: landing exactly on an endpoint's own (host, port, path) replaces
that endpoint's default binding; landing on a narrower key adds a more specific one.
"""

from __future__ import annotations

from supervisor.profiles.diagnostics import Sink
from supervisor.profiles.model import (
    AudienceOverride,
    Binding,
    Credential,
    Endpoint,
    GrantSpec,
    Profile,
)
from supervisor.profiles.patterns import (
    host_covers,
    parse_host_pattern,
    parse_path_pattern,
    path_covers,
    specificity,
)
from supervisor.record import record, replace

Key = tuple[str, int, str | None]


def binding_id(profile_id: str, credential: str, host: str, port: int, path: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{profile_id}/{credential}@{shown}:{port}{path or ''}"


@record
class Expansion:
    bindings: tuple[Binding, ...]
    fields: dict[str, str]  # binding id → field path that produced it (for diagnostics)


@record(frozen=False)
class _Slot:
    binding: Binding
    field: str
    override: int | None  # index of the override that produced it; None = default


def expand_profile(profile: Profile, sink: Sink) -> Expansion:
    bindings: list[Binding] = []
    fields: dict[str, str] = {}
    for i, cred in enumerate(profile.credentials):
        if cred.token_grant is None:
            continue
        for slot in _expand_credential(profile, i, cred, sink).values():
            bindings.append(slot.binding)
            fields[slot.binding.id] = slot.field
    bindings.sort(key=lambda b: b.id)
    return Expansion(tuple(bindings), fields)


def _make(profile: Profile, cred: Credential, ep: Endpoint, key: Key, spec: GrantSpec) -> Binding:
    host, port, path = key
    return Binding(
        id=binding_id(profile.id, cred.name, host, port, path),
        profile_id=profile.id,
        credential_name=cred.name,
        host=host,
        port=port,
        path=path,
        auth_style=cred.auth_style,
        header_name=cred.header_name,
        grant=spec,
        endpoint=ep,
    )


def _expand_credential(profile: Profile, i: int, cred: Credential, sink: Sink) -> dict[Key, _Slot]:
    grant = cred.token_grant
    assert grant is not None
    base = GrantSpec(
        token_endpoint=grant.token_endpoint,
        jwt_svid_audience=grant.jwt_svid_audience,
        client_assertion_type=grant.client_assertion_type,
        audience=grant.audience,
        scopes=grant.scopes,
        cache_ttl_seconds=grant.cache_ttl_seconds,
    )
    slots: dict[Key, _Slot] = {}
    for j, ep in enumerate(profile.endpoints):
        for port in ep.ports:
            key = (ep.host, port, ep.path)
            slots[key] = _Slot(_make(profile, cred, ep, key, base), f"endpoints[{j}]", None)
    for k, override in enumerate(grant.audience_overrides):
        where = f"credentials[{i}].token_grant.audience_overrides[{k}]"
        targets = _override_targets(profile, override)
        if not targets:
            sink.error(
                profile.source, profile.id, where,
                "override matches no endpoint of this profile (its host, port and path must "
                "name an endpoint or narrow one)",
            )
            continue
        spec = replace(
            base,
            audience=base.audience if override.audience is None else override.audience,
            scopes=base.scopes if override.scopes is None else override.scopes,
        )
        for key, ep in targets.items():
            prev = slots.get(key)
            if prev is not None and prev.override is not None:
                sink.error(
                    profile.source, profile.id, where,
                    f"ambiguous: audience_overrides[{prev.override}] and audience_overrides[{k}] "
                    f"of credential {cred.name!r} both bind {prev.binding.id}",
                )
                continue
            slots[key] = _Slot(_make(profile, cred, ep, key, spec), where, k)
    return slots


def _override_targets(profile: Profile, o: AudienceOverride) -> dict[Key, Endpoint]:
    """The binding keys an override lands on, each with the endpoint it narrows."""
    o_host = parse_host_pattern(o.host) if o.host else None
    o_path = parse_path_pattern(o.path) if o.path else None
    found: dict[Key, tuple[tuple[int, ...], Endpoint]] = {}
    for j, ep in enumerate(profile.endpoints):
        e_host = parse_host_pattern(ep.host)
        e_path = parse_path_pattern(ep.path) if ep.path else None
        if o_host is not None and not host_covers(e_host, o_host):
            continue
        if o.port is not None and o.port not in ep.ports:
            continue
        if o_path is not None and not path_covers(e_path, o_path):
            continue
        for port in (o.port,) if o.port is not None else ep.ports:
            key = (o.host or ep.host, port, o.path if o.path is not None else ep.path)
            # Several endpoints may cover one key (e.g. '*.x.com' and 'x.x.com'): the one
            # whose own key it is wins, else the most specific, else the first listed.
            own = int(key == (ep.host, port, ep.path))
            rank = (own, *specificity(e_host, e_path), -j)
            if key not in found or rank > found[key][0]:
                found[key] = (rank, ep)
    return {key: ep for key, (_, ep) in found.items()}
