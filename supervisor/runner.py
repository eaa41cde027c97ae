"""``run``: prepare the sandbox, start the services, run the agent, wait (ARCHITECTURE.md 3.1, 3.4).

Order: load profiles -> socket path rules -> sanitized mount namespace -> network
namespace and the proxy's listening socket -> fork the sandbox init (before any secret
exists in this process) -> start the services (proxy, token provider) -> send the init
the go with the agent's environment -> forward signals, reap, reload on SIGHUP or on a
profile file change -> stop the services -> exit with the agent's status.

Heavy modules (profile loader, services) are imported lazily so `run -- /bin/true` stays fast.
"""

from __future__ import annotations

import _socket
import contextlib
import gc
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from supervisor import logs, run_inputs
from supervisor.record import record, replace
from supervisor.sandbox import linux, stderr_relay
from supervisor.sandbox.child import InitSpec
from supervisor.sandbox.environment import agent_environment, leaked_secret
from supervisor.sandbox.mountns import MountNamespace, create_sanitized_mount_namespace
from supervisor.sandbox.netns import AgentNetwork, create_agent_network, host_network
from supervisor.sandbox.protocol import FORWARDED_SIGNALS, exit_code_of
from supervisor.sandbox.socket_path import SocketPath, resolve_socket_path
from supervisor.sandbox.spawn import InitProcess, find_init, spawn_init
from supervisor.sandbox.stderr_relay import StderrRelay
from supervisor.settings import RunSettings, SetupError

if TYPE_CHECKING:  # imported lazily at run time (start-up cost)
    from supervisor.profiles.profileset import ProfileSet
    from supervisor.sandbox.fsrules import LandlockPlan

log = logs.get("supervisor.runner")  # logging is imported on first use

PROFILE_POLL_SECONDS = 2.0
# Held blocked from just before the init is forked until our handlers exist, so none is
# lost (the init unblocks the forwarded ones once its own handlers are in place).
_HELD_SIGNALS = (*FORWARDED_SIGNALS, signal.SIGHUP)

# Loads and validates the profile files: a ProfileSet, or ProfileError with every finding.
ProfileLoader = Callable[[tuple[str, ...]], "ProfileSet"]


class RunServices(Protocol):
    """What ``run`` needs of the services it starts (``services.Services`` in production)."""

    extra_env: dict[str, str]  # added to the agent's environment (e.g. CA bundle variables)
    failure: SetupError | None  # set when the proxy could not start

    def watch(self, on_failure: Callable[[SetupError], None]) -> None:
        """Finish starting beside the agent; call ``on_failure`` if that fails."""

    def reload(self, profiles: ProfileSet) -> None: ...

    def stop(self) -> None: ...


ServicesStarter = Callable[[RunSettings, "ProfileSet", _socket.socket], RunServices]


def _default_loader(paths: tuple[str, ...]) -> ProfileSet:
    from supervisor.profiles.loader import load_profiles

    return load_profiles(paths)


def _default_starter(
    settings: RunSettings, profiles: ProfileSet, listen_sock: _socket.socket
) -> RunServices:
    from supervisor.services import start_services

    # Deferred: the proxy thread begins when _watch_services runs, after the agent's release.
    return start_services(settings, profiles, listen_sock, defer_start=True)


def _profile_errors(exc: Exception) -> list[str]:
    """The loader's findings (errors only, warnings do not count), else the exception."""
    from supervisor.profiles.diagnostics import ProfileError

    if isinstance(exc, ProfileError) and exc.errors:
        return [str(d) for d in exc.errors]
    return [str(exc) or type(exc).__name__]


def _describe_profile_error(exc: Exception) -> str:
    """One line: the first error and how many more."""
    errors = _profile_errors(exc)
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{errors[0]}{more}"


def _make_loader(settings: RunSettings) -> ProfileLoader:
    if settings.policy is None:
        return _default_loader
    from supervisor.policy.config import PolicyConfig

    return PolicyConfig(settings.policy)


def _landlock_plan(settings: RunSettings, loader: ProfileLoader, sock_path: SocketPath | None,
                   init_path: str, started_in: str) -> LandlockPlan | None:
    """The Landlock plan of the policy's static part (None: no filesystem_policy)."""
    policy = getattr(loader, "started", None)
    if policy is None or policy.filesystem is None:
        return None
    from supervisor.sandbox.fsrules import plan_rules

    return plan_rules(  # its warnings are printed by the child that applies it
        policy.filesystem, settings.workdir or started_in,  # run works from / itself
        own_exec=[init_path],  # static: nothing else to load
        own_read=[settings.ca_bundle_dir] if settings.ca_bundle_dir else [],
        hidden=[sock_path.directory] if sock_path else [],
    )


