"""Closing a namespace fd twice must not close the file that reused its number (run closes
them after the fork and again on the way out; meanwhile the proxy thread opens files)."""

from __future__ import annotations

import os
import socket

from supervisor.sandbox.mountns import MountNamespace
from supervisor.sandbox.netns import AgentNetwork


def test_mount_namespace_close_is_idempotent() -> None:
    ns = MountNamespace(fd=os.open("/", os.O_RDONLY), hidden_directory=None)
    ns.close()
    reused = os.open("/", os.O_RDONLY)  # the lowest free number: the one just closed
    try:
        ns.close()
        os.fstat(reused)  # still open
    finally:
        os.close(reused)


def test_agent_network_close_ns_is_idempotent() -> None:
    with socket.socket() as sock:
        net = AgentNetwork(listen_sock=sock, ns_fd=os.open("/", os.O_RDONLY))
        net.close_ns()
        reused = os.open("/", os.O_RDONLY)
        try:
            net.close_ns()
            os.fstat(reused)
        finally:
            os.close(reused)
