"""The supervisor's long-running services: the proxy and the token provider, on one
asyncio event loop in a dedicated thread.

``run`` calls :func:`start_services` after the namespaces exist and before the agent is
spawned; the listening socket it hands over already lives in the agent's network
namespace. Everything that holds a secret (the token cache, the CA key) is created here,
after the agent's init process was forked.
"""

from __future__ import annotations

import _socket
import gc
import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor import logs
from supervisor.settings import RunSettings, SetupError

if TYPE_CHECKING:
    import asyncio
    import socket

    from supervisor.audit import AuditLog
    from supervisor.credentials.store import CredentialStore, State
    from supervisor.grants.provider import TokenProvider
    from supervisor.metrics import MetricsServer
    from supervisor.profiles.matcher import PolicyTable
    from supervisor.profiles.profileset import ProfileSet
    from supervisor.proxy.ca_cert import CAMaterial
    from supervisor.proxy.interception import SandboxCA
    from supervisor.proxy.server import Identify, ProxyServer

log = logs.get(__name__)  # logging is imported on first use

_STOP_TIMEOUT = 5.0
# While the proxy thread imports its stack (~100 ms of CPU, right after the agent's release)
# any other thread that wakes (the main thread when a short agent exits, the stderr relay,
# the audit writer) waits up to the switch interval (5 ms by default) for the GIL at every
# step. A shorter interval until the proxy serves: they get it back within a fraction of a
# millisecond, and the proxy thread, the only one running, loses almost nothing.
_STARTING_SWITCH_INTERVAL = 0.00025


class _NoWorkloadApi:
    """Token source used when no Workload API address is configured: every bound request
    fails closed. Load-time validation refuses credentials without a socket, so this is
    only reached when profiles were reloaded with new bindings."""

    async def token_for(self, binding: Any) -> str:
        from supervisor.grants.errors import GrantError

        raise GrantError("workload_api", "no Workload API address configured", retryable=False)

    async def aclose(self) -> None:
        return None

    def retain(self, binding_ids: set[str]) -> None:
        return None