def _apply_policy_identity(settings: RunSettings, loader: ProfileLoader) -> RunSettings:
    policy = getattr(loader, "started", None)
    if not settings.user_from_policy or policy is None:
        return settings
    from supervisor.policy.identity import policy_identity

    uid, gid, groups = policy_identity(policy.run_as_user, policy.run_as_group)
    return replace(settings, uid=uid, gid=gid, supplementary_gids=groups)


def _profile_fingerprint(paths: tuple[str, ...]) -> str:
    """The loader's content hash (ConfigMap updates swap symlinks: contents, not mtimes);
    equal to ``ProfileSet.fingerprint`` when the files are what was loaded."""
    from supervisor.profiles.loader import fingerprint_files

    return fingerprint_files(paths)


class _Supervision:
    """Signal forwarding, reaping, and profile reloads while the agent runs."""

    def __init__(
        self, init: InitProcess, settings: RunSettings, loader: ProfileLoader, loaded: ProfileSet
    ) -> None:
        self.init = init
        self.settings = settings
        self.loader = loader
        self.services: RunServices | None = None
        self.reload_requested = False
        self.finished = False  # the init has been reaped (its pid may be reused)
        # What was loaded at start: a change since then is caught by the first poll.
        self.fingerprint = loaded.fingerprint
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._saved: dict[int, Any] = {}  # signal number -> previous handler
        self._saved_wakeup = -1

    @contextlib.contextmanager
    def handlers(self) -> Iterator[None]:
        """Install the handlers, then unblock the signals the caller blocked before fork."""
        try:
            self._saved_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            for signum in FORWARDED_SIGNALS:
                self._saved[signum] = signal.signal(signum, self._forward)
            self._saved[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hup)
            self._saved[signal.SIGCHLD] = signal.signal(signal.SIGCHLD, self._ignore)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_SIGNALS)
            yield
        finally:
            for saved_signum, previous in self._saved.items():
                signal.signal(saved_signum, previous)
            signal.set_wakeup_fd(self._saved_wakeup)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.init.signal(signum)

    def _hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.reload_requested = True

    def _ignore(self, _signum: int, _frame: FrameType | None) -> None:
        pass  # SIGCHLD only needs to wake the loop (through the wakeup fd)

    def reload(self, why: str) -> None:
        # Taken before loading, so a refused set is not retried until the files change.
        self.fingerprint = _profile_fingerprint(self.settings.config_files)
        try:
            # The same check as at start: a file or directory that became writable by
            # someone other than root since then is not read (ARCHITECTURE.md S11).
            run_inputs.check_config_files(self.settings)
        except SetupError as exc:
            log.warning("profile reload (%s) refused, keeping the current set: %s", why, exc.reason)
            return
        try:
            profiles = self.loader(self.settings.profiles)
        except Exception as exc:
            for error in _profile_errors(exc):
                log.warning("profile reload (%s) refused, keeping the current set: %s", why, error)
            return
        self.fingerprint = profiles.fingerprint  # the bytes the loader actually parsed
        if self.services is not None:
            try:
                self.services.reload(profiles)
            except Exception:
                # The agent keeps running on the old set; a crash here would orphan it.
                log.exception("profile reload (%s) failed in the services", why)
                return
        log.info("profiles reloaded (%s)", why)

    def _reap(self) -> int | None:
        """Reap every exited child; return the init's wait status once it exited."""
        init_status: int | None = None
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return init_status
            if pid == 0:
                return init_status
            if pid == self.init.pid:
                init_status = status

    def wait(self) -> int:
        """Run until the init exits; return its wait status."""
        next_poll = time.monotonic() + PROFILE_POLL_SECONDS
        while True:
            status = self._reap()
            if status is not None:
                self.finished = True
                return status
            timeout = max(0.0, next_poll - time.monotonic())
            readable, _, _ = select.select([self._wake_r], [], [], timeout)
            if readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 4096):
                        pass
            if self.reload_requested:
                self.reload_requested = False
                self.reload("SIGHUP")
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + PROFILE_POLL_SECONDS
                if _profile_fingerprint(self.settings.config_files) != self.fingerprint:
                    self.reload("profile file changed")
                refresh = getattr(self.services, "refresh_credentials", None)
                if refresh is not None:  # a rotated Secret is used by the next request
                    try:
                        refresh()
                    except Exception:
                        log.exception("re-reading --credentials-dir failed")


def _load_initial(loader: ProfileLoader, paths: tuple[str, ...]) -> ProfileSet:
    try:
        return loader(paths)
    except SetupError:
        raise
    except Exception as exc:
        raise SetupError("--profile", _describe_profile_error(exc)) from exc


