"""Run-time settings of ``run``, resolved from the command line and the environment.

Kept free of heavy imports: it is on the start-up path.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from supervisor.record import record

if TYPE_CHECKING:
    from supervisor.proxy.upstream_proxy import UpstreamProxy

DEFAULT_PROXY_PORT = 3128
DEFAULT_GRANT_TIMEOUT = 10.0
# Long-lived responses (LLM streams, reasoning pauses): see the proxy's Limits.
DEFAULT_RESPONSE_TIMEOUT = 600.0
DEFAULT_UPSTREAM_IDLE_TIMEOUT = 600.0
DEFAULT_AGENT_UID = 65534
DEFAULT_AGENT_GID = 65534

# Environment variables that name the Workload API socket, in order of precedence.
SOCKET_ENV_VARS = ("SPIFFE_ENDPOINT_SOCKET", "OPENSHELL_PROVIDER_SPIFFE_WORKLOAD_API_SOCKET")
PROFILES_ENV_VAR = "OPENSHELL_SUPERVISOR_PROFILES"


class SetupError(Exception):
    """The supervisor cannot set up the sandbox: ``run`` exits 125 with this one-line message.

    ``step`` names the field or step that failed (e.g. ``--spiffe-socket`` or ``mount namespace``).
    """

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


@record
class RunSettings:
    profiles: tuple[str, ...]
    command: tuple[str, ...]
    spiffe_socket: str | None = None  # as given; validated by sandbox.socket_path
    uid: int = DEFAULT_AGENT_UID
    gid: int = DEFAULT_AGENT_GID
    supplementary_gids: tuple[int, ...] = ()
    network: str = "isolated"  # or "host"
    proxy_port: int = DEFAULT_PROXY_PORT
    ca_bundle: str | None = None
    audit_log: str | None = None  # path, "-" = stderr
    workdir: str | None = None
    grant_timeout: float = DEFAULT_GRANT_TIMEOUT
    response_timeout: float = DEFAULT_RESPONSE_TIMEOUT
    upstream_idle_timeout: float = DEFAULT_UPSTREAM_IDLE_TIMEOUT
    upstream_proxy: UpstreamProxy | None = None  # --upstream-proxy (its repr hides secrets)
    metrics_address: tuple[str, int] | None = None  # --metrics-address HOST:PORT
    policy: str | None = None  # OpenShell sandbox policy file (ARCHITECTURE.md 10)
    user_from_policy: bool = False  # no --user: the policy's process identity applies
    ca_bundle_dir: str | None = None  # where the agent's CA bundles go (made before the fork)
    sandbox_init_pid: int | None = None  # set by run once the init exists (binary identity)
    sandbox_diag_fd: int | None = None  # sock_diag socket in the agent's network namespace
    credentials_dir: str | None = None  # one file per static-credential variable

    @property
    def config_files(self) -> tuple[str, ...]:
        """Every file a reload re-reads, in the order the loader digests them."""
        return self.profiles if self.policy is None else (*self.profiles, self.policy)


def socket_from_env(environ: os._Environ[str] | dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    for name in SOCKET_ENV_VARS:
        value = env.get(name)
        if value:
            return value
    return None


def profiles_from_env(environ: os._Environ[str] | dict[str, str] | None = None) -> tuple[str, ...]:
    env = os.environ if environ is None else environ
    raw = env.get(PROFILES_ENV_VAR, "")
    return tuple(p for p in raw.split(":") if p)


# (uid_t)-1 means "leave unchanged" to set*id(2): never a usable identity.
MAX_ID = 2**32 - 2


def _is_number(text: str) -> bool:
    # ASCII only: str.isdigit() accepts '²' (int() refuses it), int() reads full-width digits.
    return text.isascii() and text.isdigit()


def _id_number(text: str, what: str) -> int:
    value = int(text)
    if value > MAX_ID:
        raise SetupError("--user", f"{what} {text} out of range (0..{MAX_ID})")
    return value


def parse_user(spec: str) -> tuple[int, int, tuple[int, ...]]:
    """Resolve ``USER[:GROUP]`` (names or numbers) to (uid, gid, supplementary gids).

    A named user without an explicit group gets its primary group and its supplementary
    groups from the group database; a numeric user without a group gets gid = uid only
    when no passwd entry exists (the conventional 65534:65534 default).
    """
    import grp
    import pwd

    user, _, group = spec.partition(":")
    if not user:
        raise SetupError("--user", f"empty user in {spec!r}")
    entry: pwd.struct_passwd | None
    if _is_number(user):
        uid = _id_number(user, "uid")
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            entry = None
    else:
        try:
            entry = pwd.getpwnam(user)
        except (KeyError, ValueError):  # ValueError: an embedded NUL
            raise SetupError("--user", f"no such user {user!r}") from None
        uid = entry.pw_uid
    if group:
        if _is_number(group):
            gid = _id_number(group, "gid")
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except (KeyError, ValueError):
                raise SetupError("--user", f"no such group {group!r}") from None
    elif entry is not None:
        gid = entry.pw_gid
    else:
        gid = uid
    if uid == 0:
        raise SetupError("--user", "the agent may not run as root (uid 0)")
    supplementary: tuple[int, ...] = ()
    if entry is not None and not group:
        supplementary = tuple(
            sorted({g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem} - {gid})
        )
    return uid, gid, supplementary


def parse_metrics_address(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) of the metrics endpoint; port 0 = any free."""
    import ipaddress

    host, sep, port_text = spec.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise SetupError("--metrics-address", f"expected HOST:PORT, got {spec!r}")
    port = int(port_text)
    if port > 65535:
        raise SetupError("--metrics-address", f"port {port} out of range")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise SetupError("--metrics-address", f"{host!r} is not an IP address") from None
    return host, port
