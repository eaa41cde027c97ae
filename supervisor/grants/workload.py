"""JWT-SVIDs from the SPIFFE Workload API (py-spiffe's JWT path, blocking, run off the
event loop; see spiffe_jwt for why not its whole package).

The socket address comes from the supervisor's settings, never from the agent. One gRPC
channel is reused; after a failure it is dropped and rebuilt on the next call, so a
restarted agent socket is picked up without waiting for gRPC's reconnect backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from supervisor.grants import spiffe_jwt
from supervisor.grants.errors import GrantError

STEP = "workload_api"
DEFAULT_DEADLINE = 5.0

# gRPC status names (grpc.StatusCode.<name>.name) that a later attempt may get past.
_RETRYABLE = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "UNKNOWN",
     "CANCELLED"}
)


def normalize_address(address: str) -> str:
    """``unix:///abs`` or ``/abs`` → ``unix:/abs`` (what py-spiffe and gRPC accept)."""
    if address.startswith("unix:"):
        path = address[len("unix:"):]
        if path.startswith("//"):
            path = path[2:]  # unix:///abs → /abs; unix://host/... stays invalid below
    else:
        path = address
    if not path.startswith("/") or "\x00" in path or "?" in path or "#" in path:
        raise ValueError("Workload API address must be 'unix:///abs/path' or '/abs/path'")
    return "unix:" + os.path.normpath(path)


def _status_name(err: BaseException) -> str | None:
    """The gRPC status name behind a py-spiffe error (it chains the grpc.RpcError)."""
    seen: BaseException | None = err
    while seen is not None:
        code = getattr(seen, "code", None)
        if callable(code):
            try:
                value = code()
            except Exception:  # not a grpc.Call after all
                value = None
            name = getattr(value, "name", None)
            if isinstance(name, str):
                return name
        seen = seen.__cause__
    return None


def classify(err: BaseException) -> GrantError:
    """A secret-free GrantError for a Workload API failure (no server text is kept)."""
    if isinstance(err, _SocketMissing):
        return GrantError(STEP, "Workload API socket not found")
    name = _status_name(err)
    if name is None:
        # py-spiffe rejected the answer itself (bad JWT, audience, expiry): name no details.
        return GrantError(STEP, "Workload API returned an unusable JWT-SVID")
    if name in ("INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND",
                "UNIMPLEMENTED", "FAILED_PRECONDITION"):
        return GrantError(STEP, f"Workload API refused the request ({name})", retryable=False)
    if name == "DEADLINE_EXCEEDED":
        return GrantError(STEP, "Workload API deadline exceeded")
    return GrantError(STEP, f"Workload API call failed ({name})", retryable=name in _RETRYABLE)


class WorkloadSvidSource:
    """Fetches one JWT-SVID per call, for exactly one audience, with a deadline.

    Safe to call from any event loop; the blocking py-spiffe calls run on a small private
    thread pool so they never starve the loop's default executor.
    """

    def __init__(self, address: str, *, deadline: float = DEFAULT_DEADLINE,
                 max_workers: int = 4) -> None:
        self._target = normalize_address(address)
        self._path = self._target[len("unix:"):]
        self._deadline = deadline
        self._lock = threading.Lock()
        self._client: spiffe_jwt.JwtSvidClient | None = None
        self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                        thread_name_prefix="workload-api")
        self.clients_created = 0

    async def fetch(self, audience: str) -> str:
        if not audience:
            raise GrantError(STEP, "empty JWT-SVID audience", retryable=False)
        loop = asyncio.get_running_loop()
        # The deadline is enforced by gRPC; this outer bound only guards a stuck channel setup.
        try:
            async with asyncio.timeout(self._deadline + 1.0):
                return await loop.run_in_executor(self._pool, self._fetch_blocking, audience)
        except TimeoutError:
            self._discard(None)
            raise GrantError(STEP, "Workload API deadline exceeded") from None

    def _fetch_blocking(self, audience: str) -> str:
        try:
            py_spiffe_error = spiffe_jwt.jwt_api().PySpiffeError
        except spiffe_jwt.LayoutError as err:
            # Another py-spiffe than the supported one: every grant fails, and says why.
            raise GrantError(STEP, str(err), retryable=False) from None
        client = None
        try:
            client = self._get_client()
            # A set of one: a plain string would request one audience per character.
            svid = client.fetch_jwt_svid(audience={audience}, timeout=self._deadline)
        except (py_spiffe_error, OSError, ValueError) as err:
            self._discard(client)
            raise classify(err) from None
        # Exactly the requested audience, nothing more: an SVID valid for other relying
        # parties must not be handed to this token endpoint.
        if set(svid.audience) != {audience}:
            raise GrantError(STEP, "JWT-SVID audience does not match the request",
                             retryable=False)
        token = svid.token
        if not isinstance(token, str) or not token:
            raise GrantError(STEP, "Workload API returned an empty JWT-SVID")
        return token

    def _get_client(self) -> spiffe_jwt.JwtSvidClient:
        with self._lock:
            if self._client is None:
                if not os.path.exists(self._path):
                    raise _SocketMissing()
                self._client = spiffe_jwt.JwtSvidClient(self._target, self._deadline)
                self.clients_created += 1
            return self._client

    def _discard(self, client: spiffe_jwt.JwtSvidClient | None) -> None:
        """Drop the current client (only if it is still ``client``; None = whatever it is)."""
        with self._lock:
            current = self._client
            if current is None or (client is not None and current is not client):
                return
            self._client = None
        # Closing a broken channel may fail; there is nothing else to do with it.
        with contextlib.suppress(Exception):
            current.close()

    async def aclose(self) -> None:
        self._discard(None)
        self._pool.shutdown(wait=False, cancel_futures=True)


class _SocketMissing(OSError):
    def __init__(self) -> None:
        super().__init__("Workload API socket does not exist")
