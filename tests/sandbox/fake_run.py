"""Run ``run_supervisor`` with a fake profile loader and fake services (test driver).

The fake services answer every HTTP request on the handed listening socket with a 403,
so check-isolation's "proxy answers" can pass without the real proxy; reloads and stops
are appended to --log. A profile file containing the word 'invalid' fails to load. --break-seccomp makes the
agent's seccomp filter impossible to load.
"""

from __future__ import annotations

import _socket
import argparse
import hashlib
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisor.profiles.diagnostics import Diagnostic, ProfileError
from supervisor.profiles.loader import fingerprint_files
from supervisor.runner import run_supervisor
from supervisor.settings import RunSettings, SetupError


@dataclass(frozen=True)
class FakeProfiles:
    """Stands in for a ProfileSet: the runner reads only its fingerprint."""

    fingerprint: str

    def __str__(self) -> str:
        return self.fingerprint[:12]


def load(paths: tuple[str, ...]) -> FakeProfiles:
    data = b"".join(open(p, "rb").read() for p in paths)
    if b"invalid" in data:
        raise ProfileError([Diagnostic(paths[0], "x", "id", "invalid profile"),
                            Diagnostic(paths[0], "x", "id", "second")])
    return FakeProfiles(fingerprint_files(paths))


class FakeServices:
    def __init__(self, raw: _socket.socket, log: str | None, extra: dict[str, str],
                 ca_bundle: str | None = None) -> None:
        self.extra_env = {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt", **extra}
        self._ca_bundle = ca_bundle
        # run hands over a _socket.socket (as to the real services, which wrap it alike)
        sock = raw if isinstance(raw, socket.socket) else socket.socket(fileno=raw.detach())
        self._sock = sock
        self._log = log
        self._stopped = threading.Event()
        sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
                except OSError:
                    pass

    def _write(self, line: str) -> None:
        if self._log:
            with open(self._log, "a") as f:
                f.write(line + "\n")

    failure: SetupError | None = None  # the fake always serves

    def watch(self, on_failure: Callable[[SetupError], None]) -> None:
        return None

    def reload(self, profiles: Any) -> None:
        self._write(f"reload {profiles}")

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        if self._ca_bundle is not None:  # what the TLS code would read now, after the agent ran
            with open(self._ca_bundle, "rb") as f:
                self._write(f"ca-bundle {hashlib.sha256(f.read()).hexdigest()}")
        self._write("stop")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket")
    parser.add_argument("--log")
    parser.add_argument("--profile", action="append", default=[])
    parser.add_argument("--network", default="isolated")
    parser.add_argument("--port", type=int, default=3128)
    parser.add_argument("--workdir")
    parser.add_argument("--ca-bundle")
    parser.add_argument("--credentials-dir")
    parser.add_argument("--extra", action="append", default=[], help="NAME=VALUE for extra_env")
    parser.add_argument("--break-seccomp", action="store_true",
                        help="make libseccomp unloadable in the init (fail-closed test)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.break_seccomp:
        from supervisor.sandbox import libseccomp

        def unloadable() -> Any:
            raise libseccomp.SeccompError("libseccomp.so.2 not found (broken by the test)")

        libseccomp._load_library = unloadable  # type: ignore[assignment]
    command = tuple(args.command[1:] if args.command[:1] == ["--"] else args.command)
    settings = RunSettings(
        profiles=tuple(args.profile),
        command=command,
        spiffe_socket=args.socket,
        network=args.network,
        proxy_port=args.port,
        workdir=args.workdir,
        ca_bundle=args.ca_bundle,
        credentials_dir=args.credentials_dir,
    )
    try:
        return run_supervisor(
            settings,
            start_services=lambda s, _p, sock: FakeServices(
                sock, args.log, dict(e.split("=", 1) for e in args.extra), s.ca_bundle
            ),
            load_profiles=load,
        )
    except SetupError as err:
        print(f"openshell-supervisor: error: {err}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