def _diag_socket(network: AgentNetwork) -> _socket.socket | None:
    """A sock_diag socket in the agent's network namespace: binary identity finds the
    agent's socket with one kernel lookup (ARCHITECTURE.md 11); None = /proc tables."""
    from supervisor.binaries.diag import open_diag_socket
    from supervisor.sandbox.threadns import run_on_thread

    ns_fd = network.ns_fd

    def in_namespace() -> _socket.socket:
        if ns_fd is not None:
            linux.setns(ns_fd, linux.CLONE_NEWNET)  # this short-lived thread only
        return open_diag_socket()

    try:
        return run_on_thread("sock-diag", in_namespace)
    except OSError as exc:
        log.debug("no sock_diag socket (%s): binary identity reads /proc tables", exc)
        return None


def _make_bundle_dir() -> str:
    """A fresh root-owned directory for the agent's CA bundles (public certificates)."""
    from supervisor.tempdirs import mkdtemp

    directory = mkdtemp(prefix="openshell-ca-")
    os.chmod(directory, 0o755)  # noqa: S103 - public certificates only, never a key
    return directory


def _prepare_network(settings: RunSettings) -> AgentNetwork:
    if settings.network == "host":
        log.warning("--network host: the agent shares the host network; the proxy is only advisory")
        return host_network(settings.proxy_port)
    if settings.network != "isolated":
        raise SetupError("--network", f"unknown mode {settings.network!r}")
    return create_agent_network(settings.proxy_port)


def _outcome(init: InitProcess, status: int, command_name: str) -> int:
    report = init.read_report()
    if report.setup_step is not None:
        raise SetupError(report.setup_step, report.setup_reason or "failed")
    if report.exec_code is not None:
        print(
            f"openshell-supervisor: error: {command_name}: {report.exec_reason}",
            file=sys.stderr,
        )
        return report.exec_code
    return exit_code_of(status)


def _watch_services(services: RunServices, init: InitProcess, supervision: _Supervision) -> None:
    """The proxy finishes starting while the agent runs; if it cannot, the agent is killed
    and ``run`` fails (125): an agent never runs on without its proxy. Nobody waits for the
    proxy otherwise, so a short-lived agent is not slowed by the proxy's start-up."""

    def on_failure(_failure: SetupError) -> None:
        if not supervision.finished:
            init.signal(signal.SIGKILL)

    services.watch(on_failure)


