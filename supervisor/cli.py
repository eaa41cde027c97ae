"""Command line of openshell-supervisor: click commands, nothing else.

Each command imports its implementation lazily. The console script is
``supervisor.run_cli:main``: it parses well-formed `run` invocations itself (click is not
imported on that path) and hands everything else to ``main`` here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from supervisor import __version__
from supervisor.run_cli import run_command, setup_logging
from supervisor.settings import (
    DEFAULT_GRANT_TIMEOUT,
    DEFAULT_PROXY_PORT,
    DEFAULT_RESPONSE_TIMEOUT,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT,
)

_F = TypeVar("_F", bound=Callable[..., Any])


def _seconds(name: str, default: float, text: str, *, upper: float = 86400) -> Callable[[_F], _F]:
    """A duration option in seconds (at least 0.1), its default shown."""
    return click.option(
        name,
        type=click.FloatRange(0.1, upper),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help=text,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="openshell-supervisor")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="warning",
    show_default=True,
    envvar="OPENSHELL_SUPERVISOR_LOG_LEVEL",
    help="Verbosity of the supervisor's own diagnostics on stderr.",
)
def main(log_level: str) -> None:
    """Privileged entrypoint of an AI-agent sandbox container.

    Runs an untrusted agent in its own mount, network and PID namespaces, as an
    unprivileged user, with a proxy as its only way out. The proxy injects short-lived
    OAuth access tokens, obtained with the workload's SPIFFE JWT-SVID, into requests to
    endpoints that provider profiles bind to a credential. The agent never sees the SVID,
    the Workload API socket or a static secret.

    \b
    Start here:
      openshell-supervisor validate profiles.yaml     check provider profiles
      openshell-supervisor run --profile p.yaml -- AGENT [ARGS...]
      openshell-supervisor demo                        see the whole flow locally
    """
    setup_logging(log_level)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print diagnostics as one JSON object.")
def validate(paths: tuple[str, ...], as_json: bool) -> None:
    """Load and validate provider profiles and sandbox policies; print every diagnostic.

    Each path is told apart: a sandbox policy (``version: 1`` with policy sections) or
    provider profiles. A policy is checked together with the profiles given beside it.
    Each diagnostic names the file, the profile id, the field path and the reason.
    Exits 0 when everything is valid, 1 otherwise.
    """
    from supervisor.policy.report import split_paths, validate_with_policies

    if split_paths(paths)[1]:
        sys.exit(validate_with_policies(paths, as_json=as_json))
    from supervisor.profiles.report import validate_paths

    sys.exit(validate_paths(paths, as_json=as_json))


@main.command(context_settings={"ignore_unknown_options": False})
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Provider-profile YAML (one profile or a list). Repeatable. "
    "Default: $OPENSHELL_SUPERVISOR_PROFILES (':'-separated).",
)
@click.option(
    "--spiffe-socket",
    metavar="ADDR",
    help="Workload API address, 'unix:///abs/path' or '/abs/path'. Default: "
    "$SPIFFE_ENDPOINT_SOCKET, else $OPENSHELL_PROVIDER_SPIFFE_WORKLOAD_API_SOCKET. "
    "Its directory is hidden from the agent.",
)
@click.option(
    "--policy",
    type=click.Path(dir_okay=False),
    help="OpenShell sandbox policy YAML (version 1): filesystem_policy and landlock "
    "(Landlock on the agent), process identity, network_policies (endpoints per binary).",
)
@click.option(
    "--user",
    "user_spec",
    metavar="USER[:GROUP]",
    help="Identity of the agent (names or numbers). Default: the policy's "
    "process.run_as_user/run_as_group, else 65534:65534.",
)
@click.option(
    "--network",
    type=click.Choice(["isolated", "host"]),
    default="isolated",
    show_default=True,
    help="'isolated': own network namespace with only lo, the proxy is the sole way out. "
    "'host': no network namespace (the proxy is then only advisory).",
)
@click.option(
    "--proxy-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PROXY_PORT,
    show_default=True,
    help="Port of the proxy on 127.0.0.1 inside the agent's namespace.",
)
@click.option(
    "--ca-bundle",
    type=click.Path(exists=True, dir_okay=False),
    help="Extra trust anchors (PEM) for the supervisor's own outbound TLS "
    "(token endpoints, upstreams). System roots are always used.",
)
@click.option(
    "--audit-log",
    metavar="PATH",
    help="Write OCSF JSON-lines audit events here ('-' = stderr; the agent's own stderr is "
    "then relayed with the prefix 'agent: ' unless stderr is a terminal). Rate-limited: "
    "events over 50/s (burst 500) are summarized with counts.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Working directory of the agent.",
)
@_seconds(
    "--grant-timeout",
    DEFAULT_GRANT_TIMEOUT,
    "Connect and total timeout of token endpoint calls.",
    upper=300,
)
@_seconds(
    "--response-timeout",
    DEFAULT_RESPONSE_TIMEOUT,
    "How long the proxy waits for the first byte of an upstream response.",
)
@_seconds(
    "--upstream-idle-timeout",
    DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    "Longest pause between bytes of a response (no total deadline), and of a "
    "WebSocket; none for text/event-stream while the agent stays connected.",
)
@click.option(
    "--upstream-proxy",
    metavar="URL",
    envvar="OPENSHELL_SUPERVISOR_UPSTREAM_PROXY",
    help="HTTP CONNECT proxy for every upstream connection ('http://[user:pass@]host:port' "
    "or 'https://...', verified with the system roots and --ca-bundle). The supervisor's "
    "own HTTP(S)_PROXY variables are always ignored.",
)
@click.option(
    "--no-upstream-proxy",
    metavar="LIST",
    default="",
    envvar="OPENSHELL_SUPERVISOR_NO_UPSTREAM_PROXY",
    help="Destinations dialed directly: comma-separated hosts, patterns (*.corp, .corp) and "
    "CIDRs (matched against the checked address).",
)
@click.option(
    "--upstream-proxy-auth-file",
    metavar="PATH",
    envvar="OPENSHELL_SUPERVISOR_UPSTREAM_PROXY_AUTH_FILE",
    help="File holding 'user:password' for the proxy (instead of credentials in the URL).",
)
@click.option(
    "--token-endpoint-via-upstream-proxy",
    "token_via_proxy",
    metavar="LIST",
    default="",
    envvar="OPENSHELL_SUPERVISOR_TOKEN_ENDPOINT_VIA_UPSTREAM_PROXY",
    help="Token endpoint hosts reached through the upstream proxy (default: none; the "
    "Workload API never is).",
)
@click.option(
    "--metrics-address",
    metavar="HOST:PORT",
    envvar="OPENSHELL_SUPERVISOR_METRICS_ADDRESS",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics in the supervisor's network "
    "namespace (never the agent's). Default: off.",
)
@click.option(
    "--credentials-dir",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Values of static-credential variables not in the environment: one file per "
    "variable (a Kubernetes Secret volume), re-read when it changes. Hidden from the agent.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(**params: Any) -> None:
    """Run COMMAND as the sandboxed agent (as root; use '--' before COMMAND).

    \b
    Order: validate profiles -> hide the Workload API socket in a private mount
    namespace -> create the agent's network namespace (only lo) and bind the proxy's
    socket there -> spawn the agent in a new PID namespace as USER with no
    capabilities and no_new_privs -> start the proxy beside it (the bound socket
    queues the agent's first connections; if the proxy cannot start, the agent is
    killed and run exits 125) -> wait, forwarding signals.

    \b
    Exit status: the agent's own; 128+N if it died of signal N; 125 setup failed
    (the message names the field or step); 126 not executable; 127 not found.
    SIGHUP reloads the profiles and the policy's network_policies.
    """
    # The parameters are those of run_command, which types them (run_cli parses them too).
    run_command(**params)


@main.command("check-isolation")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--spiffe-socket",
    metavar="ADDR",
    help="Also check this Workload API address (besides the built-in list of common paths).",
)
@click.option(
    "--expect-blocked",
    multiple=True,
    metavar="HOST:PORT",
    help="An address a direct connection to must fail. Repeatable.",
)
@click.option(
    "--expect-landlock",
    is_flag=True,
    help="Fail unless Landlock confines this process (run with a filesystem_policy).",
)
def check_isolation(
    as_json: bool, spiffe_socket: str | None, expect_blocked: tuple[str, ...],
    expect_landlock: bool,
) -> None:
    """Attack the sandbox from inside and report what holds.

    Run it as the agent (e.g. `openshell-supervisor run -- openshell-supervisor
    check-isolation`). Checks the environment, the Workload API socket (by path and through
    /proc/*/root), capabilities, no_new_privs, the agent's own seccomp filter, uid,
    interfaces, socket families (vsock...), direct connections, the proxy, visible
    processes, and Landlock (ABI, enforced or not). Exits 0 when every check passes, 1
    otherwise.
    """
    from supervisor.sandbox.isolation import check_isolation_command

    sys.exit(
        check_isolation_command(
            as_json=as_json, spiffe_socket=spiffe_socket, expect_blocked=expect_blocked,
            expect_landlock=expect_landlock,
        )
    )


@main.command()
def demo() -> None:
    """Run the whole flow on this machine, no SPIRE needed (as root).

    Starts a development Workload API, token issuer and two protected services
    (alpha and beta) on loopback, runs an agent through the supervisor that calls both
    and attacks the sandbox, and shows each step. Exits 0 only if everything held.
    """
    from supervisor.devenv.demo import run_demo

    sys.exit(run_demo())


if __name__ == "__main__":  # pragma: no cover
    main()
