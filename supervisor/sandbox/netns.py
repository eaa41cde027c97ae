"""The agent's network namespace: only ``lo``, up, with the proxy's listening socket on it.

The socket is created inside the namespace and served by the supervisor from its own
namespace (a socket keeps the namespace it was created in). ``lo`` is brought up with one
SIOCSIFFLAGS ioctl: pyroute2 would cost ~250 ms of import on the start-up path for the same
effect, and no external tool is needed. The sockets are ``_socket``'s: importing ``socket``
(its enums) costs ~9M instructions before the agent's release; the proxy thread wraps the
listening socket in a ``socket.socket`` (``services``).
"""

from __future__ import annotations

import _socket
import contextlib
import fcntl
import os
import struct

from supervisor.record import field, record
from supervisor.sandbox import linux
from supervisor.sandbox.threadns import run_on_thread
from supervisor.settings import SetupError

STEP = "network namespace"
_THREAD_NET_NS = "/proc/thread-self/ns/net"
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sH22x"  # struct ifreq: name + flags, padded to 40 bytes
LISTEN_BACKLOG = 512


@record
class AgentNetwork:
    listen_sock: _socket.socket  # bound to 127.0.0.1:port, listening, non-blocking
    ns_fd: int | None  # O_CLOEXEC fd of the agent's network namespace; None = host network

    _closed: list[bool] = field(default_factory=list, compare=False, repr=False)

    def close_ns(self) -> None:
        """Idempotent (see ``MountNamespace.close``): ``run`` calls it twice."""
        if self.ns_fd is not None and not self._closed:
            self._closed.append(True)
            with contextlib.suppress(OSError):
                os.close(self.ns_fd)


def _bring_lo_up() -> None:
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        raw = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        flags = struct.unpack(_IFREQ, raw)[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))
        raw = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
        if not struct.unpack(_IFREQ, raw)[1] & _IFF_UP:
            raise SetupError(STEP, "lo did not come up")
    finally:
        s.close()


def bind_listener(port: int) -> _socket.socket:
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _build(port: int) -> AgentNetwork:
    original = os.open(_THREAD_NET_NS, os.O_RDONLY | os.O_CLOEXEC)
    ns_fd = -1
    sock: _socket.socket | None = None
    try:
        try:
            linux.unshare(linux.CLONE_NEWNET)
        except OSError as exc:
            raise SetupError(
                STEP,
                f"unshare(CLONE_NEWNET) failed ({exc.strerror}); run as root with CAP_SYS_ADMIN",
            ) from exc
        try:
            _bring_lo_up()
            names = sorted(name for _, name in _socket.if_nameindex())
            if names != ["lo"]:
                raise SetupError(STEP, f"unexpected interfaces {names}")
            sock = bind_listener(port)
            ns_fd = os.open(_THREAD_NET_NS, os.O_RDONLY | os.O_CLOEXEC)
            if os.fstat(ns_fd).st_ino == os.fstat(original).st_ino:
                raise SetupError(STEP, "namespace fd still refers to the original namespace")
        finally:
            linux.setns(original, linux.CLONE_NEWNET)
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if ns_fd >= 0:
            os.close(ns_fd)
        if isinstance(exc, OSError):
            raise SetupError(STEP, str(exc)) from exc
        raise
    finally:
        os.close(original)
    return AgentNetwork(listen_sock=sock, ns_fd=ns_fd)


def create_agent_network(port: int) -> AgentNetwork:
    """A fresh network namespace with ``lo`` up and the proxy socket bound on 127.0.0.1:port."""
    return run_on_thread("openshell-netns", lambda: _build(port))


def host_network(port: int) -> AgentNetwork:
    """``--network host``: no namespace; the proxy listens on the host's 127.0.0.1:port."""
    try:
        return AgentNetwork(listen_sock=bind_listener(port), ns_fd=None)
    except OSError as exc:
        raise SetupError("--proxy-port", f"cannot listen on 127.0.0.1:{port}: {exc}") from exc
