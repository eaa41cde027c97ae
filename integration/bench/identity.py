"""Binary identity leg: what judging the connecting executable adds to the first request of
a cold connection, and to a request on a warm one (ARCHITECTURE.md 11; target: <= 1 ms).

A shell stands in for the sandbox's init; a client below it opens one connection at a time
to a listener of ours and waits. For each accepted connection we time the proxy's judge on
its first use (the /proc lookup: the socket's inode, the holders among the init's
descendants, exe and ancestors, trust-on-first-use check; the socket found with sock_diag
as the proxy does, and through /proc tables for comparison) and on a second use (cached on
the connection: what every later request pays). The first sight of a binary (its SHA-256)
is timed on its own: it is paid once per executable per run, not per connection.
Run alone: ``python -m integration.bench.identity [N]`` (root).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from statistics import median, quantiles

from supervisor.binaries.diag import open_diag_socket
from supervisor.binaries.globs import with_resolved
from supervisor.binaries.identity import BinaryResolver
from supervisor.binaries.judge import ConnectionJudge

CLIENT = """\
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.recv(1)  # the bench closes it once judged
    s.close()
"""


@dataclass
class IdentityCost:
    cold_ms: list[float]  # first judgement on a fresh connection (sock_diag, as the proxy)
    warm_ms: list[float]  # later judgements on the same connection (cached)
    first_sight_ms: float  # hashing the client's executable the first time it is seen
    tables_ms: list[float]  # the same lookup through /proc/<init>/net/tcp (the fallback)

    def summary(self) -> dict[str, float]:
        def p95(xs: list[float]) -> float:
            return quantiles(xs, n=20)[-1] if len(xs) > 1 else xs[0]

        return {
            "connections": len(self.cold_ms),
            "cold_median_ms": median(self.cold_ms), "cold_p95_ms": p95(self.cold_ms),
            "warm_median_ms": median(self.warm_ms), "warm_p95_ms": p95(self.warm_ms),
            "first_sight_ms": self.first_sight_ms,
            "tables_median_ms": median(self.tables_ms), "tables_p95_ms": p95(self.tables_ms),
        }


def binary_identity_cost(n: int = 200) -> IdentityCost:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(30)
    port = listener.getsockname()[1]
    init = subprocess.Popen(["/bin/sh", "-c", f'"$0" -c \'{CLIENT}\' {port} {n + 1}; sleep 30',
                             sys.executable])
    resolver = BinaryResolver(init.pid, diag=open_diag_socket())
    tables = BinaryResolver(init.pid, trust=resolver.trust)  # no sock_diag: /proc tables
    patterns = with_resolved([sys.executable])
    cold: list[float] = []
    warm: list[float] = []
    via_tables: list[float] = []
    first_sight = 0.0
    try:
        for i in range(n + 1):
            conn, peer = listener.accept()
            with conn:
                judge = ConnectionJudge(lambda p=peer: resolver.lookup(p, ("127.0.0.1", port)))
                start = time.perf_counter_ns()
                allowed = judge.allows(patterns)
                elapsed = (time.perf_counter_ns() - start) / 1e6
                start = time.perf_counter_ns()
                again = judge.allows(patterns)
                cached = (time.perf_counter_ns() - start) / 1e6
                if not (allowed and again):
                    raise RuntimeError(f"the client was not recognized: {judge.denial()}")
                if i == 0:
                    first_sight = elapsed  # includes hashing the interpreter once
                    continue
                cold.append(elapsed)
                warm.append(cached)
                start = time.perf_counter_ns()
                tables.lookup(peer, ("127.0.0.1", port))
                via_tables.append((time.perf_counter_ns() - start) / 1e6)
    finally:
        init.kill()
        init.wait()
        listener.close()
    if resolver.diag is not None:
        resolver.diag.close()
    return IdentityCost(cold, warm, first_sight, via_tables)


if __name__ == "__main__":
    cost = binary_identity_cost(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
    for key, value in cost.summary().items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
