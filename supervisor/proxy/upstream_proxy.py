"""The operator's egress proxy (``run --upstream-proxy URL``): configuration, routing rules
and the CONNECT exchange (ARCHITECTURE.md 7).

Every upstream connection whose destination is not excluded by ``--no-upstream-proxy`` is a
CONNECT tunnel through the proxy; plain HTTP is spoken inside the tunnel like TLS is, so the
proxy never sees (or rewrites) a request and the injected credential is never in a request
the proxy parses.

Who resolves: the supervisor does. The destination the agent named is resolved here, judged
by the SSRF rules, and the CONNECT names the checked address (``CONNECT 203.0.113.7:443``),
never the host name. A proxy resolving the name itself could get another answer than the one
we checked (DNS rebinding, split-horizon views), and the network behind a corporate proxy is
exactly the internal space those rules protect. TLS still verifies the host name the agent
asked for, and the plain-HTTP ``Host`` header still carries it.

Secrets: the ``Proxy-Authorization`` value (from the URL's userinfo or ``--upstream-proxy-
auth-file``) is held only in a field that is left out of ``repr``; diagnostics name the
proxy by ``display`` (scheme, host and port).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import re
from urllib.parse import unquote, urlsplit

from supervisor.profiles.hosts import normalize_host
from supervisor.profiles.model import IPNetwork
from supervisor.profiles.patterns import HostPattern, parse_host_pattern
from supervisor.proxy import errors
from supervisor.proxy.errors import ProxyError, sanitize
from supervisor.record import field, record
from supervisor.settings import SetupError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

URL_FLAG = "--upstream-proxy"
NO_PROXY_FLAG = "--no-upstream-proxy"
AUTH_FILE_FLAG = "--upstream-proxy-auth-file"
TOKEN_FLAG = "--token-endpoint-via-upstream-proxy"  # noqa: S105 (a flag name)

MAX_AUTH_FILE = 4096
_LIST_SEPARATORS = re.compile(r"[,\s]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@record
class HostRules:
    """A list of host patterns and CIDRs (``--no-upstream-proxy``, ``--token-endpoint-via-
    upstream-proxy``).

    Entries: ``*`` (everything), a host or profile-style pattern (``api.example.com``,
    ``*.example.com``, ``**.example.com``), ``.example.com`` (the domain and every name
    below it, as in ``NO_PROXY``), an IP address or a CIDR (matched against the address the
    destination resolved to, and against IP-literal hosts).
    """

    patterns: tuple[HostPattern, ...] = ()
    domains: tuple[str, ...] = ()  # ".example.com" entries, without the dot
    networks: tuple[IPNetwork, ...] = ()
    everything: bool = False

    def matches(self, host: str, addr: IPAddress | None = None) -> bool:
        """``host`` normalized (the proxy's form); ``addr`` the checked address, if any."""
        if self.everything:
            return True
        if any(p.matches(host) for p in self.patterns):
            return True
        if any(host == d or host.endswith("." + d) for d in self.domains):
            return True
        if not self.networks:
            return False
        candidates: list[IPAddress] = [] if addr is None else [addr]
        with contextlib.suppress(ValueError):  # an IP-literal host
            candidates.append(ipaddress.ip_address(host))
        return any(a.version == n.version and a in n for a in candidates for n in self.networks)

    @property
    def empty(self) -> bool:
        return not (self.everything or self.patterns or self.domains or self.networks)


def parse_host_rules(text: str, flag: str) -> HostRules:
    """Parse a comma- or space-separated list; ``SetupError(flag, ...)`` names a bad entry."""
    patterns: list[HostPattern] = []
    domains: list[str] = []
    networks: list[IPNetwork] = []
    everything = False
    for entry in (e for e in _LIST_SEPARATORS.split(text) if e):
        if entry == "*":
            everything = True
        elif "/" in entry:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise SetupError(flag, f"entry {entry!r}: not a valid CIDR") from None
        elif entry.startswith(".") and not entry.startswith(".."):
            try:
                domain = parse_host_pattern(entry[1:])
            except ValueError as exc:
                raise SetupError(flag, f"entry {entry!r}: {exc}") from None
            if not domain.is_literal:
                raise SetupError(flag, f"entry {entry!r}: a '.domain' entry takes no wildcard")
            domains.append(domain.text)
        else:
            try:
                patterns.append(parse_host_pattern(entry))
            except ValueError as exc:
                raise SetupError(flag, f"entry {entry!r}: {exc}") from None
    return HostRules(tuple(patterns), tuple(domains), tuple(networks), everything)


@record
class UpstreamProxy:
    scheme: str  # "http" or "https" (TLS to the proxy)
    host: str  # normalized; an IP literal without brackets
    port: int
    no_proxy: HostRules = field(default_factory=HostRules)
    token_endpoint_hosts: HostRules = field(default_factory=HostRules)
    authorization: str | None = field(default=None, repr=False)  # "Basic ..."; never logged

    @property
    def display(self) -> str:
        """The proxy for diagnostics: scheme, host and port, never credentials."""
        return f"{self.scheme}://{_authority(self.host, self.port)}"

    def __repr__(self) -> str:
        auth = ", authorization=<redacted>" if self.authorization else ""
        return f"UpstreamProxy({self.display}{auth})"

    __str__ = __repr__

    def routes(self, host: str, addr: IPAddress | None) -> bool:
        """True when a connection to ``host`` (checked address ``addr``) goes through us."""
        return not self.no_proxy.matches(host, addr)

    def carries_token_endpoint(self, host: str) -> bool:
        """Token endpoints are dialed directly unless their host is listed explicitly."""
        return self.token_endpoint_hosts.matches(normalize_host(host))

    def url(self) -> str:
        """The proxy's URL without credentials (for HTTP clients given the header apart)."""
        return self.display


def parse_upstream_proxy(
    url: str,
    *,
    no_proxy: str = "",
    auth_file: str | None = None,
    token_endpoint_hosts: str = "",
) -> UpstreamProxy:
    """Validate the options at start; every problem is a ``SetupError`` naming its flag."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:
        raise SetupError(URL_FLAG, f"not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        given = parts.scheme or "(none)"
        raise SetupError(URL_FLAG, f"scheme must be http or https, not {given!r}")
    if not hostname:
        raise SetupError(URL_FLAG, "no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SetupError(URL_FLAG, "a proxy URL has no path, query or fragment")
    host = normalize_host(hostname)
    if "*" in host:
        raise SetupError(URL_FLAG, "host: no wildcards")
    try:
        parse_host_pattern(host)
    except ValueError as exc:
        raise SetupError(URL_FLAG, f"host: {exc}") from None
    authorization: str | None = None
    if parts.username is not None or parts.password is not None:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        authorization = _basic(user, password, URL_FLAG)
    if auth_file is not None:
        if authorization is not None:
            raise SetupError(AUTH_FILE_FLAG, "credentials are in the proxy URL already")
        authorization = _basic_from_file(auth_file)
    return UpstreamProxy(
        scheme=scheme,
        host=host,
        port=port or _DEFAULT_PORTS[scheme],
        no_proxy=parse_host_rules(no_proxy, NO_PROXY_FLAG),
        token_endpoint_hosts=parse_host_rules(token_endpoint_hosts, TOKEN_FLAG),
        authorization=authorization,
    )


def _basic(user: str, password: str, flag: str) -> str:
    credentials = f"{user}:{password}"
    if not user or any(ord(c) < 0x20 or ord(c) == 0x7F for c in credentials):
        raise SetupError(flag, "proxy credentials need a user name and no control characters")
    return "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")


def _basic_from_file(path: str) -> str:
    """``user:password`` in a file (a Kubernetes Secret volume); one trailing newline dropped."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SetupError(AUTH_FILE_FLAG, f"cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_AUTH_FILE + 1)
    if len(data) > MAX_AUTH_FILE:
        raise SetupError(AUTH_FILE_FLAG, f"{path} is larger than {MAX_AUTH_FILE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SetupError(AUTH_FILE_FLAG, f"{path} is not UTF-8") from None
    if text.endswith("\n"):
        text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    user, sep, password = text.partition(":")
    if not sep:
        raise SetupError(AUTH_FILE_FLAG, f"{path} must hold 'user:password'")
    return _basic(user, password, AUTH_FILE_FLAG)


# -- the CONNECT exchange (no I/O here) -------------------------------------------------


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_request(addr: IPAddress, port: int, authorization: str | None) -> bytes:
    """The CONNECT head for the checked address (see the module docstring: never a name)."""
    target = _authority(str(addr), port)
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def check_connect_response(head: bytes, destination: str) -> None:
    """Accept a 2xx answer to our CONNECT; anything else is ``upstream_unreachable`` with the
    proxy's status in the detail (and so in the audit event)."""
    # Here, not at the top: `run --upstream-proxy` parses its URL with this module before
    # the agent's release, and the HTTP parser's classes are the proxy thread's business.
    from supervisor.proxy.http1 import ParseError, parse_response_head

    try:
        resp = parse_response_head(head)
    except ParseError as exc:
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE,
            f"upstream proxy sent an invalid answer to CONNECT {destination} ({exc.reason})",
        ) from None
    if not 200 <= resp.status < 300:
        reason = sanitize(resp.reason, 64)
        raise ProxyError(
            errors.UPSTREAM_UNREACHABLE,
            f"upstream proxy refused CONNECT {destination}: {resp.status} {reason}".rstrip(),
        )