class Services:
    """Handle on the proxy thread; public methods are called from the supervisor's main thread.

    The thread imports the proxy stack, creates its event loop and starts the server while
    the runner spawns the agent (the listening socket already queues connections, so an
    early request waits instead of failing). Nothing of asyncio is imported on the main
    thread before the agent runs.
    """

    def __init__(self, settings: RunSettings, profiles: ProfileSet) -> None:
        self._settings = settings
        self._table: PolicyTable = profiles.table
        self._profiles_for_event = profiles
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()  # set when start succeeded or failed
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._on_failure: Callable[[SetupError], None] | None = None
        self._switch_interval: float | None = None  # saved while the proxy thread starts
        self.failure: SetupError | None = None
        self._server: ProxyServer | None = None
        self._provider: TokenProvider | _NoWorkloadApi | None = None
        self._audit: AuditLog | None = None
        self._ca: SandboxCA | None = None  # on the proxy thread, from _ca_material
        self._ca_material: CAMaterial | None = None
        self._bundle_dir: str | None = None
        self._metrics: MetricsServer | None = None
        self.extra_env: dict[str, str] = {}
        # Static credentials (ARCHITECTURE.md 9): built after the init was forked.
        self._static: CredentialStore | None = None
        self.withheld: frozenset[str] = frozenset()  # declared variables: never inherited

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, listen_sock: _socket.socket) -> None:
        """Synchronous part (audit log, CA bundles), then the proxy thread."""
        from supervisor.audit import AuditLog

        settings = self._settings
        try:
            self._audit = AuditLog(settings.audit_log)
        except OSError as err:
            raise SetupError("--audit-log", f"cannot open {settings.audit_log!r}: {err}") from None
        self._prepare_tls(self._profiles_for_event)
        self._prepare_static(self._profiles_for_event)  # adds to the CA variables
        self._thread = threading.Thread(
            target=self._thread_main, args=(listen_sock,), name="proxy-loop", daemon=True
        )

    def begin(self) -> None:
        """Start the proxy thread (idempotent). ``run`` calls it right after releasing the
        agent, so the proxy's imports do not compete for the GIL with the spawn."""
        thread = self._thread
        if thread is not None and thread.ident is None and not self._stopping.is_set():
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(_STARTING_SWITCH_INTERVAL)
            try:
                thread.start()
            except BaseException:  # no thread to restore it (e.g. can't start new thread)
                self._started()
                raise

    def _started(self) -> None:
        """The proxy serves or failed: back to the interpreter's switch interval."""
        saved, self._switch_interval = self._switch_interval, None
        if saved is not None:
            sys.setswitchinterval(saved)

    def watch(self, on_failure: Callable[[SetupError], None]) -> None:
        """Call ``on_failure`` (from the proxy thread, or now) if the proxy cannot start.

        The runner kills the agent there: an agent never runs on without its proxy."""
        self.begin()
        with self._lock:
            failure = self.failure
            if failure is None:
                self._on_failure = on_failure
        if failure is not None:
            on_failure(failure)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the proxy serves; raise SetupError if it cannot."""
        self.begin()
        if not self._ready.wait(timeout):
            raise SetupError("proxy", f"not serving after {timeout:.0f} s")
        if self.failure is not None:
            raise self.failure

    def _thread_main(self, listen_sock: _socket.socket) -> None:
        try:
            logs.ready()  # configured before the proxy stack (asyncio, grants) logs anything
            self._serve(listen_sock)
        except BaseException:
            # A run whose agent finished while the proxy was still starting exits without
            # waiting for this thread; interpreter shutdown may then break its imports.
            if not self._stopping.is_set():
                raise
        finally:
            self._started()

    def _serve(self, raw_sock: _socket.socket) -> None:
        from supervisor import allocator

        # Before the proxy stack's threads (Workload API pool, gRPC's, the audit writer)
        # start allocating: they share this thread's and the main thread's arenas.
        allocator.limit_arenas()
        import asyncio

        from supervisor.proxy.loop import new_event_loop

        _raise_fd_limit()
        loop = new_event_loop()  # uvloop when installed, else asyncio's
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            listen_sock = _full_socket(raw_sock)
            loop.run_until_complete(self._start_async(listen_sock))
        except Exception as err:
            failure = err if isinstance(err, SetupError) else SetupError(
                "proxy", f"could not start: {err}"
            )
            self._fail(failure)
            loop.run_until_complete(self._stop_async())
            loop.close()
            return
        # The start-up objects (grpc, cryptography, the profile tables) live for the whole
        # run: keep them out of the collector's generations so a full collection under
        # load does not walk them (tens of ms seen).
        gc.freeze()
        allocator.trim()  # what start-up freed (profile parsing, imports) goes back
        if self._audit is not None:
            profiles = self._profiles_for_event
            self._audit.config_event(
                "supervisor started",
                profiles=[p.id for p in profiles.profiles],
                bindings=len(profiles.bindings),
            )
        self._started()
        with self._lock:  # pairs with stop(): exactly one of us decides who stops the loop
            self._ready.set()
            stop_now = self._stopping.is_set()
        if not stop_now:
            loop.run_forever()
        # stop() was called (maybe before we got here): close and exit the thread.
        loop.run_until_complete(self._stop_async())
        loop.close()

    def _fail(self, failure: SetupError) -> None:
        self._started()
        with self._lock:
            self.failure = failure
            callback = self._on_failure
        self._ready.set()
        if callback is not None:
            callback(failure)

    def _prepare_static(self, profiles: ProfileSet) -> None:
        from supervisor.credentials.from_profiles import static_credentials

        creds = static_credentials(profiles.profiles)
        if not creds:
            return
        from supervisor.credentials.store import CredentialStore, MissingRequired

        try:
            self._static = CredentialStore(creds, os.environ, self._settings.credentials_dir)
        except MissingRequired as err:
            raise SetupError(err.step, err.reason) from None
        self.withheld = self._static.state.table.variables
        self.extra_env.update(self._static.agent_variables())

    def static_secrets(self) -> frozenset[str]:
        """The static credentials' values (the runner checks the agent's environment)."""
        return self._static.secrets() if self._static is not None else frozenset()

    def refresh_credentials(self) -> None:
        """Re-read --credentials-dir (Secret rotation); called by the runner's poll."""
        if self._static is not None and self._settings.credentials_dir:
            self._static.refresh()

    def _static_state(self) -> State | None:
        return self._static.state if self._static is not None else None

    def _prepare_tls(self, profiles: ProfileSet) -> None:
        from supervisor.proxy.tls_names import hosts_to_intercept

        hosts = hosts_to_intercept(profiles.profiles)
        if not hosts:
            return  # no TLS to intercept: cryptography is never imported
        # Before the agent runs only its key and certificate are made (cryptography's EC
        # module, not x509 nor ssl: see ca_cert); the proxy thread makes the SandboxCA.
        from datetime import UTC, datetime

        from supervisor.proxy.ca_cert import DEFAULT_CA_VALIDITY, make_ca
        from supervisor.proxy.tls_bundles import env_vars, write_bundles

        try:
            self._ca_material = make_ca(hosts, datetime.now(UTC), DEFAULT_CA_VALIDITY)
        except Exception as err:
            raise SetupError("TLS interception", f"cannot create the sandbox CA: {err}") from None
        # Agent-readable trust bundles: a fresh root-owned directory, world-readable files.
        from supervisor.tempdirs import mkdtemp

        self._bundle_dir = self._settings.ca_bundle_dir or mkdtemp(prefix="openshell-ca-")
        os.chmod(self._bundle_dir, 0o755)  # noqa: S103 (public certificates only, no keys)
        paths = write_bundles(self._bundle_dir, self._ca_material.pem)
        self.extra_env.update(env_vars(paths))

    async def _start_async(self, listen_sock: socket.socket) -> None:
        if self._ca_material is not None:
            from supervisor.proxy.interception import SandboxCA

            self._ca = SandboxCA.from_material(self._ca_material)
        from supervisor.proxy.server import Limits, ProxyServer
        from supervisor.proxy.tls_upstream import build_upstream_context

        settings = self._settings
        assert self._audit is not None
        try:
            upstream_ssl = build_upstream_context(settings.ca_bundle)
        except (OSError, ValueError) as err:
            raise SetupError("--ca-bundle", f"cannot load trust anchors: {err}") from None
        if settings.spiffe_socket:
            from supervisor.grants.provider import create_token_provider

            # Token endpoints are verified as upstreams are: one context, one copy of the
            # system roots in memory (~1 MiB each), none loaded at the first grant.
            self._provider = create_token_provider(
                settings.spiffe_socket,
                ca_bundle=settings.ca_bundle,
                tls=upstream_ssl,
                grant_timeout=settings.grant_timeout,
                upstream_proxy=settings.upstream_proxy,
            )
        else:
            self._provider = _NoWorkloadApi()
        if settings.upstream_proxy is not None:  # display: never the credentials
            log.info("upstream connections go through %s", settings.upstream_proxy.display)
        from supervisor.telemetry import ProxyStats  # the proxy's: after the release

        self._server = ProxyServer(
            listen_sock,
            self._current_table,
            self._provider,
            self._audit,
            upstream_ssl=upstream_ssl,
            interceptor=self._ca,
            upstream_proxy=settings.upstream_proxy,
            # TLS to an https:// proxy: the same verification as upstreams (--ca-bundle).
            upstream_proxy_tls=upstream_ssl,
            identify=self._identify(),
            static_credentials=self._static_state if self._static is not None else None,
            # Bytes are counted only when someone can read them.
            stats=ProxyStats(count_bytes=settings.metrics_address is not None),
            limits=Limits(
                response_timeout=settings.response_timeout,
                upstream_idle_timeout=settings.upstream_idle_timeout,
                upgraded_idle_timeout=settings.upstream_idle_timeout,
            ),
        )
        await self._server.start()
        if settings.metrics_address is not None:
            self._start_metrics(settings.metrics_address)

    def _start_metrics(self, address: tuple[str, int]) -> None:
        """The Prometheus endpoint, bound from this thread: the supervisor's network
        namespace, never the agent's (ARCHITECTURE.md 8)."""
        from supervisor.grants.provider import TokenProvider
        from supervisor.metrics import MetricsServer, Sources

        server, provider, audit = self._server, self._provider, self._audit
        assert server is not None and audit is not None
        grants = provider if isinstance(provider, TokenProvider) else None
        self._metrics = MetricsServer(address, Sources(
            proxy=lambda: server.stats,
            agent_connections=lambda: server.counters.active,
            grants=lambda: grants.metrics if grants is not None else None,
            token_cache_evictions=lambda: grants.cache.evictions if grants is not None else 0,
            audit_events_dropped=lambda: audit.dropped_total,
        ))
        self._metrics.start()
        log.info("metrics at http://%s:%d/metrics", *self._metrics.address)

    def _identify(self) -> Identify | None:
        """Binary identity through the sandbox's /proc (ARCHITECTURE.md 11)."""
        if self._settings.sandbox_init_pid is None:
            return None
        from supervisor.binaries.identity import BinaryResolver

        diag = None
        if self._settings.sandbox_diag_fd is not None:
            # Our own descriptor: the runner closes its own when the run ends.
            import socket

            diag = socket.socket(fileno=os.dup(self._settings.sandbox_diag_fd))
        return BinaryResolver(self._settings.sandbox_init_pid, diag=diag).lookup

    def _current_table(self) -> PolicyTable:
        # Read on every request: a reload swaps one reference, which is atomic.
        return self._table

    def reload(self, profiles: ProfileSet) -> None:
        """Swap in a validated profile set; drop cached tokens of bindings that are gone."""
        from supervisor.proxy.tls_names import hosts_to_intercept

        hosts = hosts_to_intercept(profiles.profiles)
        material = self._ca_material
        if material is not None:
            uncovered = [h for h in hosts if not material.covers(h)]
            if uncovered:
                log.warning(
                    "reload: TLS interception for %s needs a restart (outside this run's CA "
                    "name constraints): HTTPS to these hosts is refused until then",
                    ", ".join(uncovered),
                )
        elif hosts:
            log.warning(
                "reload: TLS interception for %s needs a restart (this run started without "
                "an interception CA): inspected HTTPS to these hosts is refused until then",
                ", ".join(hosts),
            )
        self._table = profiles.table
        if self._static is not None:
            from supervisor.credentials.from_profiles import static_credentials

            self._static.refresh(static_credentials(profiles.profiles))
        provider, loop, server = self._provider, self._loop, self._server
        if provider is not None and loop is not None and self._ready.is_set():
            keep = {b.id for b in profiles.bindings}
            loop.call_soon_threadsafe(provider.retain, keep)
            if server is not None:  # pooled connections were checked under the old rules
                loop.call_soon_threadsafe(server.drop_idle_upstreams)
        if self._audit is not None:
            self._audit.config_event(
                "profiles reloaded",
                profiles=[p.id for p in profiles.profiles],
                bindings=len(profiles.bindings),
            )

    def stop(self) -> None:
        """Close the proxy and the provider, end the thread; idempotent.

        If the proxy is still starting (the agent was quicker, e.g. ``run -- /bin/true``),
        the thread closes everything itself once started; nobody waits for that, and the
        daemon thread ends with the process."""
        with self._lock:
            first = not self._stopping.is_set()
            self._stopping.set()
            serving = self._ready.is_set() and self.failure is None
        loop, thread = self._loop, self._thread
        if first and serving and loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_STOP_TIMEOUT)
        if self._bundle_dir is not None:
            from supervisor import tempdirs

            tempdirs.remove(self._bundle_dir)
            self._bundle_dir = None
        if self._audit is not None:
            # Flushes the audit writer (run exits without finalization); events the proxy
            # thread may still log are counted as dropped.
            self._audit.close()

    async def _stop_async(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        if self._server is not None:
            await self._server.close()
        if self._provider is not None:
            await self._provider.aclose()


def _full_socket(raw: _socket.socket) -> socket.socket:
    """``raw`` as a ``socket.socket`` (what asyncio serves): the runner makes the listening
    socket with ``_socket`` before the agent's release, where ``socket`` is not imported.
    The descriptor moves to the new object (``raw`` is detached: closing it is a no-op)."""
    import socket

    if isinstance(raw, socket.socket):
        return raw
    full = socket.socket(fileno=raw.detach())
    full.setblocking(False)  # as bind_listener left it
    return full


def _raise_fd_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: the proxy's connection caps derive from it
    (at the common soft limit of 1024 only ~480 agent connections would be allowed)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as err:
            log.debug("cannot raise RLIMIT_NOFILE: %s", err)


def start_services(
    settings: RunSettings,
    profiles: ProfileSet,
    listen_sock: _socket.socket,
    *,
    defer_start: bool = False,
) -> Services:
    """Start the proxy (and the token provider) serving ``listen_sock``.

    Returns once the agent-facing parts exist (the CA bundles and ``extra_env``); the proxy
    finishes starting on its thread: ``watch(on_failure)`` reports a failure, and
    ``wait_ready()`` blocks until it serves. Raises SetupError."""
    if settings.metrics_address is not None and settings.network == "host":
        raise SetupError(
            "--metrics-address",
            "needs --network isolated: in the host's network the agent could reach it",
        )
    if profiles.bindings and not settings.spiffe_socket:
        first = profiles.bindings[0].id
        raise SetupError(
            "--spiffe-socket",
            f"profiles bind credentials (e.g. {first}) but no Workload API address is set "
            "(--spiffe-socket or $SPIFFE_ENDPOINT_SOCKET)",
        )
    services = Services(settings, profiles)
    services.start(listen_sock)
    if not defer_start:  # else the caller calls begin()/watch()/wait_ready()
        services.begin()
    return services
