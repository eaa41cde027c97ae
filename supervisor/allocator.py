"""glibc malloc settings for the long-running proxy.

glibc gives every thread that allocates its own arena, up to 8 per core. The proxy's
threads (its event loop, the Workload API pool, gRPC's timer and event-engine threads, the
audit writer) would hold ten arenas, most nearly empty but each keeping its free memory
and top padding. With the GIL, only one of them allocates Python objects at a time, so
two arenas (the main thread's and the event loop's) lose nothing to lock contention and
keep ~0.7 MiB less resident. ``trim`` hands memory that start-up freed back to the system.

Other C libraries (musl) have neither call: there both are no-ops.
"""

from __future__ import annotations

import ctypes

M_ARENA_MAX = -8  # glibc malloc.h
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this interpreter already uses
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: the lookup raises elsewhere)
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """At most ``arenas`` malloc arenas from now on (threads created later share them).
    True when applied. Call before the threads that should share start allocating."""
    libc = _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))


def trim() -> bool:
    """Return free memory at the top and inside every arena to the system (``malloc_trim``).
    True when something was released."""
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(ctypes.c_size_t(0)))
