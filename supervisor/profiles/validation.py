"""Validation rules of provider profiles (ARCHITECTURE.md 4).

Field rules are pure functions returning an error message (or ``None``); the parser
calls them while building typed objects. Cross-object rules work on typed profiles and
their bindings and report through a ``Sink``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

from supervisor.profiles.diagnostics import Sink
from supervisor.profiles.hosts import (
    CONTROL_PLANE_PORTS,
    METADATA_ADDRESS,
    broad_special_ranges,
    cleartext_allowed_host,
    ip_of,
)
from supervisor.profiles.model import Binding, Endpoint, Profile
from supervisor.profiles.patterns import (
    hosts_overlap,
    parse_host_pattern,
    parse_path_pattern,
    paths_overlap,
    specificity,
)

_CTL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
_SCOPE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_REALM = re.compile(r"^(.*?/realms/[^/?#]+)")

# Header names we refuse to inject. The first four change how the request is framed
# or routed (ARCHITECTURE.md 4, S7). The rest are hop-by-hop or proxy-directed headers that the
# proxy strips or interprets itself; an injected copy would either be removed again or
# change connection handling and upgrade semantics between proxy and upstream.
FORBIDDEN_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "upgrade",
        "keep-alive",
        "trailer",
    }
)


def check_identifier(value: str) -> str | None:
    if _IDENT.fullmatch(value) is None:
        return "must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter or digit"
    return None


def check_text(value: str) -> str | None:
    return "must not contain control characters" if _CTL.search(value) else None


_CTL_NOT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def check_multiline_text(value: str) -> str | None:
    """Descriptions may span lines (OpenShell's are YAML block scalars); no other CTLs."""
    if _CTL_NOT_NEWLINE.search(value.replace("\r\n", "\n")):
        return "must not contain control characters other than line breaks and tabs"
    return None


def check_token_endpoint(url: str) -> str | None:
    """Absolute https URL; http only for loopback and Kubernetes service hosts."""
    from urllib.parse import urlsplit  # only profiles with credentials have token endpoints
    if _CTL.search(url) or any(c.isspace() for c in url):
        return "must not contain whitespace or control characters"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError:  # e.g. an unbalanced or invalid '[IPv6]' literal
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        return "must be an absolute https:// URL"
    if not parts.netloc or not hostname:
        return "must be an absolute URL with a host"
    if "@" in parts.netloc:
        return "must not contain user information ('user@'): credentials do not belong in URLs"
    if parts.fragment or "#" in url:
        return "must not contain a fragment ('#')"
    try:
        port = parts.port
    except ValueError:
        return "has an invalid port"
    if port == 0:
        return "has an invalid port"
    try:
        parse_host_pattern(hostname)
    except ValueError as exc:
        return f"has an invalid host: {exc}"
    if "*" in hostname:
        return "host must not be a pattern"
    if hostname.endswith("."):
        # 'localhost.' / '127.0.0.1.' would go to DNS, not to the loopback the rule allows
        return "host must not end with '.'"
    if scheme == "http" and not cleartext_allowed_host(hostname):
        return (
            "must use https: http is only allowed for loopback hosts (localhost, "
            "127.0.0.0/8, ::1) and Kubernetes service hosts (name.ns.svc[.cluster.local])"
        )
    return None


def default_svid_audience(token_endpoint: str) -> str:
    """The ``.../realms/<name>`` prefix of the endpoint (Keycloak-style), else the URL."""
    m = _REALM.match(token_endpoint)
    return m.group(1) if m else token_endpoint


def check_header_name(name: str) -> str | None:
    if _TOKEN.fullmatch(name) is None:
        return "must be an RFC 9110 token (letters, digits and !#$%&'*+-.^_`|~)"
    if name.lower() in FORBIDDEN_HEADERS:
        return f"{name!r} cannot carry a credential: it controls message framing or the connection"
    return None


def check_scope(scope: str) -> str | None:
    if _SCOPE.fullmatch(scope) is None:
        return "must be a non-empty RFC 6749 scope token (no spaces, quotes or backslashes)"
    return None


def check_port(port: int) -> str | None:
    return None if 1 <= port <= 65535 else "must be in 1..65535"


def check_binary(path: str) -> str | None:
    if not path.startswith("/"):
        return "must be an absolute path"
    if _CTL.search(path):
        return "must not contain control characters"
    if any(seg in (".", "..") for seg in path.split("/")):
        return "must not contain '.' or '..' components"
    return None


# ---- cross-object rules ----


def check_profile(profile: Profile, sink: Sink) -> None:
    """Rules that need a whole typed profile (no bindings yet)."""
    grants = [
        (i, c) for i, c in enumerate(profile.credentials) if c.token_grant is not None
    ]
    for j, ep in enumerate(profile.endpoints):
        where = f"endpoints[{j}]"
        if ep.tls == "skip":
            for i, cred in grants:
                sink.error(
                    profile.source, profile.id, f"{where}.tls",
                    f"credential {cred.name!r} (credentials[{i}]) has a token_grant but this "
                    "endpoint has 'tls: skip': a token can never be injected into a raw "
                    "tunnel; remove 'tls: skip' or move the endpoint to a profile without "
                    "token grants",
                )
        _warn_refused_destinations(profile, where, ep, sink)


def _warn_refused_destinations(profile: Profile, where: str, ep: Endpoint, sink: Sink) -> None:
    bad_ports = sorted(set(ep.ports) & CONTROL_PLANE_PORTS)
    if bad_ports:
        sink.warning(
            profile.source, profile.id, f"{where}.ports",
            f"control-plane port(s) {', '.join(map(str, bad_ports))}: always refused at run time",
        )
    if ep.host == METADATA_ADDRESS:
        sink.warning(
            profile.source, profile.id, f"{where}.host",
            f"{METADATA_ADDRESS} (cloud metadata) is always refused at run time",
        )
    for net in ep.allowed_ips:
        opened = broad_special_ranges(net)
        if opened:
            sink.warning(
                profile.source, profile.id, f"{where}.allowed_ips",
                f"{net} reaches beyond public space into {', '.join(opened)}: the proxy "
                "will connect there for this endpoint (allowed_ips is the only opt-in to "
                "those ranges); list only the ranges you mean",
            )
    meta = ip_of(METADATA_ADDRESS)
    if any(meta in net for net in ep.allowed_ips):
        sink.warning(
            profile.source, profile.id, f"{where}.allowed_ips",
            f"covers {METADATA_ADDRESS} (cloud metadata), which is always refused at run time",
        )


def check_cleartext_bindings(
    profile: Profile, bindings: Iterable[Binding], field_of: dict[str, str], sink: Sink
) -> None:
    """Warn once per binding on port 80 to a host where the proxy refuses cleartext injection."""
    seen: set[tuple[str, str]] = set()
    for b in bindings:
        if b.port != 80 or cleartext_allowed_host(b.host, allow_wildcards=True):
            continue
        key = (b.credential_name, b.host)
        if key in seen:
            continue
        seen.add(key)
        sink.warning(
            profile.source, profile.id, field_of.get(b.id, "endpoints"),
            f"binding {b.id}: port 80 is cleartext HTTP; the proxy refuses to inject a token "
            "into cleartext requests to hosts other than loopback and Kubernetes services",
        )


def check_ambiguity(
    bindings: Sequence[Binding],
    where: dict[str, tuple[str, str, str]],
    sink: Sink,
) -> None:
    """Two bindings that can match one request with equal specificity → error naming both.

    ``where`` maps a binding id to (file, profile id, field path) for the diagnostic.
    """
    groups: dict[tuple[int, tuple[int, ...]], list[Binding]] = defaultdict(list)
    compiled = {}
    for b in bindings:
        host = parse_host_pattern(b.host)
        path = parse_path_pattern(b.path) if b.path is not None else None
        compiled[id(b)] = (host, path)
        groups[(b.port, specificity(host, path))].append(b)
    for group in groups.values():
        group.sort(key=lambda b: b.id)
        for i, a in enumerate(group):
            ha, pa = compiled[id(a)]
            for b in group[i + 1 :]:
                hb, pb = compiled[id(b)]
                if hosts_overlap(ha, hb) and paths_overlap(pa, pb):
                    file, pid, fld = where[a.id]
                    other_file = where[b.id][0]
                    also = f" (in {other_file})" if other_file != file else ""
                    sink.error(
                        file, pid, fld,
                        f"ambiguous bindings {a.id} and {b.id}{also}: both can match the "
                        "same request with equal specificity; make one more specific "
                        "(a longer path or an exact host) or remove one",
                    )


def check_skip_tunnels(
    profiles: Sequence[Profile], bindings: Sequence[Binding], sink: Sink
) -> None:
    """A ``tls: skip`` endpoint whose host and port can meet another profile's credential
    binding → error naming both. A CONNECT is decided once, on the endpoint matching "/":
    the skip would win for a binding on paths only (or on an equal-specificity tie) and
    make the credentialed host a raw tunnel, its binding and rules silently gone. (Within
    one profile ``check_profile`` already refuses a skip beside a token grant.)"""
    compiled = [(b, parse_host_pattern(b.host)) for b in bindings]
    for p in profiles:
        for j, ep in enumerate(p.endpoints):
            if ep.tls != "skip":
                continue
            host = parse_host_pattern(ep.host)
            hits = [
                b
                for b, bhost in compiled
                if b.profile_id != p.id and b.port in ep.ports and hosts_overlap(host, bhost)
            ]
            for b in hits[:3]:  # one line per binding, a few at most
                sink.error(
                    p.source, p.id, f"endpoints[{j}].tls",
                    f"ambiguous: 'tls: skip' on {ep.host} would make a CONNECT to "
                    f"{b.host}:{b.port} a raw tunnel, bypassing credential binding {b.id} of "
                    f"profile {b.profile_id!r}; remove 'tls: skip' or narrow its host",
                )


def check_endpoint_overlaps(profiles: Sequence[Profile], sink: Sink) -> None:
    """Warn when endpoints can match one request with equal specificity but differ.

    Rules and access are combined (ARCHITECTURE.md 4.2: a request is allowed when any matching
    endpoint allows it and no deny rule denies it), but one endpoint's connection settings
    (tls, allowed_ips, enforcement) apply: the one of the lowest profile id, then list
    position — deterministic, probably not what at least one of the authors meant.
    """
    groups: dict[tuple[int, tuple[int, ...]], list[tuple[Profile, int, Endpoint]]] = (
        defaultdict(list)
    )
    for p in profiles:
        for j, ep in enumerate(p.endpoints):
            host = parse_host_pattern(ep.host)
            path = parse_path_pattern(ep.path) if ep.path is not None else None
            for port in ep.ports:
                groups[(port, specificity(host, path))].append((p, j, ep))
    reported: set[tuple[str, int, str, int]] = set()
    for group in groups.values():
        group.sort(key=lambda item: (item[0].id, item[1]))
        for i, (pa, ja, a) in enumerate(group):
            for pb, jb, b in group[i + 1 :]:
                if _settings(a) == _settings(b) or (pa.id, ja, pb.id, jb) in reported:
                    continue
                if not (
                    hosts_overlap(parse_host_pattern(a.host), parse_host_pattern(b.host))
                    and paths_overlap(
                        parse_path_pattern(a.path) if a.path else None,
                        parse_path_pattern(b.path) if b.path else None,
                    )
                ):
                    continue
                reported.add((pa.id, ja, pb.id, jb))
                sink.warning(
                    pb.source, pb.id, f"endpoints[{jb}]",
                    f"overlaps endpoints[{ja}] of profile {pa.id!r} with equal specificity "
                    "but different tls/enforcement/allowed_ips; requests matching both are "
                    "allowed when either allows them, with profile "
                    f"{pa.id!r}'s connection settings",
                )


def _settings(ep: Endpoint) -> tuple[object, ...]:
    # An L4 entry beside an inspected one is the normal case (10.3): not a conflict.
    return (ep.tls, ep.enforcement, ep.allowed_ips)
