"""The supervisor's long-running services: the proxy and the token provider, on one
asyncio event loop in a dedicated thread.

``run`` calls :func:`start_services` after the namespaces exist and before the agent is
spawned; the listening socket it hands over already lives in the agent's network
namespace. Everything that holds a secret (the token cache, the CA key) is created here,
after the agent's init process was forked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from supervisor.settings import RunSettings, SetupError

if TYPE_CHECKING:
    from supervisor.audit import AuditLog
    from supervisor.grants.provider import TokenProvider
    from supervisor.profiles.matcher import PolicyTable
    from supervisor.profiles.profileset import ProfileSet
    from supervisor.proxy.interception import SandboxCA
    from supervisor.proxy.server import ProxyServer

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP_TIMEOUT = 5.0


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
    """Handle on the running proxy; every method is called from the supervisor's main thread."""

    def __init__(self, settings: RunSettings, profiles: ProfileSet) -> None:
        self._settings = settings
        self._table: PolicyTable = profiles.table
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="proxy-loop", daemon=True)
        self._server: ProxyServer | None = None
        self._provider: TokenProvider | _NoWorkloadApi | None = None
        self._audit: AuditLog | None = None
        self._ca: SandboxCA | None = None
        self._bundle_dir: str | None = None
        self.extra_env: dict[str, str] = {}
        self._starting: concurrent.futures.Future[None] | None = None
        self._profiles_for_event = profiles

    # -- lifecycle ---------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def start(self, profiles: ProfileSet, listen_sock: socket.socket) -> None:
        from supervisor.audit import AuditLog

        settings = self._settings
        try:
            self._audit = AuditLog(settings.audit_log)
        except OSError as err:
            raise SetupError("--audit-log", f"cannot open {settings.audit_log!r}: {err}") from None
        self._prepare_tls(profiles)
        self._thread.start()
        # The proxy starts (and imports its stack) on its own thread while the runner
        # spawns the agent: the listening socket already accepts into its backlog, so an
        # early agent request waits a few milliseconds instead of failing. The runner
        # calls wait_ready() right after the spawn and fails closed (125) on error.
        self._starting = asyncio.run_coroutine_threadsafe(
            self._start_async(listen_sock), self._loop
        )
        self._profiles_for_event = profiles

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the proxy serves; raise SetupError (and stop) if it cannot."""
        if self._starting is None:
            return
        starting, self._starting = self._starting, None
        try:
            starting.result(timeout)
        except SetupError:
            self.stop()
            raise
        except Exception as err:
            self.stop()
            raise SetupError("proxy", f"could not start: {err}") from None
        assert self._audit is not None
        profiles = self._profiles_for_event
        self._audit.config_event(
            "supervisor started",
            profiles=[p.id for p in profiles.profiles],
            bindings=len(profiles.bindings),
        )

    def _prepare_tls(self, profiles: ProfileSet) -> None:
        from supervisor.proxy.tls_names import hosts_to_intercept

        hosts = hosts_to_intercept(profiles.profiles)
        if not hosts:
            return  # no TLS to intercept: cryptography is never imported
        from supervisor.proxy.interception import SandboxCA
        from supervisor.proxy.tls_bundles import env_vars

        try:
            self._ca = SandboxCA.generate(hosts)
        except Exception as err:
            raise SetupError("TLS interception", f"cannot create the sandbox CA: {err}") from None
        # Agent-readable trust bundles: a fresh root-owned directory, world-readable files.
        self._bundle_dir = tempfile.mkdtemp(prefix="openshell-ca-")
        os.chmod(self._bundle_dir, 0o755)  # noqa: S103 (public certificates only, no keys)
        paths = self._ca.write_bundles(self._bundle_dir)
        self.extra_env = env_vars(paths)

    async def _start_async(self, listen_sock: socket.socket) -> None:
        from supervisor.proxy.server import ProxyServer
        from supervisor.proxy.tls_upstream import build_upstream_context

        settings = self._settings
        assert self._audit is not None
        if settings.spiffe_socket:
            from supervisor.grants.provider import create_token_provider

            self._provider = create_token_provider(
                settings.spiffe_socket,
                ca_bundle=settings.ca_bundle,
                grant_timeout=settings.grant_timeout,
            )
        else:
            self._provider = _NoWorkloadApi()
        try:
            upstream_ssl = build_upstream_context(settings.ca_bundle)
        except (OSError, ValueError) as err:
            raise SetupError("--ca-bundle", f"cannot load trust anchors: {err}") from None
        self._server = ProxyServer(
            listen_sock,
            self._current_table,
            self._provider,
            self._audit,
            upstream_ssl=upstream_ssl,
            interceptor=self._ca,
        )
        await self._server.start()

    def _current_table(self) -> PolicyTable:
        # Read on every request: a reload swaps one reference, which is atomic.
        return self._table

    def reload(self, profiles: ProfileSet) -> None:
        """Swap in a validated profile set; drop cached tokens of bindings that are gone."""
        from supervisor.proxy.tls_names import hosts_to_intercept

        if self._ca is not None:
            uncovered = [h for h in hosts_to_intercept(profiles.profiles) if not self._ca.covers(h)]
            if uncovered:
                log.warning(
                    "reload: TLS interception for %s needs a restart (outside this run's CA)",
                    ", ".join(uncovered),
                )
        self._table = profiles.table
        provider = self._provider
        if provider is not None:
            keep = {b.id for b in profiles.bindings}
            self._loop.call_soon_threadsafe(provider.retain, keep)
        if self._audit is not None:
            self._audit.config_event(
                "profiles reloaded",
                profiles=[p.id for p in profiles.profiles],
                bindings=len(profiles.bindings),
            )

    def stop(self) -> None:
        """Close the proxy and the provider, stop the loop; idempotent."""
        if self._thread.is_alive():
            try:
                self._call(self._stop_async(), timeout=_STOP_TIMEOUT)
            except Exception as err:  # best effort: we are shutting down
                log.debug("stopping services: %s", err)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_TIMEOUT)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()
        if self._bundle_dir is not None:
            shutil.rmtree(self._bundle_dir, ignore_errors=True)
            self._bundle_dir = None
        if self._audit is not None:
            self._audit.close()

    async def _stop_async(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._provider is not None:
            await self._provider.aclose()


def start_services(
    settings: RunSettings, profiles: ProfileSet, listen_sock: socket.socket
) -> Services:
    """Start the proxy (and the token provider) serving ``listen_sock``.

    Returns once the agent-facing parts exist (the CA bundles and ``extra_env``); the proxy
    finishes starting in the background. Call ``wait_ready()`` before relying on it.
    Raises SetupError."""
    if profiles.bindings and not settings.spiffe_socket:
        first = profiles.bindings[0].id
        raise SetupError(
            "--spiffe-socket",
            f"profiles bind credentials (e.g. {first}) but no Workload API address is set "
            "(--spiffe-socket or $SPIFFE_ENDPOINT_SOCKET)",
        )
    services = Services(settings, profiles)
    services.start(profiles, listen_sock)
    return services