def _collect_again() -> None:
    """The collector, off for `run`'s start-up (run_cli.main), runs again from the agent's
    release; what the start-up allocated is frozen out of its generations (it lives for the
    run, and the first collection would otherwise walk all of it). A no-op when the caller
    left the collector on."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _abort_init(init: InitProcess) -> None:
    """The agent will not start: release the init and reap it."""
    init.abort()
    with contextlib.suppress(ChildProcessError):
        os.waitpid(init.pid, 0)
    init.read_report()


def run_supervisor(
    settings: RunSettings,
    start_services: ServicesStarter | None = None,
    load_profiles: ProfileLoader | None = None,
) -> int:
    """Run the agent in the sandbox; return the exit code of ``run`` (ARCHITECTURE.md 2)."""
    # The forwarded signals are held from the first step, before any thread exists: every
    # thread set-up makes (the mount-namespace thread, the audit writer, ...) inherits the
    # block, so a process-directed SIGTERM can only be taken by the main thread, once its
    # handler forwards it. A thread with an empty mask used to take it during set-up, and
    # the default action killed the supervisor (-15 instead of the agent's 143).
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        return _run(settings, start_services, load_profiles)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _run(
    settings: RunSettings,
    start_services: ServicesStarter | None,
    load_profiles: ProfileLoader | None,
) -> int:
    starter = start_services or _default_starter
    inputs = _prepare_inputs(settings, load_profiles)
    settings = inputs.settings
    hidden = (settings.credentials_dir,) if settings.credentials_dir else ()
    mount_ns = create_sanitized_mount_namespace(inputs.sock_path, hidden)
    network: AgentNetwork | None = None
    diag: _socket.socket | None = None
    relay = StderrRelay() if stderr_relay.wanted() else None
    try:
        network = _prepare_network(settings)
        diag = _diag_socket(network)
        if os.getpid() != 1:
            linux.set_child_subreaper()  # orphans of ours come back to us to be reaped
        # Still blocked (since run_supervisor's first step) across fork: a signal arriving
        # now stays pending and is forwarded once the handlers exist.
        init = spawn_init(_init_spec(inputs, mount_ns, network, relay))
        if relay is not None:
            relay.start()
        settings = replace(
            settings, sandbox_init_pid=init.pid,
            sandbox_diag_fd=diag.fileno() if diag is not None else None,
        )
        status = _supervise(init, settings, inputs, starter, mount_ns, network)
        return _outcome(init, status, settings.command[0])
    finally:
        _release(relay, mount_ns, settings.ca_bundle_dir, network, diag)


@record
class _RunInputs:
    """What ``run`` settles before any namespace exists."""

    settings: RunSettings  # absolute paths, policy identity, CA bundle directory
    started_in: str  # the working directory ``run`` was started in
    loader: ProfileLoader
    profiles: ProfileSet
    sock_path: SocketPath | None


def _prepare_inputs(settings: RunSettings, load_profiles: ProfileLoader | None) -> _RunInputs:
    """Check the command, make the supervisor non-dumpable, load and apply the profiles."""
    if not settings.command:
        raise SetupError("COMMAND", "no command given")
    try:
        linux.set_dumpable(False)
    except OSError as exc:
        raise SetupError("prctl", f"cannot make the supervisor non-dumpable: {exc}") from exc
    settings, started_in = run_inputs.prepare(settings)  # absolute paths, then cwd '/'
    loader = load_profiles or _make_loader(settings)
    profiles = _load_initial(loader, settings.profiles)
    settings = _apply_policy_identity(settings, loader)
    sock_path: SocketPath | None = None
    if settings.spiffe_socket:
        sock_path = resolve_socket_path(settings.spiffe_socket)
    if getattr(getattr(loader, "started", None), "filesystem", None) is not None:
        # Landlock is applied before the CA exists: its directory is made now.
        settings = replace(settings, ca_bundle_dir=_make_bundle_dir())
    return _RunInputs(settings, started_in, loader, profiles, sock_path)


def _init_spec(
    inputs: _RunInputs, mount_ns: MountNamespace, network: AgentNetwork, relay: StderrRelay | None
) -> InitSpec:
    settings = inputs.settings
    init_path = find_init()
    return InitSpec(
        command=settings.command,
        uid=settings.uid,
        gid=settings.gid,
        groups=settings.supplementary_gids,
        workdir=settings.workdir,
        default_workdir=inputs.started_in,
        mount_ns_fd=mount_ns.fd,
        net_ns_fd=network.ns_fd,
        init_path=init_path,
        landlock=_landlock_plan(
            settings, inputs.loader, inputs.sock_path, init_path, inputs.started_in
        ),
        stderr_fd=relay.agent_fd if relay is not None else None,
    )


def _supervise(
    init: InitProcess,
    settings: RunSettings,
    inputs: _RunInputs,
    starter: ServicesStarter,
    mount_ns: MountNamespace,
    network: AgentNetwork,
) -> int:
    """With the handlers in place: start the services, release the agent with its
    environment, and wait; return the init's wait status. The services always stop."""
    supervision = _Supervision(init, settings, inputs.loader, inputs.profiles)
    with supervision.handlers():
        mount_ns.close()
        network.close_ns()
        try:
            services = starter(settings, inputs.profiles, network.listen_sock)
        except BaseException:
            _abort_init(init)
            raise
        supervision.services = services
        try:
            env = _environment_or_abort(services, settings, init)
            init.start(env)
            _collect_again()
            _watch_services(services, init, supervision)
            status = supervision.wait()
            if services.failure is not None:
                raise services.failure
        finally:
            services.stop()
    return status


def _environment_or_abort(
    services: RunServices, settings: RunSettings, init: InitProcess
) -> dict[str, str]:
    """The agent's environment; without one (125 'environment'), the init is aborted."""
    try:
        return _agent_environment(services, settings)
    except ValueError as exc:
        _abort_init(init)
        raise SetupError("environment", str(exc)) from exc
    except BaseException:
        _abort_init(init)
        raise


def _agent_environment(services: RunServices, settings: RunSettings) -> dict[str, str]:
    """Scrubbed, with the services' variables; ValueError if it would leak a static secret."""
    withheld: frozenset[str] = getattr(services, "withheld", frozenset())
    env = agent_environment(os.environ, settings.proxy_port, services.extra_env, withheld)
    secrets = getattr(services, "static_secrets", None)
    leaked = leaked_secret(env, secrets(), settings.command) if secrets is not None else None
    if leaked is not None:
        raise ValueError(f"{leaked} would hand the agent a static credential")
    return env


def _release(
    relay: StderrRelay | None,
    mount_ns: MountNamespace,
    bundle_dir: str | None,
    network: AgentNetwork | None,
    diag: _socket.socket | None,
) -> None:
    """Every cleanup of ``run``, whichever step it got to."""
    if relay is not None:
        relay.finish()  # the agent's last lines (a no-op when it never started)
        relay.close_unstarted()
    mount_ns.close()
    if bundle_dir is not None:
        from supervisor import tempdirs

        tempdirs.remove(bundle_dir)
    if network is not None:
        network.close_ns()
        network.listen_sock.close()
        if diag is not None:
            diag.close()
