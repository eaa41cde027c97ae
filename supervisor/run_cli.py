"""`run`'s command line without click: `run` is on the hot path of every sandboxed command.

Importing click costs ~10 ms (more than a tenth of `run -- /bin/true`). The other
commands, help and every error keep click: ``parse_run`` understands only well-formed
`run` invocations of the options in ``RUN_OPTIONS`` and returns None for anything else
(``-h``, an unknown option, a value click would refuse, ...), and the caller then hands
the whole command line to click, which answers exactly as before. ``RUN_OPTIONS`` mirrors
click's `run` command; tests/test_run_cli.py checks them against each other option by
option and compares what both make of generated command lines.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from supervisor import logs
from supervisor.settings import (
    DEFAULT_GRANT_TIMEOUT,
    DEFAULT_PROXY_PORT,
    DEFAULT_RESPONSE_TIMEOUT,
    DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    RunSettings,
    SetupError,
    parse_metrics_address,
    parse_user,
    profiles_from_env,
    socket_from_env,
)

if TYPE_CHECKING:
    from supervisor.proxy.upstream_proxy import UpstreamProxy

EXIT_SETUP = 125
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_ENV = "OPENSHELL_SUPERVISOR_LOG_LEVEL"


class Opt(NamedTuple):
    """One option of `run` as click declares it (see cli.py)."""

    flag: str
    dest: str
    kind: str  # "str", "path", "choice", "int", "float"
    default: object = None
    multiple: bool = False
    envvar: str | None = None
    choices: tuple[str, ...] = ()
    low: float | None = None  # int/float range
    high: float | None = None
    exists: bool = False  # path must exist
    file_okay: bool = True
    dir_okay: bool = True


RUN_OPTIONS = (
    Opt("--profile", "profiles", "path", (), multiple=True, dir_okay=False),
    Opt("--spiffe-socket", "spiffe_socket", "str"),
    Opt("--policy", "policy", "path", dir_okay=False),
    Opt("--user", "user_spec", "str"),
    Opt("--network", "network", "choice", "isolated", choices=("isolated", "host")),
    Opt("--proxy-port", "proxy_port", "int", DEFAULT_PROXY_PORT, low=1, high=65535),
    Opt("--ca-bundle", "ca_bundle", "path", exists=True, dir_okay=False),
    Opt("--audit-log", "audit_log", "str"),
    Opt("--workdir", "workdir", "path", file_okay=False),
    Opt("--grant-timeout", "grant_timeout", "float", DEFAULT_GRANT_TIMEOUT, low=0.1, high=300),
    Opt("--response-timeout", "response_timeout", "float", DEFAULT_RESPONSE_TIMEOUT,
        low=0.1, high=86400),
    Opt("--upstream-idle-timeout", "upstream_idle_timeout", "float",
        DEFAULT_UPSTREAM_IDLE_TIMEOUT, low=0.1, high=86400),
    Opt("--upstream-proxy", "upstream_proxy", "str",
        envvar="OPENSHELL_SUPERVISOR_UPSTREAM_PROXY"),
    Opt("--no-upstream-proxy", "no_upstream_proxy", "str", "",
        envvar="OPENSHELL_SUPERVISOR_NO_UPSTREAM_PROXY"),
    Opt("--upstream-proxy-auth-file", "upstream_proxy_auth_file", "str",
        envvar="OPENSHELL_SUPERVISOR_UPSTREAM_PROXY_AUTH_FILE"),
    Opt("--token-endpoint-via-upstream-proxy", "token_via_proxy", "str", "",
        envvar="OPENSHELL_SUPERVISOR_TOKEN_ENDPOINT_VIA_UPSTREAM_PROXY"),
    Opt("--metrics-address", "metrics_address", "str",
        envvar="OPENSHELL_SUPERVISOR_METRICS_ADDRESS"),
    Opt("--credentials-dir", "credentials_dir", "path", file_okay=False),
)  # fmt: skip
_BY_FLAG = {o.flag: o for o in RUN_OPTIONS}


class _Refuse(Exception):
    """Not for the fast path: click handles this command line."""


def _convert(opt: Opt, text: str) -> object:
    """The value click would produce; _Refuse where click would complain."""
    if opt.kind == "choice":
        if text not in opt.choices:
            raise _Refuse
        return text
    if opt.kind in ("int", "float"):
        try:
            value: float = int(text) if opt.kind == "int" else float(text)
        except ValueError:
            raise _Refuse from None
        if value != value:  # NaN passes every range comparison: click's case
            raise _Refuse
        if (opt.low is not None and value < opt.low) or (opt.high is not None and value > opt.high):
            raise _Refuse
        return value
    if opt.kind == "path":
        try:
            os.stat(text)
        except OSError:
            if opt.exists:
                raise _Refuse from None
            return text
        is_dir = os.path.isdir(text)
        if (is_dir and not opt.dir_okay) or (not is_dir and not opt.file_okay):
            raise _Refuse
        if not os.access(text, os.R_OK):
            raise _Refuse
    return text


def parse_run(argv: Sequence[str], environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """``[--log-level L] run [OPTIONS] [--] COMMAND...`` -> click's parameters (plus
    ``log_level``), or None when click should parse it."""
    env = os.environ if environ is None else environ
    try:
        return _parse(list(argv), env)
    except _Refuse:
        return None


def _take_value(args: list[str], i: int, arg: str) -> tuple[str, str, int]:
    """(flag, value, next index) of ``--flag value`` or ``--flag=value``."""
    flag, eq, value = arg.partition("=")
    if eq:
        return flag, value, i + 1
    if i + 1 >= len(args):
        raise _Refuse
    return flag, args[i + 1], i + 2


def _parse(args: list[str], env: Any) -> dict[str, Any]:
    i = 0
    log_level: str | None = None
    while i < len(args) and args[i] != "run":
        if not args[i].startswith("--log-level"):
            raise _Refuse
        flag, value, i = _take_value(args, i, args[i])
        if flag != "--log-level" or value.lower() not in LOG_LEVELS:
            raise _Refuse
        log_level = value.lower()
    if i >= len(args):
        raise _Refuse
    i += 1  # "run"
    given: dict[str, Any] = {}
    command: list[str] = []
    while i < len(args):
        arg = args[i]
        if arg == "--":
            command = args[i + 1 :]
            break
        if arg.startswith("-") and arg != "-":
            flag, value, i = _take_value(args, i, arg)
            opt = _BY_FLAG.get(flag)
            if opt is None:
                raise _Refuse  # unknown option, short option, -h/--help: click says
            converted = _convert(opt, value)
            if opt.multiple:
                given.setdefault(opt.dest, []).append(converted)
            else:
                given[opt.dest] = converted
            continue
        # The command starts here; click would still read options after it.
        if any(t.startswith("-") and t != "-" for t in args[i + 1 :]):
            raise _Refuse
        command = args[i:]
        break
    if not command:
        raise _Refuse
    params: dict[str, Any] = {}
    for opt in RUN_OPTIONS:
        if opt.dest in given:
            value = given[opt.dest]
            params[opt.dest] = tuple(value) if opt.multiple else value
        elif opt.envvar and env.get(opt.envvar):
            params[opt.dest] = _convert(opt, env[opt.envvar])
        else:
            params[opt.dest] = opt.default
    if log_level is None:
        from_env = env.get(LOG_LEVEL_ENV)
        if from_env and from_env.lower() not in LOG_LEVELS:
            raise _Refuse
        log_level = from_env.lower() if from_env else "warning"
    params["command"] = tuple(command)
    params["log_level"] = log_level
    return params


def setup_logging(log_level: str) -> None:
    """For the other commands (click): logging configured at once."""
    logs.configure(log_level, now=True)


def exit_run(code: int) -> NoReturn:
    """Leave ``run`` without interpreter finalization.

    A short-lived agent can end while the proxy thread is still importing its stack (it
    starts beside the agent and nobody waits for it). Finalizing the interpreter under a
    live thread crashed once in CI (SIGSEGV in libc on that thread, so the agent's status
    was lost); the supervisor has nothing left to finalize, so flush and exit at once.
    """
    logs.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def run_command(
    *,
    profiles: tuple[str, ...],
    spiffe_socket: str | None,
    policy: str | None,
    user_spec: str | None,
    network: str,
    proxy_port: int,
    ca_bundle: str | None,
    audit_log: str | None,
    workdir: str | None,
    grant_timeout: float,
    response_timeout: float,
    upstream_idle_timeout: float,
    upstream_proxy: str | None,
    no_upstream_proxy: str,
    upstream_proxy_auth_file: str | None,
    token_via_proxy: str,
    metrics_address: str | None,
    credentials_dir: str | None,
    command: tuple[str, ...],
) -> NoReturn:
    """`run` itself, from click's parameters (either parser's): settings, then the sandbox."""
    try:
        uid, gid, groups = parse_user(user_spec or "65534:65534")
        settings = RunSettings(
            profiles=profiles or profiles_from_env(),
            command=command,
            spiffe_socket=spiffe_socket or socket_from_env(),
            uid=uid,
            gid=gid,
            supplementary_gids=groups,
            network=network,
            proxy_port=proxy_port,
            ca_bundle=ca_bundle,
            audit_log=audit_log,
            workdir=workdir,
            grant_timeout=grant_timeout,
            response_timeout=response_timeout,
            upstream_idle_timeout=upstream_idle_timeout,
            upstream_proxy=_upstream_proxy(
                upstream_proxy, no_upstream_proxy, upstream_proxy_auth_file, token_via_proxy
            ),
            metrics_address=parse_metrics_address(metrics_address) if metrics_address else None,
            policy=os.path.abspath(policy) if policy else None,
            user_from_policy=user_spec is None and policy is not None,
            credentials_dir=credentials_dir,
        )
        from supervisor.runner import run_supervisor

        code = run_supervisor(settings)
    except SetupError as err:
        print(f"openshell-supervisor: error: {err}", file=sys.stderr)
        exit_run(EXIT_SETUP)
    exit_run(code)


def _upstream_proxy(
    url: str | None, no_proxy: str, auth_file: str | None, token_hosts: str
) -> UpstreamProxy | None:
    if not url:
        return None  # the other three options only refine --upstream-proxy
    from supervisor.proxy.upstream_proxy import parse_upstream_proxy

    return parse_upstream_proxy(
        url, no_proxy=no_proxy, auth_file=auth_file, token_endpoint_hosts=token_hosts
    )


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: `run` parsed here when it can be, everything else by click."""
    args = sys.argv[1:] if argv is None else list(argv)
    params = parse_run(args)
    if params is not None:
        # What `run` allocates before the agent's release (modules, classes, the profile
        # tables) lives for the whole run: collections there only walk it (~6M instructions).
        # runner._collect_again turns the collector back on at the release.
        gc.disable()
        logs.configure(params.pop("log_level"))  # logging itself waits for a first record
        run_command(**params)
    from supervisor.cli import main as click_main

    click_main(args)  # help, errors and the other commands
