"""SHA-256 trust on first use, per executable path (ARCHITECTURE.md 11).

The first time a path is seen its content's digest is remembered; later a process whose
executable at that path has another digest (the file was replaced or rewritten) is not
that binary. The content is read through ``/proc/<pid>/exe`` - the file the process runs,
not whatever the path names now. Hashing is skipped while the file's identity (device,
inode, size, mtime, ctime) is unchanged, so a known binary costs one stat.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class _Seen:
    fingerprint: tuple[int, int, int, int, int]
    digest: str


def _fingerprint(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def file_digest(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, _CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


class TrustStore:
    """Thread-safe: the proxy may look up from its loop and from worker threads."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._trusted: dict[str, str] = {}  # path -> digest first seen
        self._seen: dict[str, _Seen] = {}  # path -> last verified file identity
        self._lock = threading.Lock()
        self._max = max_entries

    def verify(self, path: str, exe_link: str) -> bool:
        """True when the file open at ``exe_link`` is the one first seen at ``path``."""
        fd = os.open(exe_link, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fingerprint = _fingerprint(os.fstat(fd))
            with self._lock:
                seen = self._seen.get(path)
                if seen is not None and seen.fingerprint == fingerprint:
                    return seen.digest == self._trusted.get(path)
            digest = file_digest(fd)
        finally:
            os.close(fd)
        with self._lock:
            if path not in self._trusted and len(self._trusted) >= self._max:
                return False  # an agent minting binaries cannot grow this without bound
            trusted = self._trusted.setdefault(path, digest)
            if len(self._seen) >= self._max:
                self._seen.clear()  # identities only: the trusted digests are kept
            self._seen[path] = _Seen(fingerprint, digest)
            return trusted == digest
