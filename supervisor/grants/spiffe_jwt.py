"""The JWT-SVID half of py-spiffe's Workload API client, without its X.509 half.

py-spiffe's package ``__init__`` imports its whole stack (X.509 sources and bundles,
pyasn1, pem, cryptography.x509) and ``WorkloadApiClient``'s module imports the X.509 types
too, though the supervisor only fetches JWT-SVIDs: ~3.5 MiB of the proxy's resident memory
for code it never runs. Here the ``spiffe`` package is registered without running its
``__init__`` and only the modules the JWT path needs are imported: py-spiffe's generated
Workload API stub and messages, its header interceptor, its ``handle_error`` wrapper, its
``JwtSvid`` parser and its errors. The fetch itself is ``WorkloadApiClient.fetch_jwt_svid``
(py-spiffe 0.3) restated in a few lines.

The rest of the package stays reachable: the first attribute of ``spiffe`` that is not
there yet (``spiffe.WorkloadApiClient``, ``from spiffe import X509Source``) runs the
package's ``__init__`` in place. The module layout is py-spiffe 0.3's (pinned in
pyproject.toml); another layout fails the grant with a named error, never silently.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

from supervisor.grants.spiffe_import import ignore_dsa_deprecation

# The metadata every Workload API call carries (SPIFFE Workload Endpoint spec; py-spiffe's
# WORKLOAD_API_HEADER_KEY/VALUE).
HEADER = ("workload.spiffe.io", "true")

_MODULES = {
    "errors": "spiffe.errors",
    "api_errors": "spiffe.workloadapi.errors",
    "handle_error": "spiffe.workloadapi.handle_error",
    "pb2": "spiffe._proto.workload_pb2",
    "pb2_grpc": "spiffe._proto.workload_pb2_grpc",
    "headers": "spiffe.workloadapi.grpc.header_manipulator_client_interceptor",
    "jwt_svid": "spiffe.svid.jwt_svid",
}

_lock = threading.Lock()
_api: JwtApi | None = None


class LayoutError(ImportError):
    """The installed py-spiffe does not have the modules or names this loader expects."""


class JwtApi:
    """The py-spiffe names the JWT path uses, looked up once (a missing one: LayoutError)."""

    def __init__(self, modules: dict[str, ModuleType]) -> None:
        def name(key: str, attr: str) -> Any:
            try:
                return getattr(modules[key], attr)
            except AttributeError:
                raise LayoutError(f"py-spiffe {_version()}: {_MODULES[key]}.{attr} is missing "
                                  "(the supervisor supports py-spiffe 0.3)") from None

        self.PySpiffeError: type[Exception] = name("errors", "PySpiffeError")
        self.ArgumentError: type[Exception] = name("errors", "ArgumentError")
        self.FetchJwtSvidError: type[Exception] = name("api_errors", "FetchJwtSvidError")
        self.handle_error: Any = name("handle_error", "handle_error")
        self.JWTSVIDRequest: Any = name("pb2", "JWTSVIDRequest")
        self.Stub: Any = name("pb2_grpc", "SpiffeWorkloadAPIStub")
        self.header_adder_interceptor: Any = name("headers", "header_adder_interceptor")
        self.JwtSvid: Any = name("jwt_svid", "JwtSvid")


def jwt_api() -> JwtApi:
    """Import the JWT path of py-spiffe (once); raises LayoutError for another layout."""
    global _api
    with _lock:
        if _api is None:
            ignore_dsa_deprecation()
            _register_package()
            modules: dict[str, ModuleType] = {}
            for key, module in _MODULES.items():
                try:
                    modules[key] = importlib.import_module(module)
                except ModuleNotFoundError as err:
                    if err.name is None or not module.startswith(err.name):
                        raise  # a dependency of py-spiffe is missing: say that one
                    raise LayoutError(f"py-spiffe {_version()} has no module {module} (the "
                                      "supervisor supports py-spiffe 0.3)") from None
            _api = JwtApi(modules)
        return _api


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spiffe")
    except PackageNotFoundError:
        return "(not installed)"


def _register_package() -> None:
    """Put ``spiffe`` in sys.modules without running its ``__init__`` (unless some code
    already imported it: then there is nothing to save and nothing to do)."""
    if "spiffe" in sys.modules:
        return
    spec = importlib.util.find_spec("spiffe")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise LayoutError(f"py-spiffe {_version()}: no importable 'spiffe' package")
    package = importlib.util.module_from_spec(spec)
    complete_lock = threading.RLock()

    def complete(attr: str) -> Any:
        """PEP 562: called only for a name the package does not have yet; runs the real
        ``__init__`` into this same module object, then answers from it."""
        with complete_lock:
            if package.__dict__.get("__getattr__") is complete:
                del package.__dict__["__getattr__"]
                assert spec.loader is not None
                spec.loader.exec_module(package)
        try:
            return package.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module 'spiffe' has no attribute {attr!r}") from None

    package.__dict__["__getattr__"] = complete
    sys.modules["spiffe"] = package


class JwtSvidClient:
    """One gRPC channel to the Workload API; ``fetch_jwt_svid`` as py-spiffe's client has it."""

    def __init__(self, target: str, default_timeout: float) -> None:
        import grpc

        api = jwt_api()
        self._api = api
        self._timeout = default_timeout
        channel = grpc.insecure_channel(target)
        self._channel = grpc.intercept_channel(channel, api.header_adder_interceptor(*HEADER))
        self._stub = api.Stub(self._channel)
        # py-spiffe's error wrapping: gRPC errors become FetchJwtSvidError chained to them.
        self._fetch = api.handle_error(error_cls=api.FetchJwtSvidError)(self._fetch_unwrapped)

    def fetch_jwt_svid(self, audience: set[str], timeout: float | None = None) -> Any:
        """A parsed (not verified: the token endpoint verifies it) JWT-SVID for ``audience``."""
        return self._fetch(audience, self._timeout if timeout is None else timeout)

    def _fetch_unwrapped(self, audience: set[str], timeout: float) -> Any:
        if not audience:
            raise self._api.ArgumentError("Parameter audiences cannot be empty")
        request = self._api.JWTSVIDRequest(audience=audience, spiffe_id="")
        response = self._stub.FetchJWTSVID(request, timeout=timeout)
        if len(response.svids) == 0:
            raise self._api.FetchJwtSvidError("JWT SVID response is empty")
        return self._api.JwtSvid.parse_insecure(response.svids[0].svid, audience)

    def close(self) -> None:
        self._channel.close()
