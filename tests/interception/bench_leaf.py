"""Time to issue a leaf + server context (cache miss) and to serve a cached one.

Run: .venv/bin/python -m tests.interception.bench_leaf [N]. Not a test: prints timings.
"""

from __future__ import annotations

import statistics
import sys
import time

from supervisor.proxy.interception import SandboxCA


def _per_call_ms(fn: object, n: int) -> list[float]:
    assert callable(fn)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    t0 = time.perf_counter()
    ca = SandboxCA.generate(["example.com", "127.0.0.1"], cache_size=n + 1)
    print(f"CA generation: {(time.perf_counter() - t0) * 1000:.2f} ms")
    miss = _per_call_ms(lambda i: ca.server_context(f"h{i}.example.com"), n)
    hit = _per_call_ms(lambda i: ca.server_context(f"h{i}.example.com"), n)
    for label, xs in (("leaf + context (miss)", miss), ("cached context (hit)", hit)):
        xs.sort()
        print(
            f"{label}: median {statistics.median(xs):.3f} ms, "
            f"p95 {xs[int(len(xs) * 0.95)]:.3f} ms, max {xs[-1]:.3f} ms (n={n})"
        )


if __name__ == "__main__":
    main()
