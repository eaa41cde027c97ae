"""``tempfile.mkdtemp`` for the start-up path, without importing tempfile.

The agent's CA bundle directory is made before its release; importing tempfile there (with
shutil, random, bz2, lzma, ...) costs ~11M instructions, about 2.5 ms of every run with an
interceptable endpoint. The directory is made where tempfile would make it: the first of
$TMPDIR, $TEMP, $TMP, /tmp, /var/tmp, /usr/tmp and the working directory that accepts a new
directory, mode 0700, under a fresh random name (mkdir never follows a planted link, and an
existing name is retried). Once tempfile is imported (its state may be set), or when no
candidate accepts the directory, tempfile itself is asked.
"""

from __future__ import annotations

import os
import sys

_ATTEMPTS = 100  # names tried per directory, as tempfile


def _candidates() -> list[str]:
    """tempfile's candidate directories on POSIX, in its order."""
    dirs = [d for d in (os.getenv(name) for name in ("TMPDIR", "TEMP", "TMP")) if d]
    dirs += ["/tmp", "/var/tmp", "/usr/tmp"]  # noqa: S108 - tempfile's own list
    try:
        dirs.append(os.getcwd())
    except OSError:
        dirs.append(os.curdir)
    return [d if d == os.curdir else os.path.abspath(d) for d in dirs]


def mkdtemp(prefix: str) -> str:
    """A new directory, mode 0700, owned by the caller; its absolute path."""
    if "tempfile" not in sys.modules:
        for base in _candidates():
            for _ in range(_ATTEMPTS):
                path = os.path.join(base, prefix + os.urandom(8).hex())
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    continue
                except OSError:
                    break  # not usable (missing, read-only, not ours): the next candidate
                return os.path.abspath(path)
    import tempfile

    return tempfile.mkdtemp(prefix=prefix)


def remove(path: str) -> None:
    """``shutil.rmtree(path, ignore_errors=True)`` for a directory made here, which holds
    only files: without importing shutil at the end of a run, where the import waited
    ~13 ms (load 6) on the proxy thread, still importing its stack beside a short agent."""
    try:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))  # a subdirectory raises: shutil's turn
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
